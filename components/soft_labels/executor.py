"""Executor of SoftLabels: Parquet OOF scores -> per-video soft-label index, and the student's examples (the
fold-split video records with their soft labels added; holdout and test copied unchanged)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import numpy as np
import tensorflow as tf
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_beam_executor
from tfx.types import artifact, standard_artifact_utils

from components.fold_split.executor import fold_names
from components.splits import (
    COUNTS_DIR,
    HOLDOUT,
    OUT_OF_FOLD,
    SPLIT_COUNTS,
    TEST,
    ReadTFRecords,
    check_split_counts,
    collect_counts,
    count_splits,
    split_files,
    write_split,
    write_splits,
)
from components.uri_io import read_parquet
from trainer.predictions import AVERAGED
from trainer.records import video_id_of
from trainer.soft_labels import encode_soft_labels, with_soft_labels

SPLIT = "train"


class SoftLabelError(ValueError):
    """Soft labels that do not cover the training videos exactly."""


def _soft_labels(video_id: str, grouped: dict[str, list]) -> tuple[int, bytes, bytes]:
    """(fold index, index record, student record) of one video; fails unless it has exactly one fold record
    and at least one distinct candidate score, every one scored by the stacker of the video's own fold."""
    in_folds, rows = list(grouped["fold_video"]), list(grouped["rows"])
    if not in_folds:
        raise SoftLabelError(f"soft labels for video '{video_id}' which is in no fold split")
    if not rows:
        raise SoftLabelError(f"video '{video_id}' of the fold splits has no L2 out-of-fold scores")
    if len(in_folds) != 1:
        raise SoftLabelError(f"video '{video_id}' appears {len(in_folds)} times in the fold splits")
    fold, record = in_folds[0]
    scored_by = sorted({row_fold for _, _, row_fold in rows})
    if scored_by != [fold]:
        raise SoftLabelError(
            f"video '{video_id}' of fold_{fold} was scored by the stacker of folds {scored_by} "
            f"({AVERAGED} = the fold average), not out of fold"
        )
    rows.sort(key=lambda row: row[0])
    class_ids = np.array([class_id for class_id, _, _ in rows], np.int64)
    if np.unique(class_ids).size != class_ids.size:
        raise SoftLabelError(f"video '{video_id}' has repeated candidate classes")
    scores = np.array([score for _, score, _ in rows], np.float32)
    return fold, encode_soft_labels(video_id, class_ids, scores), with_soft_labels(record, class_ids, scores)


def _keyed_rows(path: str) -> Iterator[tuple[str, tuple[int, float, int]]]:
    """(video id, (class id, score, scored_by)) of every row of a Parquet file of L2 scores."""
    names = ["video_id", "class_id", "score", "scored_by"]
    columns = read_parquet(path, names).to_pydict()
    for video_id, class_id, score, scored_by in zip(*(columns[name] for name in names), strict=True):
        yield video_id, (int(class_id), float(score), int(scored_by))


class Executor(base_beam_executor.BaseBeamExecutor):
    def Do(  # noqa: N802 (TFX API)
        self,
        input_dict: dict[str, list[artifact.Artifact]],
        output_dict: dict[str, list[artifact.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        scores, examples = input_dict["scores"][0], input_dict["examples"][0]
        index, student = output_dict["soft_labels"][0], output_dict["student_examples"][0]
        num_folds = len(scores.get_json_value_custom_property("fold_models"))
        folds = fold_names(num_folds)
        available = standard_artifact_utils.decode_split_names(examples.split_names)
        passed_through = [split for split in (HOLDOUT, TEST) if split in available]
        counts = os.path.join(student.uri, COUNTS_DIR)
        with self._make_beam_pipeline() as pipeline:
            read = {
                split: pipeline | f"ReadExamples[{split}]" >> ReadTFRecords(split_files(examples, split))
                for split in [*folds, *passed_through]
            }
            fold_records = [
                read[split]
                | f"Key[{split}]"
                >> beam.Map(lambda record, fold: (video_id_of(record, "video"), (fold, record)), fold)
                for fold, split in enumerate(folds)
            ]
            rows = (
                pipeline
                | "ScoreFiles" >> beam.Create(sorted(tf.io.gfile.glob(split_files(scores, OUT_OF_FOLD))))
                | "ReadScores" >> beam.FlatMap(_keyed_rows)
            )
            labelled = (
                {"fold_video": fold_records | "FlattenFolds" >> beam.Flatten(), "rows": rows}
                | "Join" >> beam.CoGroupByKey()
                | "SoftLabels" >> beam.MapTuple(_soft_labels)
            )
            _ = (
                labelled
                | "IndexRecords" >> beam.Map(lambda result: result[1])
                | "WriteIndex" >> write_split(index, SPLIT, "soft_labels")
            )
            student_records = labelled | "StudentRecords" >> beam.Map(lambda result: (result[0], result[2]))
            written = write_splits(student_records, student, folds, "examples")
            for split in passed_through:
                written[split] = read[split]
                _ = read[split] | f"Copy[{split}]" >> write_split(student, split, "examples")
            count_splits(read, os.path.join(counts, "in"), "examples")
            count_splits(written, os.path.join(counts, "out"), "student_examples")
        check_split_counts(examples, collect_counts(os.path.join(counts, "in")))
        split_counts = collect_counts(os.path.join(counts, "out"))
        tf.io.gfile.rmtree(counts)
        index.split_names = standard_artifact_utils.encode_split_names([SPLIT])
        index.set_int_custom_property("num_folds", num_folds)
        student.split_names = standard_artifact_utils.encode_split_names([*folds, *passed_through])
        examples_utils.set_payload_format(student, examples_utils.get_payload_format(examples))
        student.set_int_custom_property("num_folds", num_folds)
        student.set_json_value_custom_property(SPLIT_COUNTS, split_counts)
