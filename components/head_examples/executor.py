"""Executor of HeadExamples: student records joined by video id with every tower's prediction."""

from __future__ import annotations

import functools
import os
from typing import Any

import apache_beam as beam
import numpy as np
from tensorflow.core.example import example_pb2
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_beam_executor
from tfx.types import artifact, standard_artifact_utils

from components.sharded_join import PARTITION_DIR, GroupByVideo, Grouped, JoinInput, run_sharded, shard_count
from components.splits import HOLDOUT, OUT_OF_FOLD, SPLIT_COUNTS, TEST, split_fold, write_splits
from trainer.predictions import count_problem, decode_prediction, prediction_video_id
from trainer.records import extend_floats, video_id_of
from trainer.students import TOWER_OUTPUTS

_EXAMPLE_VIDEO_ID = functools.partial(video_id_of, level="video")
_RECORD = "record"  # the join's role of the student example


class HeadExamplesError(ValueError):
    """Tower predictions that do not match the student examples one to one, or are not out-of-fold."""


def towers_key(tower: int) -> str:
    return f"towers_{tower}"


def prediction_split(split: str) -> str:
    """The split of an assembled prediction artifact that holds the predictions for examples of `split`."""
    return split if split in (HOLDOUT, TEST) else OUT_OF_FOLD


def with_tower_outputs(
    video_id: str, grouped: Grouped, tower_names: list[str], splits: list[str]
) -> tuple[int, bytes]:
    """(split index, the record with `tower_outputs` = the towers' scores concatenated in tower order)."""
    records = grouped[_RECORD]
    if len(records) != 1:
        state = "is in no split" if not records else f"appears {len(records)} times"
        raise HeadExamplesError(f"video '{video_id}' with tower predictions {state} of the student examples")
    split, record = records[0]
    outputs = []
    for tower, name in enumerate(tower_names):
        predictions = [record for _, record in grouped[towers_key(tower)]]
        problem = count_problem(predictions)
        if problem:
            raise HeadExamplesError(f"{name}: prediction of video '{video_id}' ({split}) is {problem}")
        _, fold, scores = decode_prediction(predictions[0])
        if fold != split_fold(split):
            raise HeadExamplesError(
                f"{name}: video '{video_id}' of {split} was predicted by the model of fold {fold}, "
                f"expected {split_fold(split)}"
            )
        outputs.append(scores)
    example = example_pb2.Example.FromString(record)
    extend_floats(example.features.feature[TOWER_OUTPUTS].float_list, np.concatenate(outputs))
    return splits.index(split), example.SerializeToString()


class Executor(base_beam_executor.BaseBeamExecutor):
    def Do(  # noqa: N802 (TFX API)
        self,
        input_dict: dict[str, list[artifact.Artifact]],
        output_dict: dict[str, list[artifact.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        examples, output = input_dict["examples"][0], output_dict["head_examples"][0]
        towers = [input_dict[towers_key(t)][0] for t in range(exec_properties["num_towers"])]
        tower_names = [tower.get_string_custom_property("config_name") for tower in towers]
        splits = standard_artifact_utils.decode_split_names(examples.split_names)
        sources = sorted({prediction_split(split) for split in splits})
        inputs = [
            JoinInput(f"examples.{split}", examples, split, _EXAMPLE_VIDEO_ID, role=_RECORD, counted=True)
            for split in splits
        ] + [
            JoinInput(f"{name}.{source}", predictions, source, prediction_video_id, role=towers_key(tower))
            for tower, (name, predictions) in enumerate(zip(tower_names, towers, strict=True))
            for source in sources
        ]

        def build(
            pipeline: beam.Pipeline, tagged: beam.PCollection, suffix: str
        ) -> dict[str, beam.PCollection]:
            indexed = (
                tagged
                | "Join" >> GroupByVideo(inputs)
                | "TowerOutputs" >> beam.Map(lambda item: with_tower_outputs(*item[1:], tower_names, splits))
            )
            return write_splits(indexed, output, splits, f"examples{suffix}")

        shards = shard_count(inputs, exec_properties.get("shard_mb") or 0)
        scratch = os.path.join(output.uri, PARTITION_DIR)
        split_counts = run_sharded(self._make_beam_pipeline, inputs, shards, scratch, build)

        output.split_names = standard_artifact_utils.encode_split_names(splits)
        examples_utils.set_payload_format(output, examples_utils.get_payload_format(examples))
        output.set_json_value_custom_property("tower_names", tower_names)
        output.set_json_value_custom_property(
            "tower_fold_models",
            {
                name: tower.get_json_value_custom_property("fold_models")
                for name, tower in zip(tower_names, towers, strict=True)
            },
        )
        output.set_string_custom_property("fold_splits_from", OUT_OF_FOLD)
        output.set_int_custom_property("shards", shards)
        output.set_json_value_custom_property(SPLIT_COUNTS, split_counts)
