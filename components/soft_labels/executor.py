"""Executor of SoftLabels: Parquet OOF scores -> per-video soft-label TFRecords, checked against the folds."""

from __future__ import annotations

from typing import Any

import apache_beam as beam
import numpy as np
from tfx.dsl.components.base import base_beam_executor
from tfx.types import artifact, standard_artifact_utils

from components.fold_split.executor import fold_names
from components.splits import OUT_OF_FOLD, split_files, split_output
from trainer.records import video_id_of
from trainer.soft_labels import encode_soft_labels

SPLIT = "train"


class SoftLabelError(ValueError):
    """Soft labels that do not cover the training videos exactly."""


def _video_record(video_id: str, grouped: dict[str, list]) -> bytes:
    in_folds, rows = list(grouped["fold_video"]), list(grouped["rows"])
    if not in_folds:
        raise SoftLabelError(f"soft labels for video '{video_id}' which is in no fold split")
    if not rows:
        raise SoftLabelError(f"video '{video_id}' of the fold splits has no L2 out-of-fold scores")
    rows.sort(key=lambda row: row[0])
    class_ids = np.array([class_id for class_id, _ in rows], np.int64)
    if np.unique(class_ids).size != class_ids.size:
        raise SoftLabelError(f"video '{video_id}' has repeated candidate classes")
    return encode_soft_labels(video_id, class_ids, np.array([score for _, score in rows], np.float32))


class Executor(base_beam_executor.BaseBeamExecutor):
    def Do(  # noqa: N802 (TFX API)
        self,
        input_dict: dict[str, list[artifact.Artifact]],
        output_dict: dict[str, list[artifact.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        scores, examples = input_dict["scores"][0], input_dict["examples"][0]
        output = output_dict["soft_labels"][0]
        num_folds = len(scores.get_json_value_custom_property("fold_models"))
        with self._make_beam_pipeline() as pipeline:
            folds = [
                pipeline
                | f"ReadExamples[{split}]" >> beam.io.ReadFromTFRecord(split_files(examples, split))
                | f"Ids[{split}]" >> beam.Map(lambda record: (video_id_of(record, "video"), True))
                for split in fold_names(num_folds)
            ]
            rows = (
                pipeline
                | "ReadScores"
                >> beam.io.ReadFromParquet(
                    split_files(scores, OUT_OF_FOLD),
                    columns=["video_id", "class_id", "score"],
                )
                | "KeyRows"
                >> beam.Map(lambda row: (row["video_id"], (int(row["class_id"]), float(row["score"]))))
            )
            _ = (
                {"fold_video": folds | "FlattenIds" >> beam.Flatten(), "rows": rows}
                | "Join" >> beam.CoGroupByKey()
                | "Encode" >> beam.MapTuple(_video_record)
                | "Write"
                >> beam.io.WriteToTFRecord(split_output(output, SPLIT, "soft_labels"), file_name_suffix=".gz")
            )
        output.split_names = standard_artifact_utils.encode_split_names([SPLIT])
        output.set_int_custom_property("num_folds", num_folds)
