"""Executor of L2Merge: every L1 model's predictions joined with the fold split by video id (Beam).

The merged record format lives here (`encode_merged` / `decode_merged`): tf.train.Example {id, fold,
labels, scores}, scores = float16 little-endian [num_models, num_classes] row-major, rows in `model_names`
order.
"""

from __future__ import annotations

import json
import math
import os
import zlib
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
import tensorflow as tf
from tensorflow.core.example import example_pb2
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_beam_executor
from tfx.proto import example_gen_pb2
from tfx.types import artifact, standard_artifact_utils

from components.splits import HOLDOUT, OUT_OF_FOLD, TEST, directory_bytes, split_files, write_split
from trainer import features as F
from trainer.predictions import AVERAGED, count_problem, decode_prediction, prediction_video_id

AVERAGED_SPLITS = (HOLDOUT, TEST)  # fold-averaged by L1Assemble; present when the examples have them
_EXAMPLES = "examples"
_SUMMARY_FILE = "merge_summary.json"
_PARTITION_DIR = "_partitioned"  # under the output uri while the executor runs; removed before it ends


class MergeError(ValueError):
    """L1 predictions that do not cover the examples exactly once per model, or disagree in shape."""


class MergedRecord(NamedTuple):
    video_id: str
    fold: int  # the video's fold for out-of-fold videos, AVERAGED otherwise
    labels: tuple[int, ...]  # empty when unlabelled
    scores: np.ndarray  # float32 [num_models, num_classes]


def encode_merged(video_id: str, fold: int, labels: tuple[int, ...], scores: np.ndarray) -> bytes:
    """Serialize one video's [num_models, num_classes] scores with its fold and true labels."""
    example = example_pb2.Example()
    features = example.features.feature
    features[F.ID].bytes_list.value.append(video_id.encode())
    features["fold"].int64_list.value.append(fold)
    features[F.LABELS].int64_list.value.extend(labels)
    features["scores"].bytes_list.value.append(np.ascontiguousarray(scores, dtype="<f2").tobytes())
    return example.SerializeToString()


def decode_merged(serialized: bytes, num_classes: int) -> MergedRecord:
    """The video id, fold, labels and float32 [num_models, num_classes] scores of a merged record."""
    features = example_pb2.Example.FromString(serialized).features.feature
    scores = np.frombuffer(features["scores"].bytes_list.value[0], dtype="<f2")
    return MergedRecord(
        features[F.ID].bytes_list.value[0].decode(),
        features["fold"].int64_list.value[0],
        tuple(features[F.LABELS].int64_list.value),
        scores.reshape(-1, num_classes).astype(np.float32),
    )


def predictions_key(model: int) -> str:
    return f"predictions_{model}"


def _model_tag(model: int) -> str:
    return f"model_{model}"


def _example_video_id(serialized: bytes) -> str:
    return example_pb2.Example.FromString(serialized).features.feature[F.ID].bytes_list.value[0].decode()


def _keyed_example(serialized: bytes, fold: int) -> tuple[str, tuple[int, tuple[int, ...]]]:
    """(video id, (fold, true labels)) of an already validated video-level record; no labels -> ()."""
    features = example_pb2.Example.FromString(serialized).features.feature
    labels = tuple(features[F.LABELS].int64_list.value) if F.LABELS in features else ()
    return features[F.ID].bytes_list.value[0].decode(), (fold, labels)


def merge_video(
    joined: tuple[str, dict[str, Any]], model_names: list[str], num_classes: int, split: str
) -> bytes:
    """The merged record of a video: exactly one prediction per model, made for the video's fold."""
    video_id, grouped = joined
    examples = list(grouped[_EXAMPLES])
    if not examples:
        predicted_by = next(name for i, name in enumerate(model_names) if list(grouped[_model_tag(i)]))
        raise MergeError(
            f"{predicted_by}: prediction for video '{video_id}' which is not in the {split} examples"
        )
    if len(examples) > 1:
        raise MergeError(
            f"examples: video '{video_id}' appears {len(examples)} times in the {split} examples"
        )
    ((fold, labels),) = examples
    rows = []
    for model, name in enumerate(model_names):
        predictions = list(grouped[_model_tag(model)])
        problem = count_problem(predictions)
        if problem:
            raise MergeError(f"{name}: {split} prediction of video '{video_id}' is {problem}")
        _, predicted_fold, scores = decode_prediction(predictions[0])
        if predicted_fold != fold:
            raise MergeError(
                f"{name}: {split} prediction of video '{video_id}' has fold {predicted_fold}, expected {fold}"
            )
        if scores.size != num_classes:
            raise MergeError(
                f"{name}: prediction of video '{video_id}' has {scores.size} scores, expected {num_classes}"
            )
        rows.append(scores)
    return encode_merged(video_id, fold, labels, np.stack(rows))


def _check_models(models: list[artifact.Artifact], splits: list[str]) -> tuple[list[str], int]:
    """Model names (their config names, unique) and the num_classes they all share."""
    names = [model.get_string_custom_property("config_name") for model in models]
    expected = models[0].get_int_custom_property("num_classes")
    for name, model in zip(names, models, strict=True):
        if names.count(name) > 1:
            raise MergeError(f"{name}: config name given by {names.count(name)} prediction artifacts")
        missing = set(splits) - set(standard_artifact_utils.decode_split_names(model.split_names))
        if missing:
            raise MergeError(f"{name}: predictions lack split(s) {sorted(missing)} ({model.uri})")
        num_classes = model.get_int_custom_property("num_classes")
        if num_classes != expected:
            raise MergeError(f"{name}: num_classes {num_classes}, but {names[0]} has {expected}")
    return names, expected


def _write_summary(counts: list[tuple[str, int]], path: str) -> None:
    with tf.io.gfile.GFile(path, "w") as handle:
        json.dump(dict(counts), handle)


class Executor(base_beam_executor.BaseBeamExecutor):
    def Do(  # noqa: N802 (TFX API)
        self,
        input_dict: dict[str, list[artifact.Artifact]],
        output_dict: dict[str, list[artifact.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        examples = input_dict["examples"][0]
        output = output_dict["merged"][0]
        models = [input_dict[predictions_key(i)][0] for i in range(exec_properties["num_models"])]
        if examples_utils.get_payload_format(examples) != example_gen_pb2.FORMAT_TF_EXAMPLE:
            raise MergeError(f"examples: {examples.uri} is not the video-level (tf.train.Example) fold split")
        num_folds = examples.get_int_custom_property("num_folds")
        available = standard_artifact_utils.decode_split_names(examples.split_names)
        splits = [OUT_OF_FOLD, *[split for split in AVERAGED_SPLITS if split in available]]
        model_names, num_classes = _check_models(models, splits)
        # The examples' splits feeding each output split, and the fold every video of them must carry.
        sources = {OUT_OF_FOLD: [(f"fold_{k}", k) for k in range(num_folds)]}
        sources.update({split: [(split, AVERAGED)] for split in splits[1:]})
        inputs = {
            split: [
                *[
                    (f"examples.{source}", split_files(examples, source), fold)
                    for source, fold in sources[split]
                ],
                *[(_model_tag(m), split_files(models[m], split), None) for m in range(len(models))],
            ]
            for split in splits
        }
        shards = shard_count(models, splits, exec_properties.get("shard_mb") or 0)
        split_counts = dict.fromkeys(splits, 0)
        if shards == 1:
            for split, count in self._merge(inputs, output, model_names, num_classes, "merged").items():
                split_counts[split] += count
        else:
            # The in-memory DirectRunner holds a whole CoGroupByKey in memory: partition every input by
            # crc32(video id) % shards in one streaming pass, then join shard after shard.
            partitioned = os.path.join(output.uri, _PARTITION_DIR)
            self._partition(inputs, shards, partitioned)
            for shard in range(shards):
                shard_inputs = {
                    split: [
                        (tag, _shard_files(partitioned, shard, split, tag), fold) for tag, _, fold in parts
                    ]
                    for split, parts in inputs.items()
                }
                counts = self._merge(shard_inputs, output, model_names, num_classes, f"merged-{shard:04d}")
                for split, count in counts.items():
                    split_counts[split] += count
            tf.io.gfile.rmtree(partitioned)

        output.split_names = standard_artifact_utils.encode_split_names(splits)
        output.set_json_value_custom_property("model_names", model_names)
        output.set_int_custom_property("num_classes", num_classes)
        output.set_int_custom_property("num_folds", num_folds)
        output.set_int_custom_property("shards", shards)
        output.set_json_value_custom_property("split_counts", split_counts)

    def _partition(self, inputs: dict[str, list[tuple]], shards: int, directory: str) -> None:
        """Every input record rewritten under `directory`/shard-<s>/<split>/<tag>/ for its video's shard."""
        with self._make_beam_pipeline() as pipeline:
            for split, parts in inputs.items():
                for tag, pattern, fold in parts:
                    video_id = prediction_video_id if fold is None else _example_video_id
                    by_shard = (
                        pipeline
                        | f"Read[{split}.{tag}]" >> beam.io.ReadFromTFRecord(pattern)
                        | f"Shard[{split}.{tag}]"
                        >> beam.Partition(
                            lambda record, n, video_id=video_id: shard_of(video_id(record), n), shards
                        )
                    )
                    for shard, records in enumerate(by_shard):
                        _ = records | f"Write[{split}.{tag}.{shard}]" >> beam.io.WriteToTFRecord(
                            os.path.join(directory, f"shard-{shard}", split, tag, "part")
                        )

    def _merge(
        self, inputs: dict[str, list[tuple]], output: artifact.Artifact, model_names, num_classes, name: str
    ) -> dict[str, int]:
        """Join and write every split of `inputs` (files named `name`*); returns the videos per split."""
        summary_path = os.path.join(output.uri, f"{name}.{_SUMMARY_FILE}")
        with self._make_beam_pipeline() as pipeline:
            counts = []
            for split, parts in inputs.items():
                joined: dict[str, Any] = {_EXAMPLES: []}
                for tag, pattern, fold in parts:
                    records = _read(pipeline, f"{split}.{tag}", pattern)
                    if fold is None:
                        joined[tag] = records | f"Key[{split}.{tag}]" >> beam.Map(
                            lambda record: (prediction_video_id(record), record)
                        )
                    else:
                        joined[_EXAMPLES].append(
                            records | f"Key[{split}.{tag}]" >> beam.Map(_keyed_example, fold=fold)
                        )
                joined[_EXAMPLES] = joined[_EXAMPLES] | f"FlattenExamples[{split}]" >> beam.Flatten()
                merged = (
                    joined
                    | f"Join[{split}]" >> beam.CoGroupByKey()
                    | f"Merge[{split}]"
                    >> beam.Map(merge_video, model_names=model_names, num_classes=num_classes, split=split)
                )
                _ = merged | f"Write[{split}]" >> write_split(output, split, name)
                counts.append(
                    merged
                    | f"Count[{split}]" >> beam.combiners.Count.Globally()
                    | f"Name[{split}]" >> beam.Map(lambda count, split=split: (split, count))
                )
            _ = (
                counts
                | "FlattenCounts" >> beam.Flatten()
                | "CollectCounts" >> beam.combiners.ToList()
                | "WriteSummary" >> beam.Map(_write_summary, summary_path)
            )
        with tf.io.gfile.GFile(summary_path) as handle:
            counts_by_split = json.load(handle)
        tf.io.gfile.remove(summary_path)
        return counts_by_split


def _read(pipeline: beam.Pipeline, label: str, pattern: str | None) -> beam.PCollection:
    """The records of the files matching `pattern`; None (an empty shard) reads nothing."""
    if pattern is None:
        return pipeline | f"Empty[{label}]" >> beam.Create([], reshuffle=False).with_output_types(bytes)
    return pipeline | f"Read[{label}]" >> beam.io.ReadFromTFRecord(pattern)


def _shard_files(directory: str, shard: int, split: str, tag: str) -> str | None:
    """Glob of one input's partitioned records for `shard`, or None when the shard got none of them."""
    pattern = os.path.join(directory, f"shard-{shard}", split, tag, "*")
    return pattern if tf.io.gfile.glob(pattern) else None


def shard_of(video_id: str, shards: int) -> int:
    """A video's join shard; crc32 is stable across processes and runs (Python's str hash is salted)."""
    return zlib.crc32(video_id.encode()) % shards


def shard_count(models: list[artifact.Artifact], splits: list[str], shard_mb: int) -> int:
    """Join shards so that each holds about `shard_mb` MB of predictions; 0 -> one join (distributed runners
    with a shuffle service, where a join's memory is spread over workers anyway)."""
    if shard_mb <= 0:
        return 1
    total = sum(
        directory_bytes(standard_artifact_utils.get_split_uri([model], split))
        for model in models
        for split in splits
    )
    return max(1, math.ceil(total / (shard_mb * 2**20)))
