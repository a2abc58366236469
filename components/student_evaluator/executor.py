"""Executor of StudentEvaluator: every model's holdout metrics in one artifact, and the student's blessing."""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import tensorflow as tf
from tfx.dsl.components.base import base_executor
from tfx.types import artifact
from tfx.utils import path_utils

from components import uri_io
from components.l2_lightgbm.executor import read_split
from components.splits import HOLDOUT, split_files
from trainer.metrics import evaluate
from trainer.predictions import decode_prediction
from trainer.readers import parse_video_examples, read_records

log = logging.getLogger(__name__)
STACK, STUDENT = "L2 stack", "EnsembleModel"
_BATCH = 256


class EvaluationError(ValueError):
    """Predictions that do not cover the holdout videos."""


def l1_key(model: int) -> str:
    return f"l1_predictions_{model}"


def tower_key(tower: int) -> str:
    return f"tower_predictions_{tower}"


def _holdout_records(examples: artifact.Artifact) -> tf.data.Dataset:
    return read_records(tf.io.gfile.glob(split_files(examples, HOLDOUT))).batch(_BATCH)


def holdout_labels(examples: artifact.Artifact, num_classes: int) -> tuple[list[str], np.ndarray]:
    """(video ids, multi-hot labels [N, num_classes]) of the holdout split."""
    ids, labels = [], []
    for records in _holdout_records(examples):
        parsed = parse_video_examples(records, num_classes)
        ids += [video_id.decode() for video_id in parsed["id"].numpy()]
        labels.append(parsed["labels"].numpy())
    if not ids:
        raise EvaluationError(f"{examples.uri}: the holdout split has no videos to evaluate on")
    return ids, np.concatenate(labels)


def _aligned(name: str, scores: dict[str, np.ndarray], ids: list[str], num_classes: int) -> np.ndarray:
    missing = [video_id for video_id in ids if video_id not in scores]
    if missing or len(scores) != len(ids):
        raise EvaluationError(
            f"{name}: holdout predictions cover {len(scores)} videos, the holdout has {len(ids)} "
            f"(first missing: {missing[:3]})"
        )
    dense = np.stack([scores[video_id] for video_id in ids])
    if dense.shape[1] != num_classes:
        raise EvaluationError(f"{name}: {dense.shape[1]} class scores, expected {num_classes}")
    return dense


def prediction_scores(predictions: artifact.Artifact, ids: list[str], num_classes: int) -> np.ndarray:
    """Holdout scores [N, num_classes] of an assembled Predictions artifact, in the order of `ids`."""
    files = tf.io.gfile.glob(split_files(predictions, HOLDOUT))
    decoded = (decode_prediction(r.numpy()) for r in read_records(files))
    scores = {video_id: values for video_id, _, values in decoded}
    return _aligned(predictions.get_string_custom_property("config_name"), scores, ids, num_classes)


def stack_scores(candidate_scores: artifact.Artifact, ids: list[str], num_classes: int) -> np.ndarray:
    """Holdout scores of the L2 stack: its fold-averaged candidate probabilities, 0 for other classes."""
    rows = read_split(candidate_scores, HOLDOUT)
    index = {video_id: row for row, video_id in enumerate(ids)}
    unknown = set(rows["video_id"]) - set(index)
    if unknown:
        raise EvaluationError(f"{STACK}: holdout scores for unknown videos {sorted(unknown)[:3]}")
    dense = np.zeros((len(ids), num_classes), np.float32)
    dense[rows["video_id"].map(index).to_numpy(), rows["class_id"].to_numpy()] = rows["score"].to_numpy()
    return dense


def model_scores(model: artifact.Artifact, examples: artifact.Artifact, ids: list[str], num_classes: int):
    """Holdout scores of the exported student, through its `scores` signature on the raw records."""
    signature = tf.saved_model.load(path_utils.serving_model_path(model.uri)).signatures["scores"]
    scores = {}
    for records in _holdout_records(examples):
        outputs = signature(examples=records)
        for video_id, values in zip(outputs["video_id"].numpy(), outputs["scores"].numpy(), strict=True):
            scores[video_id.decode()] = values
    return _aligned(STUDENT, scores, ids, num_classes)


def blessing_decision(
    student_gap: float, stack_gap: float, gap_floor: float, stack_fraction: float
) -> tuple[bool, str]:
    """(blessed, reason): the student's GAP must reach the floor and `stack_fraction` of the stack's GAP."""
    if student_gap < gap_floor:
        return False, f"{STUDENT} GAP {student_gap:.4f} < floor {gap_floor:.4f}"
    if student_gap < stack_fraction * stack_gap:
        return False, (
            f"{STUDENT} GAP {student_gap:.4f} < {stack_fraction:.2f} x stack GAP {stack_gap:.4f} "
            f"= {stack_fraction * stack_gap:.4f}"
        )
    return True, (
        f"{STUDENT} GAP {student_gap:.4f} >= floor {gap_floor:.4f} and >= {stack_fraction:.2f} x stack GAP "
        f"{stack_gap:.4f}"
    )


class Executor(base_executor.BaseExecutor):
    def Do(  # noqa: N802 (TFX API)
        self,
        input_dict: dict[str, list[artifact.Artifact]],
        output_dict: dict[str, list[artifact.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        num_classes, k = exec_properties["num_classes"], exec_properties["gap_k"]
        examples, model = input_dict["examples"][0], input_dict["model"][0]
        ids, labels = holdout_labels(examples, num_classes)
        holdout: dict[str, dict[str, float]] = {}
        roles: dict[str, str] = {}
        for key, role in ((l1_key, "l1"), (tower_key, "tower")):
            count = exec_properties["num_l1_models" if role == "l1" else "num_towers"]
            for m in range(count):
                predictions = input_dict[key(m)][0]
                name = predictions.get_string_custom_property("config_name")
                holdout[name] = evaluate(prediction_scores(predictions, ids, num_classes), labels, k)
                roles[name] = role
        holdout[STACK] = evaluate(stack_scores(input_dict["stack_scores"][0], ids, num_classes), labels, k)
        holdout[STUDENT] = evaluate(model_scores(model, examples, ids, num_classes), labels, k)
        roles.update({STACK: "stack", STUDENT: "student"})
        blessed, reason = blessing_decision(
            holdout[STUDENT]["gap"],
            holdout[STACK]["gap"],
            exec_properties["gap_floor"],
            exec_properties["stack_fraction"],
        )
        log.info("student evaluation: %s; %s", "BLESSED" if blessed else "NOT BLESSED", reason)

        report = {"k": k, "holdout_videos": len(ids), "holdout": holdout, "roles": roles}
        report.update({"blessed": int(blessed), "reason": reason, "model_uri": model.uri})
        evaluation = output_dict["evaluation"][0]
        uri_io.write_json(os.path.join(evaluation.uri, "metrics.json"), report)
        for key, value in report.items():
            evaluation.set_json_value_custom_property(key, value)
        blessing = output_dict["blessing"][0]
        blessing.set_int_custom_property("blessed", int(blessed))
        blessing.set_string_custom_property("reason", reason)
        blessing.set_string_custom_property("current_model", model.uri)
        blessing.set_int_custom_property("current_model_id", model.id)
        uri_io.write_text(os.path.join(blessing.uri, "BLESSED" if blessed else "NOT_BLESSED"), reason + "\n")
