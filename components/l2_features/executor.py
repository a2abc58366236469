"""Executor of L2Features: candidate classes of every merged video and their stacking features (Parquet)."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from tfx.dsl.components.base import base_beam_executor
from tfx.types import artifact, standard_artifact_utils

from components.l2_merge.executor import MergedRecord, decode_fold_and_labels, decode_merged
from components.splits import (
    HOLDOUT,
    OUT_OF_FOLD,
    SPLIT_COUNTS,
    ReadTFRecords,
    check_split_counts,
    split_files,
    split_output,
)
from components.uri_io import read_json, write_json
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
_BATCH_SCORES = 2**21  # scores per batch of videos (see batch_size)


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


def batch_size(num_models: int, max_candidates: int) -> int:
    """Videos per batch: at most about 2M scores (~40 MB of working arrays), 1 to 2048 videos."""
    return max(1, min(2048, _BATCH_SCORES // (num_models * max_candidates)))


class ClassCounts(beam.CombineFn):
    """Per fold: number of videos and of videos per class, from batches of out-of-fold videos."""

    def __init__(self, num_folds: int, num_classes: int) -> None:
        self._num_folds, self._num_classes = num_folds, num_classes

    def create_accumulator(self) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros(self._num_folds, np.int64), np.zeros((self._num_folds, self._num_classes), np.int64)

    def add_input(self, accumulator, folds_and_labels: Sequence[tuple[int, tuple[int, ...]]]):
        videos, class_counts = accumulator
        for fold, labels in folds_and_labels:
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


def candidate_table(
    records: Sequence[MergedRecord], top_k: int, priors: np.ndarray, schema: pa.Schema
) -> tuple[pa.Table, list[tuple[str, int]]]:
    """The rows of a batch of videos (per video: one per candidate class in ascending class order; videos in
    batch order) and the batch's videos, rows, true labels among the candidates and true labels."""
    num_classes = priors.shape[1]
    video = np.repeat(np.arange(len(records)), [record.classes.size for record in records])
    candidate = np.concatenate([record.classes for record in records])
    picked = np.concatenate([record.scores for record in records], axis=1)  # [models, rows]
    picked_ranks = np.concatenate([record.ranks for record in records], axis=1)  # [models, rows]
    label_sets = [set(record.labels) for record in records]
    num_labels = np.array([len(labels) for labels in label_sets], np.int32)
    labels = np.fromiter((c for labels in label_sets for c in labels), np.int64, int(num_labels.sum()))
    owners = np.repeat(np.arange(len(records)), num_labels)
    valid = (labels >= 0) & (labels < num_classes)
    is_label = np.zeros((len(records), num_classes), bool)
    is_label[owners[valid], labels[valid]] = True
    target = is_label[video, candidate].astype(np.int8)
    folds = np.array([record.fold for record in records], np.int64)
    values = [
        pa.array([record.video_id for record in records], pa.string()).take(video),
        folds.astype(np.int32)[video],
        candidate.astype(np.int32),
        target,
        num_labels[video],
    ]
    for model in range(picked.shape[0]):
        values += [picked[model], picked_ranks[model]]
    prior_rows = np.where(folds == AVERAGED, -1, folds)  # holdout/test: the all-folds row
    values += [
        picked.mean(axis=0),
        picked.max(axis=0),
        picked.std(axis=0),
        (picked_ranks <= top_k).sum(axis=0, dtype=np.int32),
        priors[prior_rows[video], candidate],
    ]
    stats = [
        ("videos", len(records)),
        ("rows", int(video.size)),
        ("hits", int(target.sum())),
        ("labels", int(num_labels.sum())),
    ]
    return pa.Table.from_pydict(dict(zip(schema.names, values, strict=True)), schema=schema), stats


def _split_stats(
    table_and_stats: tuple[pa.Table, list[tuple[str, int]]], split: str
) -> list[tuple[tuple[str, str], int]]:
    return [((split, name), value) for name, value in table_and_stats[1]]


def _write_summary(stats: list[tuple[tuple[str, str], int]], path: str) -> None:
    summary: dict[str, dict[str, int]] = {}
    for (split, name), value in stats:
        summary.setdefault(split, {})[name] = value
    write_json(path, summary)


class Executor(base_beam_executor.BaseBeamExecutor):
    def Do(  # noqa: N802 (TFX API)
        self,
        input_dict: dict[str, list[artifact.Artifact]],
        output_dict: dict[str, list[artifact.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        merged = input_dict["merged"][0]
        output = output_dict["features"][0]
        top_k = merged.get_int_custom_property("top_k")
        model_names = list(merged.get_json_value_custom_property("model_names"))
        num_classes = merged.get_int_custom_property("num_classes")
        num_folds = merged.get_int_custom_property("num_folds")
        splits = standard_artifact_utils.decode_split_names(merged.split_names)
        schema = parquet_schema(model_names)
        size = batch_size(len(model_names), min(num_classes, len(model_names) * top_k))

        def read(pipeline, split: str, label: str, decode):
            """Batches of `size` videos of `split`, each decoded by `decode`."""
            return (
                pipeline
                | f"Read[{label}]" >> ReadTFRecords(split_files(merged, split))
                | f"Batch[{label}]" >> beam.BatchElements(min_batch_size=size, max_batch_size=size)
                | f"Decode[{label}]" >> beam.Map(lambda batch: [decode(record) for record in batch])
            )

        summary_path = os.path.join(output.uri, _SUMMARY_FILE)
        with self._make_beam_pipeline() as pipeline:
            priors = (
                read(pipeline, OUT_OF_FOLD, "FoldVideos", decode_fold_and_labels)
                | "CountClasses" >> beam.CombineGlobally(ClassCounts(num_folds, num_classes))
                | "Priors" >> beam.Map(prior_table)
            )
            stats = []
            for split in splits:
                batches = read(pipeline, split, split, decode_merged) | f"Candidates[{split}]" >> beam.Map(
                    candidate_table, top_k, beam.pvalue.AsSingleton(priors), schema
                )
                _ = (
                    batches
                    | f"Tables[{split}]" >> beam.Map(lambda table_and_stats: table_and_stats[0])
                    | f"Write[{split}]"
                    >> beam.io.WriteToParquetBatched(
                        split_output(output, split, "features"), schema, file_name_suffix=".parquet"
                    )
                )
                stats.append(batches | f"Stats[{split}]" >> beam.FlatMap(_split_stats, split))
            _ = (
                stats
                | "FlattenStats" >> beam.Flatten()
                | "SumStats" >> beam.CombinePerKey(sum)
                | "CollectStats" >> beam.combiners.ToList()
                | "WriteSummary" >> beam.Map(_write_summary, summary_path)
            )

        summary = read_json(summary_path)
        totals = {
            split: {"videos": 0, "rows": 0, "hits": 0, "labels": 0, **summary.get(split, {})}
            for split in splits
        }
        split_counts = {split: totals[split]["videos"] for split in splits}
        check_split_counts(merged, split_counts)
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
        output.set_json_value_custom_property(SPLIT_COUNTS, split_counts)
