"""Kaggle submissions: records through a SavedModel into `VideoId,LabelConfidencePairs`, and their GAP."""

from __future__ import annotations

import csv
import math
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from trainer.file_errors import FILE_LAYER_ERRORS, file_error_message
from trainer.metrics import gap_from_candidates
from trainer.readers import read_records
from trainer.records import InputDataError, utf8_video_id

HEADER = ["VideoId", "LabelConfidencePairs"]
TRUTH_HEADER = ["VideoId", "Labels"]
TOP_K = 20
BYTE_ORDER_MARK = "\ufeff"  # what a UTF-8 BOM decodes to (Excel writes one)
_BATCH = 512


def _top_k(outputs: dict[str, tf.Tensor], k: int) -> tuple[np.ndarray, np.ndarray]:
    """(class indexes, scores) from a serving signature: top-k outputs, or full `scores` cut to top-k."""
    if "class_indexes" in outputs:
        return outputs["class_indexes"].numpy()[:, :k], outputs["predictions"].numpy()[:, :k]
    scores, classes = tf.math.top_k(outputs["scores"], k=min(k, outputs["scores"].shape[-1]))
    return classes.numpy(), scores.numpy()


def _serving_signature(model_dir: str):
    """The `serving_default` function of a SavedModel (missing directories raise OSError, a user error)."""
    signature = tf.saved_model.load(model_dir).signatures.get("serving_default")
    if signature is None:
        raise InputDataError(f"{model_dir}: the SavedModel has no serving_default signature")
    return signature


def _predict_file(serve, path: str, k: int) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Rows of one TFRecord file; errors name the file (a file without records is one)."""
    rows = 0
    try:
        for batch in read_records([path]).batch(_BATCH).prefetch(2):
            outputs = serve(examples=batch)
            classes, scores = _top_k(outputs, k)
            for video_id, row_classes, row_scores in zip(
                outputs["video_id"].numpy(), classes, scores, strict=True
            ):
                try:
                    text_id = utf8_video_id(video_id)
                except InputDataError as error:
                    raise InputDataError(f"{path}: record {rows}: {error}") from None
                yield text_id, row_classes, row_scores
                rows += 1
    except tf.errors.DataLossError as error:
        raise InputDataError(
            f"{path}: corrupted or truncated TFRecord after record {rows}: {file_error_message(error)}"
        ) from None
    except tf.errors.InvalidArgumentError as error:
        raise InputDataError(
            f"{path}: records do not match the model's input: {error.message.splitlines()[0]}"
        ) from None
    except FILE_LAYER_ERRORS as error:  # reading, not writing the submission
        raise OSError(file_error_message(error)) from None
    if rows == 0:
        raise InputDataError(f"{path}: file holds no records")


def predict_rows(
    model_dir: str, file_pattern: str, k: int = TOP_K
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(video id, top-k classes, their scores) for every record of the files, file by file, batch by batch."""
    files = sorted(tf.io.gfile.glob(file_pattern))
    if not files:
        raise FileNotFoundError(f"no files match {file_pattern}")
    serve = _serving_signature(model_dir)
    for path in files:
        yield from _predict_file(serve, path, k)


def write_submission(model_dir: str, file_pattern: str, out: str | Path, k: int = TOP_K) -> int:
    """Write the Kaggle CSV (header, then `id` and k `class score` pairs per row); returns the row count.

    The CSV is written under a temporary name and renamed at the end: a failed run leaves no file at `out`.
    """
    rows = 0
    partial = f"{out}.partial"
    try:
        with tf.io.gfile.GFile(partial, "w") as handle:
            writer = csv.writer(handle)
            writer.writerow(HEADER)
            for video_id, classes, scores in tqdm(
                predict_rows(model_dir, file_pattern, k), unit=" videos", disable=not sys.stderr.isatty()
            ):
                writer.writerow(
                    [video_id, " ".join(f"{c} {s:.6f}" for c, s in zip(classes, scores, strict=True))]
                )
                rows += 1
        tf.io.gfile.rename(partial, str(out), overwrite=True)
    except FILE_LAYER_ERRORS as error:
        raise OSError(f"{out}: cannot write the submission: {file_error_message(error)}") from None
    finally:
        if tf.io.gfile.exists(partial):
            tf.io.gfile.remove(partial)
    return rows


def _csv_rows(path: str | Path, header: list[str]) -> Iterator[tuple[int, list[str]]]:
    """(line number, row) of every row after the expected header (a UTF-8 byte order mark before it is
    allowed); a file that is not CSV text, or holds no row after the header, is an error."""
    if not tf.io.gfile.exists(str(path)):
        raise FileNotFoundError(f"{path}: no such file")
    with tf.io.gfile.GFile(str(path)) as handle:
        reader = csv.reader(handle)
        try:
            first = next(reader, None)
            if first:
                first[0] = first[0].removeprefix(BYTE_ORDER_MARK)
            if first != header:
                raise InputDataError(f"{path}: line 1: expected header {','.join(header)}")
            rows = 0
            for row in reader:
                yield reader.line_num, row
                rows += 1
            if rows == 0:
                raise InputDataError(f"{path}: no rows after the header")
        except UnicodeDecodeError as error:
            raise InputDataError(f"{path}: not UTF-8 text ({error.reason})") from None
        except csv.Error as error:
            raise InputDataError(f"{path}: line {reader.line_num + 1}: {error}") from None


def read_truth(path: str | Path) -> dict[str, list[int]]:
    """VideoId -> true class ids, from a `VideoId,Labels` CSV (labels space-separated)."""
    truth, lines = {}, {}
    for line, row in _csv_rows(path, TRUTH_HEADER):
        try:
            video_id, labels = row
            truth[video_id] = [int(label) for label in labels.split()]
        except ValueError:
            raise InputDataError(f"{path}: line {line}: expected VideoId,Labels, got {row!r}") from None
        if video_id in lines:
            raise InputDataError(f"{path}: video id '{video_id}' on lines {lines[video_id]} and {line}")
        lines[video_id] = line
    return truth


def score_submission(submission: str | Path, truth_path: str | Path, k: int = TOP_K) -> float:
    """GAP@k of a submission CSV against the ground truth; malformed rows and unknown ids are errors."""
    truth = read_truth(truth_path)
    videos, classes, scores, seen = [], [], [], set()
    for line, row in _csv_rows(submission, HEADER):
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
        if not all(math.isfinite(score) for score in pair_scores):
            raise InputDataError(
                f"{submission}: line {line}: confidences must be finite numbers, got {pairs!r}"
            )
        videos += [video_id] * len(pair_classes)
        classes += pair_classes
        scores += pair_scores
    relevant = [c in truth[v] for v, c in zip(videos, classes, strict=True)]
    num_true_labels = sum(len(labels) for labels in truth.values())
    return gap_from_candidates(
        np.array(videos), np.array(classes), np.array(scores), np.array(relevant), num_true_labels, k
    )
