"""Kaggle submissions: records through a SavedModel into `VideoId,LabelConfidencePairs`, and their GAP."""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from trainer.metrics import gap_from_candidates
from trainer.records import InputDataError

HEADER = ["VideoId", "LabelConfidencePairs"]
TRUTH_HEADER = ["VideoId", "Labels"]
TOP_K = 20
_BATCH = 512


def _top_k(outputs: dict[str, tf.Tensor], k: int) -> tuple[np.ndarray, np.ndarray]:
    """(class indexes, scores) from a serving signature: top-k outputs, or full `scores` cut to top-k."""
    if "class_indexes" in outputs:
        return outputs["class_indexes"].numpy()[:, :k], outputs["predictions"].numpy()[:, :k]
    scores, classes = tf.math.top_k(outputs["scores"], k=min(k, outputs["scores"].shape[-1]))
    return classes.numpy(), scores.numpy()


def predict_rows(
    model_dir: str, file_pattern: str, k: int = TOP_K
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(video id, top-k classes, their scores) for every record of the files, batch by batch."""
    files = sorted(tf.io.gfile.glob(file_pattern))
    if not files:
        raise FileNotFoundError(f"no files match {file_pattern}")
    serve = tf.saved_model.load(model_dir).signatures["serving_default"]
    records = tf.data.TFRecordDataset(files).batch(_BATCH).prefetch(2)
    try:
        for batch in records:
            outputs = serve(examples=batch)
            classes, scores = _top_k(outputs, k)
            for video_id, row_classes, row_scores in zip(
                outputs["video_id"].numpy(), classes, scores, strict=True
            ):
                yield video_id.decode(), row_classes, row_scores
    except tf.errors.DataLossError as error:
        raise InputDataError(
            f"{file_pattern}: corrupted or truncated TFRecord: {error.message.splitlines()[0]}"
        ) from None
    except tf.errors.InvalidArgumentError as error:
        raise InputDataError(
            f"{file_pattern}: records do not match the model's input: {error.message.splitlines()[0]}"
        ) from None


def write_submission(model_dir: str, file_pattern: str, out: str | Path, k: int = TOP_K) -> int:
    """Write the Kaggle CSV (header, then `id` and k `class score` pairs per row); returns the row count."""
    rows = 0
    with open(out, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for video_id, classes, scores in tqdm(
            predict_rows(model_dir, file_pattern, k), unit=" videos", disable=not sys.stderr.isatty()
        ):
            writer.writerow(
                [video_id, " ".join(f"{c} {s:.6f}" for c, s in zip(classes, scores, strict=True))]
            )
            rows += 1
    return rows


def read_truth(path: str | Path) -> dict[str, list[int]]:
    """VideoId -> true class ids, from a `VideoId,Labels` CSV (labels space-separated)."""
    truth = {}
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        if next(reader, None) != TRUTH_HEADER:
            raise InputDataError(f"{path}: line 1: expected header {','.join(TRUTH_HEADER)}")
        for line, row in enumerate(reader, start=2):
            try:
                video_id, labels = row
                truth[video_id] = [int(label) for label in labels.split()]
            except ValueError:
                raise InputDataError(f"{path}: line {line}: expected VideoId,Labels, got {row!r}") from None
    return truth


def score_submission(submission: str | Path, truth_path: str | Path, k: int = TOP_K) -> float:
    """GAP@k of a submission CSV against the ground truth; malformed rows and unknown ids are errors."""
    truth = read_truth(truth_path)
    videos, classes, scores, seen = [], [], [], set()
    with open(submission, newline="") as handle:
        reader = csv.reader(handle)
        if next(reader, None) != HEADER:
            raise InputDataError(f"{submission}: line 1: expected header {','.join(HEADER)}")
        for line, row in enumerate(reader, start=2):
            if len(row) != 2:
                raise InputDataError(f"{submission}: line {line}: expected 2 columns, got {len(row)}")
            video_id, pairs = row
            if video_id not in truth:
                raise InputDataError(f"{submission}: line {line}: unknown video id '{video_id}'")
            if video_id in seen:
                raise InputDataError(f"{submission}: line {line}: video id '{video_id}' appears twice")
            seen.add(video_id)
            tokens = pairs.split()
            try:
                pair_classes = [int(c) for c in tokens[0::2]]
                pair_scores = [float(s) for s in tokens[1::2]]
            except ValueError:
                raise InputDataError(f"{submission}: line {line}: pairs must be 'class score'") from None
            if len(tokens) % 2 or len(set(pair_classes)) != len(pair_classes):
                raise InputDataError(f"{submission}: line {line}: pairs must be distinct 'class score' pairs")
            videos += [video_id] * len(pair_classes)
            classes += pair_classes
            scores += pair_scores
    relevant = [c in truth[v] for v, c in zip(videos, classes, strict=True)]
    num_true_labels = sum(len(labels) for labels in truth.values())
    return gap_from_candidates(
        np.array(videos), np.array(classes), np.array(scores), np.array(relevant), num_true_labels, k
    )
