"""Executor of StudentEvaluator: every model's holdout metrics with paired-bootstrap intervals in one
artifact, and the student's blessing."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow as tf
from tfx.dsl.components.base import base_executor
from tfx.types import artifact
from tfx.utils import path_utils

from components import uri_io
from components.splits import HOLDOUT, check_split_counts, read_split, split_batches
from trainer.l1_run import TRAINING_INFO
from trainer.metrics import bootstrap_gaps, evaluate
from trainer.predictions import decode_prediction
from trainer.readers import parse_video_examples
from trainer.student_run import REFIT

log = logging.getLogger(__name__)
STACK, STUDENT, L1_MEAN = "L2 stack", "EnsembleModel", "mean of L1 models"
# The kind of each row of the evaluation (`roles`), in report order.
L1, L1_MEAN_ROLE, STACK_ROLE = "L1", "L1 mean", "stack"
TOWER_SERVED, STUDENT_ROLE = "tower (served, refit)", "EnsembleModel"
CONFIDENCE = 0.95
_BATCH = 256


def tower_fold_mean_role(num_folds: int) -> str:
    return f"tower ({num_folds}-fold mean)"


def role_rank(role: str) -> int:
    """Report order of a row kind: L1, L1 mean, stack, tower (fold mean), tower (served), EnsembleModel."""
    if role.startswith("tower (") and role.endswith("-fold mean)"):
        return 3
    return {L1: 0, L1_MEAN_ROLE: 1, STACK_ROLE: 2, TOWER_SERVED: 4, STUDENT_ROLE: 5}.get(role, 6)


def is_student(role: str) -> bool:
    """Whether a row kind is a student model: a tower (fold mean or served) or the EnsembleModel."""
    return role.startswith("tower (") or role == STUDENT_ROLE


def served_name(tower: str) -> str:
    return f"{tower} (refit)"


class EvaluationError(ValueError):
    """Predictions that do not cover the holdout videos."""


def l1_key(model: int) -> str:
    return f"l1_predictions_{model}"


def tower_key(tower: int) -> str:
    return f"tower_predictions_{tower}"


def served_tower_key(tower: int) -> str:
    return f"served_tower_{tower}"


def _split_records(source: artifact.Artifact, split: str) -> Iterator[tf.Tensor]:
    for batch in split_batches(source, split, _BATCH):
        yield tf.constant(batch)


def split_labels(
    examples: artifact.Artifact, num_classes: int, split: str = HOLDOUT
) -> tuple[list[str], np.ndarray]:
    """(video ids, multi-hot labels [N, num_classes]; all 0 on an unlabelled split) of a split, which must
    hold every video of it the fold split recorded."""
    ids, labels = [], []
    for records in _split_records(examples, split):
        parsed = parse_video_examples(records, num_classes)
        ids += [video_id.decode() for video_id in parsed["id"].numpy()]
        labels.append(parsed["labels"].numpy())
    check_split_counts(examples, {split: len(ids)})
    if not ids:
        raise EvaluationError(f"{examples.uri}: the {split} split has no videos to evaluate on")
    return ids, np.concatenate(labels)


def _aligned(
    name: str, scores: dict[str, np.ndarray], ids: list[str], num_classes: int, split: str
) -> np.ndarray:
    missing = [video_id for video_id in ids if video_id not in scores]
    if missing or len(scores) != len(ids):
        raise EvaluationError(
            f"{name}: {split} predictions cover {len(scores)} videos, the {split} has {len(ids)} "
            f"(first missing: {missing[:3]})"
        )
    dense = np.stack([scores[video_id] for video_id in ids])
    if dense.shape[1] != num_classes:
        raise EvaluationError(f"{name}: {dense.shape[1]} class scores, expected {num_classes}")
    return dense


def prediction_scores(
    predictions: artifact.Artifact, ids: list[str], num_classes: int, split: str = HOLDOUT
) -> np.ndarray:
    """Scores [N, num_classes] of a split of an assembled Predictions artifact, in the order of `ids`."""
    decoded = (
        decode_prediction(record.numpy()) for batch in _split_records(predictions, split) for record in batch
    )
    scores = {video_id: values for video_id, _, values in decoded}
    return _aligned(predictions.get_string_custom_property("config_name"), scores, ids, num_classes, split)


def stack_scores(
    candidate_scores: artifact.Artifact, ids: list[str], num_classes: int, split: str = HOLDOUT
) -> np.ndarray:
    """Scores of the L2 stack on a split: its fold-averaged candidate probabilities, 0 for other classes."""
    rows = read_split(candidate_scores, split)
    index = {video_id: row for row, video_id in enumerate(ids)}
    scored = set(rows["video_id"])
    unknown = scored - set(index)
    if unknown:
        raise EvaluationError(f"{STACK}: {split} scores for unknown videos {sorted(unknown)[:3]}")
    if len(scored) != len(ids):  # every video has candidates: a video without rows was lost, not scored 0
        missing = [video_id for video_id in ids if video_id not in scored]
        raise EvaluationError(
            f"{STACK}: {split} scores cover {len(scored)} videos, the {split} has {len(ids)} "
            f"(first missing: {missing[:3]})"
        )
    dense = np.zeros((len(ids), num_classes), np.float32)
    dense[rows["video_id"].map(index).to_numpy(), rows["class_id"].to_numpy()] = rows["score"].to_numpy()
    return dense


def model_scores(
    model: artifact.Artifact,
    examples: artifact.Artifact,
    ids: list[str],
    num_classes: int,
    name: str = STUDENT,
    signature_name: str = "scores",
    split: str = HOLDOUT,
) -> np.ndarray:
    """Scores on a split of a SavedModel run on the raw records through a signature that returns every
    class's `scores` (the exported student's `scores`, a student tower's `serving_default`)."""
    signature = tf.saved_model.load(path_utils.serving_model_path(model.uri)).signatures[signature_name]
    scores = {}
    for records in _split_records(examples, split):
        outputs = signature(examples=records)
        for video_id, values in zip(outputs["video_id"].numpy(), outputs["scores"].numpy(), strict=True):
            scores[video_id.decode()] = values
    return _aligned(name, scores, ids, num_classes, split)


def served_tower_scores(
    tower: artifact.Artifact,
    examples: artifact.Artifact,
    ids: list[str],
    num_classes: int,
    split: str = HOLDOUT,
) -> tuple[str, np.ndarray]:
    """(row name, scores on a split) of a refit tower, as the export serves it: its own SavedModel."""
    info = uri_io.read_json(os.path.join(path_utils.serving_model_path(tower.uri), TRAINING_INFO))
    if info["fold"] != REFIT:
        raise EvaluationError(
            f"{tower.uri}: tower {info['config']} is the model of fold {info['fold']}, not refit"
        )
    name = served_name(info["config"])
    return name, model_scores(tower, examples, ids, num_classes, name, "serving_default", split)


def _interval(values: np.ndarray) -> list[float]:
    tail = 100 * (1 - CONFIDENCE) / 2
    return [float(bound) for bound in np.percentile(values, [tail, 100 - tail])]


def key_differences(
    holdout: dict[str, dict], roles: dict[str, str], gaps: dict[str, np.ndarray]
) -> dict[str, dict[str, Any]]:
    """The GAP differences the project claims, each with its paired-bootstrap interval: stack - best L1
    (best by holdout GAP), stack - mean of L1 models, EnsembleModel - stack and EnsembleModel / stack."""
    l1_models = [name for name, role in roles.items() if role == L1]
    pairs = []  # (first, operator, second)
    if l1_models:
        pairs += [(STACK, "-", max(l1_models, key=lambda name: holdout[name]["gap"])), (STACK, "-", L1_MEAN)]
    pairs += [(STUDENT, "-", STACK), (STUDENT, "/", STACK)]
    differences = {}
    for first, operator, second in pairs:
        if operator == "/":
            point = holdout[first]["gap"] / holdout[second]["gap"]
            resampled = gaps[first] / np.maximum(gaps[second], 1e-12)
        else:
            point, resampled = holdout[first]["gap"] - holdout[second]["gap"], gaps[first] - gaps[second]
        label = f"{first} {operator} " + (f"best L1 ({second})" if roles[second] == L1 else second)
        differences[label] = {"value": point, "interval": _interval(resampled), "models": [first, second]}
    return differences


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
        ids, labels = split_labels(examples, num_classes)
        scores: dict[str, np.ndarray] = {}
        roles: dict[str, str] = {}
        for m in range(exec_properties["num_l1_models"]):
            predictions = input_dict[l1_key(m)][0]
            name = predictions.get_string_custom_property("config_name")
            scores[name], roles[name] = prediction_scores(predictions, ids, num_classes), L1
        if roles:
            scores[L1_MEAN] = np.mean([scores[name] for name in roles], axis=0)
            roles[L1_MEAN] = L1_MEAN_ROLE
        scores[STACK] = stack_scores(input_dict["stack_scores"][0], ids, num_classes)
        roles[STACK] = STACK_ROLE
        for t in range(exec_properties["num_towers"]):
            predictions = input_dict[tower_key(t)][0]
            name = predictions.get_string_custom_property("config_name")
            scores[name] = prediction_scores(predictions, ids, num_classes)
            roles[name] = tower_fold_mean_role(predictions.get_int_custom_property("num_folds"))
        for t in range(exec_properties["num_served_towers"]):
            name, scores[name] = served_tower_scores(
                input_dict[served_tower_key(t)][0], examples, ids, num_classes
            )
            roles[name] = TOWER_SERVED
        scores[STUDENT], roles[STUDENT] = model_scores(model, examples, ids, num_classes), STUDENT_ROLE
        holdout = {name: evaluate(values, labels, k) for name, values in scores.items()}
        resamples, seed = exec_properties["bootstrap_resamples"], exec_properties["bootstrap_seed"]
        gaps = bootstrap_gaps(scores, labels, k, resamples, seed)
        for name, metrics in holdout.items():
            metrics["gap_interval"] = _interval(gaps[name])
        differences = key_differences(holdout, roles, gaps)
        blessed, reason = blessing_decision(
            holdout[STUDENT]["gap"],
            holdout[STACK]["gap"],
            exec_properties["gap_floor"],
            exec_properties["stack_fraction"],
        )
        log.info("student evaluation: %s; %s", "BLESSED" if blessed else "NOT BLESSED", reason)

        report = {
            "k": k,
            "split": HOLDOUT,
            "holdout_videos": len(ids),
            "holdout": holdout,
            "roles": roles,
            "differences": differences,
            "bootstrap": {"resamples": resamples, "seed": seed, "confidence": CONFIDENCE, "unit": "videos"},
        }
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
