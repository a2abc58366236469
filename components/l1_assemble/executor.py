"""Executor of L1Assemble: joined by video id with the fold split (GroupByVideo), checks, averaging."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import numpy as np
from tfx.dsl.components.base import base_beam_executor
from tfx.types import artifact, standard_artifact_utils

from components.fold_split.executor import fold_names
from components.sharded_join import PARTITION_DIR, GroupByVideo, Grouped, JoinInput, run_sharded, shard_count
from components.splits import (
    HOLDOUT,
    OUT_OF_FOLD,
    SPLIT_COUNTS,
    TEST,
    examples_level,
    tfrecord_records,
    write_splits,
)
from trainer.predictions import (
    AVERAGED,
    count_problem,
    decode_prediction,
    encode_prediction,
    prediction_video_id,
)
from trainer.records import video_id_of


def example_ids(path: str, level: str) -> Iterator[bytes]:
    """The video id of every record of one example file, UTF-8: all the join needs of the examples, so
    neither the join nor its shard files carry frames."""
    for record in tfrecord_records(path):
        yield video_id_of(record, level).encode()


_SPLIT, _PREDICTIONS = "split", "predictions"  # the join's roles: a video's example ids, its predictions


class AssemblyError(ValueError):
    """Predictions that do not cover the examples exactly as required."""


def check_out_of_fold(video_id: str, grouped: Grouped, config_name: str) -> bytes:
    """The single OOF prediction of a fold video, made by the model of the video's own fold."""
    expected = [split for split, _ in grouped[_SPLIT]]
    predictions = [record for _, record in grouped[_PREDICTIONS]]
    if len(expected) != 1:
        raise AssemblyError(f"{config_name}: prediction for video '{video_id}' which is in no fold split")
    problem = count_problem(predictions)
    if problem:
        raise AssemblyError(f"{config_name}: out-of-fold prediction of video '{video_id}' is {problem}")
    _, fold, _ = decode_prediction(predictions[0])
    if expected[0] != f"fold_{fold}":
        raise AssemblyError(
            f"{config_name}: video '{video_id}' of {expected[0]} was predicted by the model of fold {fold}"
        )
    return predictions[0]


def average_folds(video_id: str, grouped: Grouped, config_name: str, num_folds: int) -> bytes:
    """The mean of the fold models' predictions of a holdout/test video; exactly one per fold model, summed
    in fold order (the same float32 mean whatever order the join hands them over in)."""
    if len(grouped[_SPLIT]) != 1:
        raise AssemblyError(f"{config_name}: prediction for unknown video '{video_id}'")
    decoded = sorted((decode_prediction(record) for _, record in grouped[_PREDICTIONS]), key=lambda d: d[1])
    folds = [fold for _, fold, _ in decoded]
    if folds != list(range(num_folds)):
        raise AssemblyError(
            f"{config_name}: video '{video_id}' has predictions from folds {folds}, expected one per fold "
            f"0..{num_folds - 1}"
        )
    return encode_prediction(video_id, np.mean([scores for _, _, scores in decoded], axis=0), AVERAGED)


class Executor(base_beam_executor.BaseBeamExecutor):
    def Do(  # noqa: N802 (TFX API)
        self,
        input_dict: dict[str, list[artifact.Artifact]],
        output_dict: dict[str, list[artifact.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        num_folds, config_name = exec_properties["num_folds"], exec_properties["config_name"]
        examples = input_dict["examples"][0]
        output = output_dict["predictions"][0]
        fold_predictions = [input_dict[f"predictions_{k}"][0] for k in range(num_folds)]
        folds_seen = [p.get_int_custom_property("fold") for p in fold_predictions]
        if folds_seen != list(range(num_folds)):
            raise AssemblyError(f"{config_name}: fold predictions come from folds {folds_seen}")
        level = examples_level(examples)
        available = standard_artifact_utils.decode_split_names(examples.split_names)
        averaged_splits = [split for split in (HOLDOUT, TEST) if split in available]

        ids_of_file = functools.partial(example_ids, level=level)
        # Per output split: the examples' splits that define its videos, and each fold model's split
        # holding its predictions of them.
        plan = {OUT_OF_FOLD: (fold_names(num_folds), fold_names(num_folds))}
        plan.update({split: ([split], [split] * num_folds) for split in averaged_splits})
        inputs = [
            JoinInput(
                f"{label}.examples.{split}",
                examples,
                split,
                video_id=bytes.decode,
                join=label,
                role=_SPLIT,
                counted=True,
                file_records=ids_of_file,
            )
            for label, (example_splits, _) in plan.items()
            for split in example_splits
        ] + [
            JoinInput(
                f"{label}.predictions.{fold}",
                artifact_,
                split,
                prediction_video_id,
                join=label,
                role=_PREDICTIONS,
            )
            for label, (_, prediction_splits) in plan.items()
            for fold, (artifact_, split) in enumerate(zip(fold_predictions, prediction_splits, strict=True))
        ]
        labels = list(plan)

        def assemble(label: str, video_id: str, grouped: Grouped) -> tuple[int, bytes]:
            if label == OUT_OF_FOLD:
                return labels.index(label), check_out_of_fold(video_id, grouped, config_name)
            return labels.index(label), average_folds(video_id, grouped, config_name, num_folds)

        def build(
            pipeline: beam.Pipeline, tagged: beam.PCollection, suffix: str
        ) -> dict[str, beam.PCollection]:
            assembled = (
                tagged | "Join" >> GroupByVideo(inputs) | "Assemble" >> beam.Map(lambda item: assemble(*item))
            )
            return write_splits(assembled, output, labels, f"predictions{suffix}")

        shards = shard_count(inputs, exec_properties.get("shard_mb") or 0)
        scratch = os.path.join(output.uri, PARTITION_DIR)
        split_counts = run_sharded(self._make_beam_pipeline, inputs, shards, scratch, build)
        output.split_names = standard_artifact_utils.encode_split_names(labels)
        output.set_string_custom_property("config_name", config_name)
        output.set_string_custom_property("level", level)
        output.set_int_custom_property("num_folds", num_folds)
        output.set_int_custom_property("shards", shards)
        output.set_json_value_custom_property(SPLIT_COUNTS, split_counts)
        output.set_int_custom_property(
            "num_classes", fold_predictions[0].get_int_custom_property("num_classes")
        )
        output.set_json_value_custom_property(
            "fold_models",
            {
                str(k): {
                    "model_uri": p.get_string_custom_property("model_uri"),
                    "train_splits": p.get_json_value_custom_property("train_splits"),
                    "predictions_uri": p.uri,
                }
                for k, p in enumerate(fold_predictions)
            },
        )
