"""Executor of SoftLabels: Parquet OOF scores -> per-video soft-label index, and the student's examples (the
fold-split video records with their soft labels added; holdout and test copied unchanged)."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from tensorflow.core.example import example_pb2
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_beam_executor
from tfx.types import artifact, standard_artifact_utils

from components.fold_split.executor import fold_names
from components.sharded_join import (
    PARTITION_DIR,
    GroupByVideo,
    Grouped,
    JoinInput,
    records_of,
    run_sharded,
    shard_count,
)
from components.splits import HOLDOUT, OUT_OF_FOLD, SPLIT_COUNTS, TEST, split_fold, write_split, write_splits
from components.uri_io import parquet_batches
from trainer.predictions import AVERAGED
from trainer.records import InputDataError, video_id_of
from trainer.soft_labels import encode_soft_labels, with_soft_labels

SPLIT = "train"
SCORE_COLUMNS = ["video_id", "class_id", "score", "scored_by"]
_ROWS_PER_BATCH = 65_536
# The id of a video-level example, and of a `score_records` record (an Example with the same `id` feature).
_VIDEO_ID = functools.partial(video_id_of, level="video")
_FOLD_VIDEO, _ROWS = "fold_video", "rows"  # the join's roles: a fold video's example, its L2 score rows


class SoftLabelError(ValueError):
    """Soft labels that do not cover the training videos exactly."""


def encode_score_rows(
    video_id: str, class_ids: np.ndarray, scores: np.ndarray, scored_by: np.ndarray
) -> bytes:
    """Some of a video's rows of L2 scores as one record: class ids and scores as raw arrays, and the folds
    of the stackers that scored them."""
    example = example_pb2.Example()
    features = example.features.feature
    features["id"].bytes_list.value.append(video_id.encode())
    features["class_ids"].bytes_list.value.append(np.asarray(class_ids, "<i8").tobytes())
    features["scores"].bytes_list.value.append(np.asarray(scores, "<f4").tobytes())
    features["scored_by"].int64_list.value.extend(np.unique(scored_by).tolist())
    return example.SerializeToString()


def decode_score_rows(serialized: bytes) -> tuple[str, np.ndarray, np.ndarray, list[int]]:
    """(video id, class ids, scores, scored_by folds) of an `encode_score_rows` record."""
    features = example_pb2.Example.FromString(serialized).features.feature
    return (
        features["id"].bytes_list.value[0].decode(),
        np.frombuffer(features["class_ids"].bytes_list.value[0], "<i8"),
        np.frombuffer(features["scores"].bytes_list.value[0], "<f4"),
        list(features["scored_by"].int64_list.value),
    )


def score_records(path: str) -> Iterator[bytes]:
    """One `encode_score_rows` record per video and record batch of a Parquet file of L2 scores, grouped with
    numpy (no Python object per row). A video's rows may span batches and files: the join gathers them."""
    for batch in parquet_batches(path, SCORE_COLUMNS, _ROWS_PER_BATCH):
        for name in SCORE_COLUMNS:
            if batch.column(name).null_count:
                raise InputDataError(f"{path}: column '{name}' has missing values")
        videos = batch.column("video_id").dictionary_encode()
        order = np.argsort(videos.indices.to_numpy(), kind="stable")
        codes = videos.indices.to_numpy()[order]
        starts = np.flatnonzero(np.diff(codes, prepend=-1))
        ends = np.append(starts[1:], len(codes))
        video_ids = videos.dictionary.take(pa.array(codes[starts])).to_pylist()
        class_ids, scores, scored_by = (batch.column(name).to_numpy()[order] for name in SCORE_COLUMNS[1:])
        for video_id, start, end in zip(video_ids, starts, ends, strict=True):
            yield encode_score_rows(video_id, class_ids[start:end], scores[start:end], scored_by[start:end])


def _soft_labels(video_id: str, grouped: Grouped) -> tuple[int, bytes, bytes]:
    """(fold index, index record, student record) of one video; fails unless it has exactly one fold record
    and at least one distinct candidate score, every one scored by the stacker of the video's own fold."""
    in_folds = [(split_fold(split), record) for split, record in grouped[_FOLD_VIDEO]]
    rows = [decode_score_rows(record) for _, record in grouped[_ROWS]]
    if not in_folds:
        raise SoftLabelError(f"soft labels for video '{video_id}' which is in no fold split")
    if not rows:
        raise SoftLabelError(f"video '{video_id}' of the fold splits has no L2 out-of-fold scores")
    if len(in_folds) != 1:
        raise SoftLabelError(f"video '{video_id}' appears {len(in_folds)} times in the fold splits")
    fold, record = in_folds[0]
    scored_by = sorted({row_fold for _, _, _, row_folds in rows for row_fold in row_folds})
    if scored_by != [fold]:
        raise SoftLabelError(
            f"video '{video_id}' of fold_{fold} was scored by the stacker of folds {scored_by} "
            f"({AVERAGED} = the fold average), not out of fold"
        )
    class_ids = np.concatenate([ids for _, ids, _, _ in rows])
    order = np.argsort(class_ids, kind="stable")
    class_ids, scores = class_ids[order], np.concatenate([scores for _, _, scores, _ in rows])[order]
    if np.unique(class_ids).size != class_ids.size:
        raise SoftLabelError(f"video '{video_id}' has repeated candidate classes")
    return fold, encode_soft_labels(video_id, class_ids, scores), with_soft_labels(record, class_ids, scores)


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
        joined = [
            JoinInput(
                f"examples.{split}", examples, split, _VIDEO_ID, join="", role=_FOLD_VIDEO, counted=True
            )
            for split in folds
        ] + [
            JoinInput(
                "scores", scores, OUT_OF_FOLD, _VIDEO_ID, join="", role=_ROWS, file_records=score_records
            )
        ]
        copied = [
            JoinInput(f"examples.{split}", examples, split, _VIDEO_ID, counted=True)
            for split in passed_through
        ]
        inputs = joined + copied

        def build(
            pipeline: beam.Pipeline, tagged: beam.PCollection, suffix: str
        ) -> dict[str, beam.PCollection]:
            labelled = (
                tagged
                | "Join" >> GroupByVideo(joined)
                | "SoftLabels" >> beam.Map(lambda item: _soft_labels(*item[1:]))
            )
            _ = (
                labelled
                | "IndexRecords" >> beam.Map(lambda result: result[1])
                | "WriteIndex" >> write_split(index, SPLIT, f"soft_labels{suffix}")
            )
            student_records = labelled | "StudentRecords" >> beam.Map(lambda result: (result[0], result[2]))
            written = write_splits(student_records, student, folds, f"examples{suffix}")
            for item in copied:
                written[item.split] = records_of(tagged, item.tag)
                _ = written[item.split] | f"Copy[{item.split}]" >> write_split(
                    student, item.split, f"examples{suffix}"
                )
            return written

        shards = shard_count(inputs, exec_properties.get("shard_mb") or 0)
        scratch = os.path.join(student.uri, PARTITION_DIR)
        split_counts = run_sharded(self._make_beam_pipeline, inputs, shards, scratch, build)

        index.split_names = standard_artifact_utils.encode_split_names([SPLIT])
        index.set_int_custom_property("num_folds", num_folds)
        student.split_names = standard_artifact_utils.encode_split_names([*folds, *passed_through])
        examples_utils.set_payload_format(student, examples_utils.get_payload_format(examples))
        student.set_int_custom_property("num_folds", num_folds)
        student.set_int_custom_property("shards", shards)
        student.set_json_value_custom_property(SPLIT_COUNTS, split_counts)
