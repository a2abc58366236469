"""Executor of L1Predict: batched SavedModel inference in a Beam DoFn, streamed to prediction records."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import tensorflow as tf
from tfx.dsl.components.base import base_beam_executor
from tfx.types import artifact, standard_artifact_utils
from tfx.utils import path_utils

from components.splits import (
    COUNTS_DIR,
    HOLDOUT,
    SPLIT_COUNTS,
    TEST,
    ReadTFRecords,
    check_split_counts,
    collect_counts,
    count_splits,
    split_files,
    write_split,
)
from trainer.l1_run import TRAINING_INFO
from trainer.predictions import encode_prediction

MAX_BATCH_BYTES = 16 << 20  # serialized, a batch: ~3,500 video-level or ~45 frame-level (300 frames) records


def record_batches() -> beam.PTransform:
    """Batches of serialized records bounded in bytes, not count: a frame-level record is ~75x a video-level
    one, and parsed to float32 it is 4x its serialized size again. Fixed, not adaptive: batch boundaries
    that followed Beam's timing would change a model's scores in the last bits from run to run."""
    return beam.BatchElements(
        min_batch_size=MAX_BATCH_BYTES, max_batch_size=MAX_BATCH_BYTES, element_size_fn=len
    )


class PredictDoFn(beam.DoFn):
    """Loads the SavedModel once per worker and scores batches of serialized records."""

    def __init__(self, model_path: str, fold: int) -> None:
        self._model_path = model_path
        self._fold = fold
        self._serve = None

    def setup(self) -> None:
        self._serve = tf.saved_model.load(self._model_path).signatures["serving_default"]

    def process(self, batch: list[bytes]) -> Iterator[bytes]:
        outputs = self._serve(examples=tf.constant(batch, dtype=tf.string))  # a batch may be empty
        for video_id, scores in zip(outputs["video_id"].numpy(), outputs["scores"].numpy(), strict=True):
            yield encode_prediction(video_id, scores, self._fold)


def read_training_info(model: artifact.Artifact) -> tuple[str, dict[str, Any]]:
    """(serving model path, the training info the run_fn exported beside it)."""
    model_path = path_utils.serving_model_path(model.uri)
    with tf.io.gfile.GFile(os.path.join(model_path, TRAINING_INFO)) as handle:
        return model_path, json.load(handle)


class Executor(base_beam_executor.BaseBeamExecutor):
    def Do(  # noqa: N802 (TFX API)
        self,
        input_dict: dict[str, list[artifact.Artifact]],
        output_dict: dict[str, list[artifact.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        fold = exec_properties["fold"]
        examples = input_dict["examples"][0]
        output = output_dict["predictions"][0]
        model_path, info = read_training_info(input_dict["model"][0])
        out_of_fold = f"fold_{fold}"
        if (
            info["fold"] != fold
            or out_of_fold in info["train_splits"]
            or any(f"Split-{out_of_fold}/" in pattern for pattern in info["train_files"])
        ):
            raise ValueError(
                f"{model_path}: model trained on {info['train_splits']} cannot predict out-of-fold split "
                f"{out_of_fold}"
            )
        available = standard_artifact_utils.decode_split_names(examples.split_names)
        splits = [split for split in (out_of_fold, HOLDOUT, TEST) if split in available]
        counts = os.path.join(output.uri, COUNTS_DIR)
        with self._make_beam_pipeline() as pipeline:
            written = {}
            for split in splits:
                written[split] = (
                    pipeline
                    | f"Read[{split}]" >> ReadTFRecords(split_files(examples, split))
                    | f"Batch[{split}]" >> record_batches()
                    | f"Predict[{split}]" >> beam.ParDo(PredictDoFn(model_path, fold))
                )
                _ = written[split] | f"Write[{split}]" >> write_split(output, split, "predictions")
            count_splits(written, counts, "predictions")
        split_counts = collect_counts(counts)  # one prediction per record read
        check_split_counts(examples, split_counts)
        output.split_names = standard_artifact_utils.encode_split_names(splits)
        output.set_string_custom_property("config_name", exec_properties["config_name"])
        output.set_string_custom_property("level", info["level"])
        output.set_int_custom_property("fold", fold)
        output.set_int_custom_property("num_classes", info["num_classes"])
        output.set_string_custom_property("model_uri", input_dict["model"][0].uri)
        output.set_json_value_custom_property("train_splits", info["train_splits"])
        output.set_json_value_custom_property(SPLIT_COUNTS, split_counts)
