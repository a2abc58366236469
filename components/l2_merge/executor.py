"""Executor of L2Merge: every L1 model's predictions joined with the fold split by video id (Beam).

The merged record format lives here (`encode_merged` / `decode_merged`): per video only the candidate
classes, i.e. the union over models of each model's top-k classes (ranks of `class_ranks`). A
tf.train.Example {id, fold, labels, classes, scores, ranks}: classes = int32 little-endian [K] ascending,
scores = float32 little-endian [num_models, K] and ranks = int32 little-endian [num_models, K] (1-based among
all num_classes), both row-major with rows in `model_names` order. Its size depends on num_models and K
(top_k <= K <= num_models x top_k), not on num_classes: about 8 x num_models x K + 4 x K bytes.
"""

from __future__ import annotations

import functools
import os
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
from tensorflow.core.example import example_pb2
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_beam_executor
from tfx.proto import example_gen_pb2
from tfx.types import artifact, standard_artifact_utils

from components.fold_split.executor import fold_names
from components.sharded_join import PARTITION_DIR, GroupByVideo, Grouped, JoinInput, run_sharded, shard_count
from components.splits import HOLDOUT, OUT_OF_FOLD, SPLIT_COUNTS, TEST, split_fold, write_splits
from trainer import features as F
from trainer.predictions import count_problem, decode_prediction, prediction_video_id
from trainer.records import video_id_of

AVERAGED_SPLITS = (HOLDOUT, TEST)  # fold-averaged by L1Assemble; present when the examples have them
_EXAMPLES = "examples"
_EXAMPLE_VIDEO_ID = functools.partial(video_id_of, level="video")


class MergeError(ValueError):
    """L1 predictions that do not cover the examples exactly once per model, or disagree in shape."""


class MergedRecord(NamedTuple):
    video_id: str
    fold: int  # the video's fold for out-of-fold videos, AVERAGED otherwise
    labels: tuple[int, ...]  # empty when unlabelled
    classes: np.ndarray  # int32 [K]: the candidate classes, ascending
    scores: np.ndarray  # float32 [num_models, K]: each model's scores at the candidates
    ranks: np.ndarray  # int32 [num_models, K]: each model's 1-based ranks among all classes at the candidates


def class_ranks(scores: np.ndarray) -> np.ndarray:
    """1-based rank of each class along the last axis of float32 `scores` (other values are rounded to
    float32). Ties: lower class index first; NaN ranks last. The same ranks as a stable argsort of -scores,
    computed on uint32 keys of the float32 bits (one integer sort, no NaN handling)."""
    bits = np.ascontiguousarray(scores, dtype=np.float32).view(np.uint32)
    keys = np.where(bits & 0x80000000, bits, 0x7FFFFFFF - bits).astype(np.uint32)  # ascending = descending
    keys[bits == 0x80000000] = 0x7FFFFFFF  # -0.0 ties with +0.0
    keys[(bits & 0x7FFFFFFF) > 0x7F800000] = 0xFFFFFFFF  # every NaN last, ties among them by class
    num_classes = keys.shape[-1]
    order = np.argsort(keys.reshape(-1, num_classes), axis=-1, kind="stable")
    order += np.arange(0, keys.size, num_classes)[:, None]  # flat positions: one scatter for all rows
    ranks = np.empty(keys.size, np.int32)
    ranks[order.ravel()] = np.tile(np.arange(1, num_classes + 1, dtype=np.int32), order.shape[0])
    return ranks.reshape(keys.shape)


def candidate_record(
    video_id: str, fold: int, labels: tuple[int, ...], scores: np.ndarray, top_k: int
) -> MergedRecord:
    """The merged record of dense float32 [num_models, num_classes] `scores`: candidates = the classes in
    some model's top `top_k`."""
    ranks = class_ranks(scores)
    classes = np.flatnonzero((ranks <= top_k).any(axis=0)).astype(np.int32)
    return MergedRecord(
        video_id, fold, labels, classes, scores[:, classes].astype(np.float32), ranks[:, classes]
    )


def encode_merged(record: MergedRecord) -> bytes:
    """Serialize one video's merged record (the module docstring's format)."""
    example = example_pb2.Example()
    features = example.features.feature
    features[F.ID].bytes_list.value.append(record.video_id.encode())
    features["fold"].int64_list.value.append(record.fold)
    features[F.LABELS].int64_list.value.extend(record.labels)
    features["classes"].bytes_list.value.append(np.ascontiguousarray(record.classes, "<i4").tobytes())
    features["scores"].bytes_list.value.append(np.ascontiguousarray(record.scores, "<f4").tobytes())
    features["ranks"].bytes_list.value.append(np.ascontiguousarray(record.ranks, "<i4").tobytes())
    return example.SerializeToString()


def decode_merged(serialized: bytes) -> MergedRecord:
    """The video id, fold, labels, candidate classes and per-model scores and ranks of a merged record."""
    features = example_pb2.Example.FromString(serialized).features.feature
    classes = np.frombuffer(features["classes"].bytes_list.value[0], "<i4").astype(np.int32)
    scores = np.frombuffer(features["scores"].bytes_list.value[0], "<f4").astype(np.float32)
    ranks = np.frombuffer(features["ranks"].bytes_list.value[0], "<i4").astype(np.int32)
    return MergedRecord(
        features[F.ID].bytes_list.value[0].decode(),
        features["fold"].int64_list.value[0],
        tuple(features[F.LABELS].int64_list.value),
        classes,
        scores.reshape(-1, classes.size),
        ranks.reshape(-1, classes.size),
    )


def decode_fold_and_labels(serialized: bytes) -> tuple[int, tuple[int, ...]]:
    """The fold and labels of a merged record, its scores and ranks left undecoded."""
    features = example_pb2.Example.FromString(serialized).features.feature
    return features["fold"].int64_list.value[0], tuple(features[F.LABELS].int64_list.value)


def predictions_key(model: int) -> str:
    return f"predictions_{model}"


def _model_tag(model: int) -> str:
    return f"model_{model}"


def _fold_and_labels(source: str, serialized: bytes) -> tuple[int, tuple[int, ...]]:
    """(fold, true labels) of an already validated video-level record of split `source`; no labels -> ()."""
    features = example_pb2.Example.FromString(serialized).features.feature
    labels = tuple(features[F.LABELS].int64_list.value) if F.LABELS in features else ()
    return split_fold(source), labels


def merge_video(
    split: str, video_id: str, grouped: Grouped, model_names: list[str], num_classes: int, top_k: int
) -> bytes:
    """The merged record of a video of `split`: exactly one prediction per model, made for the video's fold;
    its candidates are every model's top `top_k` classes."""
    examples = [_fold_and_labels(source, record) for source, record in grouped[_EXAMPLES]]
    if not examples:
        predicted_by = next(name for i, name in enumerate(model_names) if grouped[_model_tag(i)])
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
        predictions = [record for _, record in grouped[_model_tag(model)]]
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
    return encode_merged(candidate_record(video_id, fold, labels, np.stack(rows), top_k))


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
        top_k = exec_properties["top_k"]
        available = standard_artifact_utils.decode_split_names(examples.split_names)
        splits = [OUT_OF_FOLD, *[split for split in AVERAGED_SPLITS if split in available]]
        model_names, num_classes = _check_models(models, splits)
        # The examples' splits feeding each output split (each video's fold is its split's).
        sources = {OUT_OF_FOLD: fold_names(num_folds), **{split: [split] for split in splits[1:]}}
        inputs = [
            JoinInput(
                f"{split}.examples.{source}",
                examples,
                source,
                _EXAMPLE_VIDEO_ID,
                join=split,
                role=_EXAMPLES,
                counted=True,
            )
            for split in splits
            for source in sources[split]
        ] + [
            JoinInput(
                f"{split}.{_model_tag(m)}",
                models[m],
                split,
                prediction_video_id,
                join=split,
                role=_model_tag(m),
            )
            for split in splits
            for m in range(len(models))
        ]

        def build(
            pipeline: beam.Pipeline, tagged: beam.PCollection, suffix: str
        ) -> dict[str, beam.PCollection]:
            merged = (
                tagged
                | "Join" >> GroupByVideo(inputs)
                | "Merge"
                >> beam.MapTuple(
                    lambda split, video_id, grouped: (
                        splits.index(split),
                        merge_video(split, video_id, grouped, model_names, num_classes, top_k),
                    )
                )
            )
            return write_splits(merged, output, splits, f"merged{suffix}")

        shards = shard_count(inputs, exec_properties.get("shard_mb") or 0)
        scratch = os.path.join(output.uri, PARTITION_DIR)
        split_counts = run_sharded(self._make_beam_pipeline, inputs, shards, scratch, build)

        output.split_names = standard_artifact_utils.encode_split_names(splits)
        output.set_json_value_custom_property("model_names", model_names)
        output.set_int_custom_property("num_classes", num_classes)
        output.set_int_custom_property("num_folds", num_folds)
        output.set_int_custom_property("top_k", top_k)
        output.set_int_custom_property("shards", shards)
        output.set_json_value_custom_property(SPLIT_COUNTS, split_counts)
