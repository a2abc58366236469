"""Executor of StudentEvaluator: every model's holdout metrics with paired-bootstrap intervals in one
artifact, and the student's blessing."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow.compute as pc
import tensorflow as tf
from tfx.dsl.components.base import base_executor
from tfx.types import artifact, standard_artifact_utils
from tfx.utils import path_utils

from components import uri_io
from components.splits import HOLDOUT, check_split_counts, split_batches
from trainer.l1_run import TRAINING_INFO
from trainer.metrics import TopRows, bootstrap_gaps_of_rows, concatenate, evaluate_rows, top_rows
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


@dataclass
class SplitVideos:
    """A split's videos, in the order of its files, and each one's true classes (none on an unlabelled
    split): what every model's scores are aligned to."""

    split: str
    ids: list[str]
    labels: list[np.ndarray]  # int class ids per video
    num_classes: int

    def __post_init__(self) -> None:
        self.index = {video_id: position for position, video_id in enumerate(self.ids)}

    def multi_hot(self, positions: np.ndarray) -> np.ndarray:
        """Labels [len(positions), num_classes] of the videos at `positions`."""
        dense = np.zeros((len(positions), self.num_classes), np.float32)
        for row, position in enumerate(positions):
            dense[row, self.labels[position]] = 1
        return dense


# Batches of one model's scores on a split: (video ids, scores [batch, num_classes]).
ScoreBatches = Iterable[tuple[Sequence[str], np.ndarray]]


def split_labels(examples: artifact.Artifact, num_classes: int, split: str = HOLDOUT) -> SplitVideos:
    """The videos of a split with their labels; the split must hold every video the fold split recorded."""
    ids, labels = [], []
    for records in split_batches(examples, split, _BATCH):
        parsed = parse_video_examples(tf.constant(records), num_classes)
        ids += [video_id.decode() for video_id in parsed["id"].numpy()]
        labels += [np.flatnonzero(row) for row in parsed["labels"].numpy()]
    check_split_counts(examples, {split: len(ids)})
    if not ids:
        raise EvaluationError(f"{examples.uri}: the {split} split has no videos to evaluate on")
    return SplitVideos(split, ids, labels, num_classes)


def scored_rows(
    name: str, videos: SplitVideos, batches: ScoreBatches, k: int, total: np.ndarray | None = None
) -> TopRows:
    """A model's `TopRows` on the split, in the split's video order, read batch by batch: memory follows
    the batch and k, not the split's videos x classes. Every video must be scored exactly once. `total`
    ([videos, num_classes], e.g. a memory map) gets the scores added, for a mean over models."""
    parts, order, seen, unknown = [], [], np.zeros(len(videos.ids), bool), []
    for video_ids, scores in batches:
        if scores.shape[1] != videos.num_classes:
            raise EvaluationError(f"{name}: {scores.shape[1]} class scores, expected {videos.num_classes}")
        positions = np.array([videos.index.get(video_id, -1) for video_id in video_ids], np.int64)
        unknown += [video_id for video_id, p in zip(video_ids, positions, strict=True) if p < 0]
        known = positions[positions >= 0]
        if seen[known].any() or np.unique(known).size != known.size:
            again = next(p for i, p in enumerate(known) if seen[p] or p in known[:i])
            raise EvaluationError(f"{name}: video '{videos.ids[again]}' is scored more than once")
        seen[known] = True
        parts.append(top_rows(scores[positions >= 0], videos.multi_hot(known), k))
        order.append(known)
        if total is not None:
            total[known] += scores[positions >= 0]
    if unknown or not seen.all():
        missing = [video_id for video_id, scored in zip(videos.ids, seen, strict=True) if not scored]
        extra = f", first unknown: {unknown[:3]}" if unknown else ""
        raise EvaluationError(
            f"{name}: {videos.split} scores cover {int(seen.sum()) + len(set(unknown))} videos, the "
            f"{videos.split} has {len(videos.ids)} (first missing: {missing[:3]}{extra})"
        )
    return concatenate(parts).take(np.argsort(np.concatenate(order), kind="stable"))


def prediction_batches(predictions: artifact.Artifact, split: str = HOLDOUT) -> ScoreBatches:
    """The scores of a split of an assembled Predictions artifact, batch by batch."""
    for records in split_batches(predictions, split, _BATCH):
        decoded = [decode_prediction(record) for record in records]
        sizes = {scores.size for _, _, scores in decoded}
        if len(sizes) > 1:
            raise EvaluationError(f"{predictions.uri}: {split} predictions of {sorted(sizes)} classes")
        yield [video_id for video_id, _, _ in decoded], np.stack([scores for _, _, scores in decoded])


def array_batches(ids: list[str], scores: np.ndarray, divisor: float = 1.0) -> ScoreBatches:
    """Batches of the rows of an array [videos, classes] (divided by `divisor`)."""
    for start in range(0, len(ids), _BATCH):
        yield ids[start : start + _BATCH], np.asarray(scores[start : start + _BATCH]) / divisor


def stack_batches(candidate_scores: artifact.Artifact, videos: SplitVideos) -> ScoreBatches:
    """Scores of the L2 stack on a split, batch by batch: its fold-averaged candidate probabilities, 0 for
    other classes. Memory: the split's candidate rows (a few dozen a video), never videos x classes."""
    rows = uri_io.read_parquet_dir(standard_artifact_utils.get_split_uri([candidate_scores], videos.split))
    encoded = pc.dictionary_encode(rows.column("video_id")).combine_chunks()
    codes = encoded.indices.to_numpy()
    scored_ids = encoded.dictionary.to_pylist()
    order = np.argsort(codes, kind="stable")
    codes, class_ids = codes[order], rows.column("class_id").to_numpy()[order]
    scores = rows.column("score").to_numpy()[order].astype(np.float32)
    starts = np.searchsorted(codes, np.arange(len(scored_ids) + 1))
    for first in range(0, len(scored_ids), _BATCH):
        last = min(first + _BATCH, len(scored_ids))
        dense = np.zeros((last - first, videos.num_classes), np.float32)
        span = slice(starts[first], starts[last])
        dense[codes[span] - first, class_ids[span]] = scores[span]
        yield scored_ids[first:last], dense


def model_batches(
    model: artifact.Artifact,
    examples: artifact.Artifact,
    signature_name: str = "scores",
    split: str = HOLDOUT,
) -> ScoreBatches:
    """Scores on a split of a SavedModel run on the raw records through a signature that returns every
    class's `scores` (the exported student's `scores`, a student tower's `serving_default`)."""
    signature = tf.saved_model.load(path_utils.serving_model_path(model.uri)).signatures[signature_name]
    for records in split_batches(examples, split, _BATCH):
        outputs = signature(examples=tf.constant(records))
        yield [video_id.decode() for video_id in outputs["video_id"].numpy()], outputs["scores"].numpy()


def served_tower(tower: artifact.Artifact) -> str:
    """The row name of a refit tower, as the export serves it (its own SavedModel); fails for a fold's."""
    info = uri_io.read_json(os.path.join(path_utils.serving_model_path(tower.uri), TRAINING_INFO))
    if info["fold"] != REFIT:
        raise EvaluationError(
            f"{tower.uri}: tower {info['config']} is the model of fold {info['fold']}, not refit"
        )
    return served_name(info["config"])


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
        videos = split_labels(examples, num_classes)
        rows: dict[str, TopRows] = {}
        roles: dict[str, str] = {}
        num_l1 = exec_properties["num_l1_models"]
        with tempfile.TemporaryDirectory() as scratch:  # the L1 models' score sum, on disk, not in memory
            total = np.lib.format.open_memmap(
                os.path.join(scratch, "l1_sum.npy"), "w+", np.float32, (len(videos.ids), num_classes)
            )
            for m in range(num_l1):
                predictions = input_dict[l1_key(m)][0]
                name = predictions.get_string_custom_property("config_name")
                rows[name] = scored_rows(name, videos, prediction_batches(predictions), k, total)
                roles[name] = L1
            if num_l1:
                rows[L1_MEAN] = scored_rows(L1_MEAN, videos, array_batches(videos.ids, total, num_l1), k)
                roles[L1_MEAN] = L1_MEAN_ROLE
            del total
        rows[STACK] = scored_rows(STACK, videos, stack_batches(input_dict["stack_scores"][0], videos), k)
        roles[STACK] = STACK_ROLE
        for t in range(exec_properties["num_towers"]):
            predictions = input_dict[tower_key(t)][0]
            name = predictions.get_string_custom_property("config_name")
            rows[name] = scored_rows(name, videos, prediction_batches(predictions), k)
            roles[name] = tower_fold_mean_role(predictions.get_int_custom_property("num_folds"))
        for t in range(exec_properties["num_served_towers"]):
            tower = input_dict[served_tower_key(t)][0]
            name = served_tower(tower)
            rows[name] = scored_rows(name, videos, model_batches(tower, examples, "serving_default"), k)
            roles[name] = TOWER_SERVED
        rows[STUDENT] = scored_rows(STUDENT, videos, model_batches(model, examples), k)
        roles[STUDENT] = STUDENT_ROLE
        holdout = {name: evaluate_rows(model_rows) for name, model_rows in rows.items()}
        resamples, seed = exec_properties["bootstrap_resamples"], exec_properties["bootstrap_seed"]
        gaps = bootstrap_gaps_of_rows(rows, resamples, seed)
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
            "holdout_videos": len(videos.ids),
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
