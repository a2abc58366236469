"""Executor of StudentExport: the refit towers and the head, loaded from their Keras files, as one graph
behind the Transform graph."""

from __future__ import annotations

import json
import os
from typing import Any

import keras
import tensorflow as tf
from tfx.dsl.components.base import base_executor
from tfx.types import artifact
from tfx.utils import path_utils

from components.head_examples.executor import towers_key
from components.splits import directory_bytes
from trainer.l1_run import TRAINING_INFO
from trainer.student_run import KERAS_MODEL, REFIT
from trainer.students import build_serving_ensemble, export_student
from trainer.transform import transform_layer


class StudentExportError(ValueError):
    """Towers and head that do not fit together."""


def load_trained(model: artifact.Artifact) -> tuple[keras.Model, dict[str, Any]]:
    """(the Keras model a student run_fn saved, its training info)."""
    path = path_utils.serving_model_path(model.uri)
    with tf.io.gfile.GFile(os.path.join(path, TRAINING_INFO)) as handle:
        info = json.load(handle)
    return keras.saving.load_model(os.path.join(path, KERAS_MODEL), compile=False), info


class Executor(base_executor.BaseExecutor):
    def Do(  # noqa: N802 (TFX API)
        self,
        input_dict: dict[str, list[artifact.Artifact]],
        output_dict: dict[str, list[artifact.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        towers, tower_infos = zip(
            *(load_trained(input_dict[towers_key(t)][0]) for t in range(exec_properties["num_towers"])),
            strict=True,
        )
        head, head_info = load_trained(input_dict["head"][0])
        tower_names = [info["config"] for info in tower_infos]
        not_refit = [info["config"] for info in tower_infos if info["fold"] != REFIT]
        if not_refit:
            raise StudentExportError(f"towers {not_refit} are fold models; serving needs the refit towers")
        if head_info["tower_names"] != tower_names:
            raise StudentExportError(
                f"the head was trained on towers {head_info['tower_names']}, not on {tower_names}"
            )
        num_classes = head_info["num_classes"]
        model = build_serving_ensemble(list(towers), head)
        output = output_dict["model"][0]
        serving_dir = path_utils.serving_model_dir(output.uri)
        layer = transform_layer(input_dict["transform_graph"][0].uri)
        export_student(model, serving_dir, num_classes, layer, exec_properties["top_k"])
        output.set_int_custom_property("parameter_count", model.count_params())
        output.set_int_custom_property("size_bytes", directory_bytes(serving_dir))
        output.set_json_value_custom_property("tower_names", tower_names)
        output.set_int_custom_property("num_classes", num_classes)
