"""Executor of L2Features: candidate classes of every merged video and their stacking features (Parquet)."""

from __future__ import annotations

import json
import os
import re
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from tfx.dsl.components.base import base_beam_executor
from tfx.types import artifact, standard_artifact_utils

from components.l2_merge.executor import MergedRecord, decode_merged
from components.splits import HOLDOUT, OUT_OF_FOLD, split_files, split_output
from trainer.predictions import AVERAGED

KEY_COLUMNS = [
    ("video_id", pa.string()),
    ("fold", pa.int32()),
    ("class_id", pa.int32()),
    ("target", pa.int8()),
    ("num_labels", pa.int32()),
]
NON_FEATURE_COLUMNS = ("video_id", "fold", "target", "num_labels")
CATEGORICAL_COLUMNS = ("class_id",)
SUMMARY_COLUMNS = [
    ("score_mean", pa.float32()),
    ("score_max", pa.float32()),
    ("score_std", pa.float32()),
    ("topk_count", pa.int32()),
    ("prior", pa.float32()),
]
LABELLED_SPLITS = (OUT_OF_FOLD, HOLDOUT)
_SUMMARY_FILE = "features_summary.json"


def model_columns(model_names: list[str]) -> list[tuple[str, str]]:
    """(`score_<name>`, `rank_<name>`) of each model, the name reduced to [A-Za-z0-9_]; clashes fail."""
    columns = [
        (f"score_{safe}", f"rank_{safe}") for safe in (re.sub(r"[^A-Za-z0-9_]", "_", n) for n in model_names)
    ]
    names = [name for name, _ in KEY_COLUMNS + SUMMARY_COLUMNS] + [c for pair in columns for c in pair]
    clashes = sorted({name for name in names if names.count(name) > 1})
    if clashes:
        raise ValueError(f"model names {model_names} give clashing feature columns {clashes}")
    return columns


def parquet_schema(model_names: list[str]) -> pa.Schema:
    """Key columns, then score/rank per model in `model_names` order, then the across-model summaries."""
    per_model = [
        (column, dtype)
        for score, rank in model_columns(model_names)
        for column, dtype in ((score, pa.float32()), (rank, pa.int32()))
    ]
    return pa.schema(
        [pa.field(name, dtype, nullable=False) for name, dtype in KEY_COLUMNS + per_model + SUMMARY_COLUMNS]
    )


def feature_columns(model_names: list[str]) -> list[str]:
    """The model inputs of the stacker, in schema order: class_id (categorical) and every feature column."""
    return [name for name in parquet_schema(model_names).names if name not in NON_FEATURE_COLUMNS]


def class_ranks(scores: np.ndarray) -> np.ndarray:
    """1-based rank of each class in each row of [models, classes] scores; ties: lower class index first."""
    order = np.argsort(-scores, axis=1, kind="stable")
    ranks = np.empty(scores.shape, np.int32)
    np.put_along_axis(ranks, order, np.arange(1, scores.shape[1] + 1, dtype=np.int32)[None, :], axis=1)
    return ranks


class ClassCounts(beam.CombineFn):
    """Per fold: number of videos and of videos per class, from (fold, labels) of the out-of-fold videos."""

    def __init__(self, num_folds: int, num_classes: int) -> None:
        self._num_folds, self._num_classes = num_folds, num_classes

    def create_accumulator(self) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros(self._num_folds, np.int64), np.zeros((self._num_folds, self._num_classes), np.int64)

    def add_input(self, accumulator, fold_and_labels: tuple[int, tuple[int, ...]]):
        videos, class_counts = accumulator
        fold, labels = fold_and_labels
        videos[fold] += 1
        class_counts[fold, list(labels)] += 1
        return videos, class_counts

    def merge_accumulators(self, accumulators):
        videos, class_counts = self.create_accumulator()
        for fold_videos, fold_counts in accumulators:
            videos += fold_videos
            class_counts += fold_counts
        return videos, class_counts

    def extract_output(self, accumulator) -> tuple[np.ndarray, np.ndarray]:
        return accumulator


def prior_table(counts: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """float32 [num_folds + 1, num_classes]: row k = class frequency over the folds other than k (for the
    out-of-fold videos of fold k), last row = over all folds (for holdout and test); 0 without videos."""
    videos, class_counts = counts
    rows = np.vstack([class_counts.sum(axis=0) - class_counts, class_counts.sum(axis=0)]).astype(np.float64)
    totals = np.append(videos.sum() - videos, videos.sum()).astype(np.float64)[:, None]
    return np.divide(rows, totals, out=np.zeros_like(rows), where=totals > 0).astype(np.float32)


def candidate_rows(
    record: MergedRecord, columns: list[tuple[str, str]], top_k: int, priors: np.ndarray
) -> list[dict[str, Any]]:
    """One row per candidate class (in the top-k of some model), candidates in ascending class order."""
    ranks = class_ranks(record.scores)
    in_top_k = ranks <= top_k
    candidates = np.flatnonzero(in_top_k.any(axis=0))
    scores = record.scores[:, candidates]
    labels = set(record.labels)
    prior = priors[-1] if record.fold == AVERAGED else priors[record.fold]
    count = candidates.size
    values = {
        "video_id": [record.video_id] * count,
        "fold": [record.fold] * count,
        "class_id": candidates.tolist(),
        "target": [int(c in labels) for c in candidates.tolist()],
        "num_labels": [len(labels)] * count,
    }
    for model, (score_column, rank_column) in enumerate(columns):
        values[score_column] = scores[model].tolist()
        values[rank_column] = ranks[model, candidates].tolist()
    values.update(
        score_mean=scores.mean(axis=0).tolist(),
        score_max=scores.max(axis=0).tolist(),
        score_std=scores.std(axis=0).tolist(),
        topk_count=in_top_k[:, candidates].sum(axis=0).tolist(),
        prior=prior[candidates].tolist(),
    )
    return [dict(zip(values, row, strict=True)) for row in zip(*values.values(), strict=True)]


def _video_stats(rows: list[dict[str, Any]], split: str) -> list[tuple[tuple[str, str], int]]:
    """Rows, true labels among the candidates, and true labels of one video (every video has candidates)."""
    return [
        ((split, "rows"), len(rows)),
        ((split, "hits"), sum(row["target"] for row in rows)),
        ((split, "labels"), rows[0]["num_labels"]),
    ]


def _write_summary(stats: list[tuple[tuple[str, str], int]], path: str) -> None:
    summary: dict[str, dict[str, int]] = {}
    for (split, name), value in stats:
        summary.setdefault(split, {})[name] = value
    with open(path, "w") as handle:
        json.dump(summary, handle)


class Executor(base_beam_executor.BaseBeamExecutor):
    def Do(  # noqa: N802 (TFX API)
        self,
        input_dict: dict[str, list[artifact.Artifact]],
        output_dict: dict[str, list[artifact.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        merged = input_dict["merged"][0]
        output = output_dict["features"][0]
        top_k = exec_properties["top_k"]
        model_names = list(merged.get_json_value_custom_property("model_names"))
        num_classes = merged.get_int_custom_property("num_classes")
        num_folds = merged.get_int_custom_property("num_folds")
        splits = standard_artifact_utils.decode_split_names(merged.split_names)
        columns = model_columns(model_names)
        schema = parquet_schema(model_names)

        def read(pipeline, split: str, label: str):
            pattern = split_files(merged, split)
            return (
                pipeline
                | f"Read[{label}]" >> beam.io.ReadFromTFRecord(pattern)
                | f"Decode[{label}]" >> beam.Map(decode_merged, num_classes=num_classes)
            )

        summary_path = os.path.join(output.uri, _SUMMARY_FILE)
        with self._make_beam_pipeline() as pipeline:
            priors = (
                read(pipeline, OUT_OF_FOLD, "FoldVideos")
                | "FoldAndLabels" >> beam.Map(lambda record: (record.fold, record.labels))
                | "CountClasses" >> beam.CombineGlobally(ClassCounts(num_folds, num_classes))
                | "Priors" >> beam.Map(prior_table)
            )
            stats = []
            for split in splits:
                videos = read(pipeline, split, split) | f"Candidates[{split}]" >> beam.Map(
                    candidate_rows, columns, top_k, beam.pvalue.AsSingleton(priors)
                )
                _ = (
                    videos
                    | f"Rows[{split}]" >> beam.FlatMap(lambda rows: rows)
                    | f"Write[{split}]"
                    >> beam.io.WriteToParquet(
                        split_output(output, split, "features"),
                        schema,
                        file_name_suffix=".parquet",
                    )
                )
                stats.append(videos | f"Stats[{split}]" >> beam.FlatMap(_video_stats, split))
            _ = (
                stats
                | "FlattenStats" >> beam.Flatten()
                | "SumStats" >> beam.CombinePerKey(sum)
                | "CollectStats" >> beam.combiners.ToList()
                | "WriteSummary" >> beam.Map(_write_summary, summary_path)
            )

        with open(summary_path) as handle:
            summary = json.load(handle)
        totals = {split: {"rows": 0, "hits": 0, "labels": 0, **summary.get(split, {})} for split in splits}
        output.split_names = standard_artifact_utils.encode_split_names(splits)
        output.set_json_value_custom_property("model_names", model_names)
        output.set_int_custom_property("top_k", top_k)
        output.set_int_custom_property("num_folds", num_folds)
        output.set_json_value_custom_property("feature_columns", feature_columns(model_names))
        output.set_json_value_custom_property("categorical_columns", list(CATEGORICAL_COLUMNS))
        output.set_json_value_custom_property(
            "candidate_recall",
            {
                split: totals[split]["hits"] / totals[split]["labels"] if totals[split]["labels"] else 0.0
                for split in splits
                if split in LABELLED_SPLITS
            },
        )
        output.set_json_value_custom_property("rows", {split: totals[split]["rows"] for split in splits})
