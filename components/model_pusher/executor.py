"""Executor of SizeLimitedPusher: TFX's filesystem push, refused when the model is over the size limit."""

from __future__ import annotations

import json
from typing import Any

from tfx.components.pusher import executor as pusher_executor
from tfx.types import artifact

from components.splits import directory_bytes

MAX_MODEL_BYTES = "max_model_bytes"


class ModelTooLargeError(ValueError):
    """A model whose files on disk exceed the push size limit."""


def max_model_bytes(exec_properties: dict[str, Any]) -> int:
    custom_config = exec_properties.get("custom_config") or {}
    if isinstance(custom_config, str):
        custom_config = json.loads(custom_config)
    return int(custom_config[MAX_MODEL_BYTES])


class Executor(pusher_executor.Executor):
    def Do(  # noqa: N802 (TFX API)
        self,
        input_dict: dict[str, list[artifact.Artifact]],
        output_dict: dict[str, list[artifact.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        if self.CheckBlessing(input_dict):
            model_path, limit = self.GetModelPath(input_dict), max_model_bytes(exec_properties)
            size = directory_bytes(model_path)
            if size > limit:
                raise ModelTooLargeError(
                    f"{model_path}: the model is {size:,} bytes on disk, over the push limit of {limit:,} "
                    "bytes; nothing was pushed"
                )
        super().Do(input_dict, output_dict, exec_properties)
