"""Executor of VideoSchema: writes the video-level records' schema (the readers' feature spec)."""

from __future__ import annotations

import os
from typing import Any

from tfx.dsl.components.base import base_executor
from tfx.types import artifact
from tfx.utils import io_utils

from trainer.transform import video_schema

SCHEMA_FILE = "schema.pbtxt"  # the name TFX's schema readers look for


class Executor(base_executor.BaseExecutor):
    def Do(  # noqa: N802 (TFX API)
        self,
        input_dict: dict[str, list[artifact.Artifact]],
        output_dict: dict[str, list[artifact.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        io_utils.write_pbtxt_file(os.path.join(output_dict["schema"][0].uri, SCHEMA_FILE), video_schema())
