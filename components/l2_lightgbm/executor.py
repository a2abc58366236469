"""Executor of L2LightGBM: per-fold LightGBM on the candidate features, OOF/holdout/test scores, metrics.

Memory is bounded apart from LightGBM's binned Datasets and each video's top-k rows (README "Sizing"):
the out-of-fold rows are put in a fixed order by an external sort (hash buckets of video_id on scratch files,
each sorted in memory), each fold's Datasets are read from those files a row group at a time
(`lightgbm.Sequence`), and every split is scored and written a batch at a time. Memory freed by Arrow and
numpy goes back to the OS (`components.native_memory`), so a freed sort bucket does not stay in the peak."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import numbers
import os
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import tensorflow as tf
from tfx.dsl.components.base import base_executor
from tfx.types import artifact, standard_artifact_utils

from components.l2_lightgbm.config import LightGBMConfig, parse_lightgbm_config
from components.native_memory import memory_returned_when_freed, release_freed_memory
from components.splits import HOLDOUT, OUT_OF_FOLD, TEST, check_split_counts
from components.uri_io import (
    arrow_stream_writer,
    open_parquet,
    parquet_batches,
    parquet_files,
    parquet_writer,
    read_arrow_stream,
    read_parquet,
    write_json,
    write_text,
)
from trainer.metrics import gap_from_candidates
from trainer.predictions import AVERAGED

log = logging.getLogger(__name__)
KEY_COLUMNS = ["video_id", "fold", "class_id", "target", "num_labels"]
SCORE_COLUMNS = [*KEY_COLUMNS, "score", "scored_by"]
BATCH_ROWS = 65_536  # rows per batch read and per row group of the sorted scratch files
BUCKET_BYTES = 256 << 20  # rows of one sort bucket in memory; sorting holds about 3x this
PRUNE_ROWS = 1 << 22  # rows the GAPs buffer at least before pruning them to each video's top rows
SCRATCH_DIR = "_sorted_rows"  # under the model output while the executor runs
_HASH_BUCKETS = 10_000
_BUCKET_HASH_KEY = "yt8m-l2-buckets0"
_VIDEO_ID_BYTES = 32


def in_validation_slice(video_ids, fraction: float, seed: int) -> np.ndarray:
    """A stable, seeded choice of whole videos (all their candidate rows) for early stopping."""
    hashed = pd.util.hash_array(np.asarray(video_ids, dtype=object), hash_key=f"yt8m{seed:012d}"[:16])
    return (hashed % _HASH_BUCKETS) < int(round(fraction * _HASH_BUCKETS))


def negative_weights(video_ids, class_ids, target, fraction: float, seed: int) -> np.ndarray:
    """Training weights of rows: 1 for every positive row, and for a stable, seeded `fraction` of the negative
    rows (chosen by video and class) 1 / fraction, which keeps the loss and the scores' calibration unbiased;
    0 for the other negative rows, which are left out."""
    target = np.asarray(target).astype(bool)
    if fraction >= 1:
        return np.ones(target.size, np.float32)
    videos = pd.util.hash_array(np.asarray(video_ids, dtype=object), hash_key=f"neg{seed:013d}"[:16])
    rows = pd.util.hash_array(videos ^ np.asarray(class_ids).astype(np.uint64))
    kept = target | ((rows >> np.uint64(11)).astype(np.float64) < fraction * 2.0**53)
    return np.where(target, 1.0, np.where(kept, 1.0 / fraction, 0.0)).astype(np.float32)


def feature_matrix(rows: pa.Table | pa.RecordBatch, columns: list[str]) -> np.ndarray:
    """`columns` of `rows` as a float64 matrix [rows, columns] (exact for int32 and float32 columns)."""
    if not columns or rows.num_rows == 0:
        return np.empty((rows.num_rows, len(columns)))
    return np.stack([np.asarray(rows.column(name), dtype=np.float64) for name in columns], axis=1)


def _video_ids(rows: pa.Table | pa.RecordBatch) -> np.ndarray:
    return rows.column("video_id").to_numpy(zero_copy_only=False)


@dataclasses.dataclass(frozen=True)
class SortedRows:
    """The out-of-fold rows on scratch files in an order that Beam's file and row order cannot change:
    buckets by a fixed hash of video_id in bucket order, each sorted by (video_id, class_id); row groups of
    BATCH_ROWS rows."""

    paths: list[str]
    videos: int
    folds: list[int]


def _bucket_of(video_ids: np.ndarray, buckets: int) -> np.ndarray:
    return pd.util.hash_array(video_ids.astype(object), hash_key=_BUCKET_HASH_KEY) % buckets


def _bucket_count(files: list[str], columns: list[str], bucket_bytes: int) -> int:
    """Buckets for rows of `columns` to fit `bucket_bytes` each, from the row count and a fixed width per
    column (8 B; video_id 32 B), never from file sizes: the row order must not depend on the file layout."""
    rows = 0
    for path in files:
        with open_parquet(path) as parquet:
            rows += parquet.metadata.num_rows
    row_bytes = 8 * len(columns) + _VIDEO_ID_BYTES
    return max(1, math.ceil(rows * row_bytes / bucket_bytes))


def _write_buckets(
    files: list[str], columns: list[str], scratch: str, buckets: int, flush_bytes: int
) -> list[str]:
    """One streaming pass: `columns` of every row into the unsorted file (Arrow IPC) of its bucket; their
    paths."""
    paths: dict[int, str] = {}
    with ExitStack() as stack:
        writers: dict[int, Any] = {}

        def flush(pending: list[pa.RecordBatch]) -> None:
            table = pa.Table.from_batches(pending)
            bucket = _bucket_of(_video_ids(table), buckets)
            order = np.argsort(bucket, kind="stable")
            table, bucket = table.take(order), bucket[order]
            bounds = np.searchsorted(bucket, np.arange(buckets + 1))
            for b in np.flatnonzero(np.diff(bounds)):
                if b not in writers:
                    paths[b] = os.path.join(scratch, f"unsorted-{b:05d}.arrows")
                    writers[b] = stack.enter_context(arrow_stream_writer(paths[b], table.schema))
                writers[b].write_table(table.slice(bounds[b], bounds[b + 1] - bounds[b]))

        pending, pending_bytes = [], 0
        for path in files:
            for batch in parquet_batches(path, columns, BATCH_ROWS):
                pending.append(batch)
                pending_bytes += batch.nbytes
                if pending_bytes >= flush_bytes:
                    flush(pending)
                    pending, pending_bytes = [], 0
        if pending:
            flush(pending)
    return [paths[b] for b in sorted(paths)]


def sort_rows(files: list[str], columns: list[str], scratch: str, bucket_bytes: int) -> SortedRows:
    """`columns` (video_id, fold and class_id among them) of the rows of `files` as SortedRows under
    `scratch`, with as many buckets as keep one bucket within `bucket_bytes`."""
    buckets = _bucket_count(files, columns, bucket_bytes)
    sorted_paths, videos, folds = [], 0, set()
    unsorted_paths = _write_buckets(files, columns, scratch, buckets, bucket_bytes)
    release_freed_memory()
    for unsorted in unsorted_paths:
        table = read_arrow_stream(unsorted).sort_by([("video_id", "ascending"), ("class_id", "ascending")])
        tf.io.gfile.remove(unsorted)
        path = unsorted.replace("unsorted-", "sorted-").replace(".arrows", ".parquet")
        with parquet_writer(path, table.schema) as writer:
            writer.write_table(table, row_group_size=BATCH_ROWS)
        sorted_paths.append(path)
        videos += pc.count_distinct(table.column("video_id")).as_py()  # a video lies in one bucket
        folds.update(pc.unique(table.column("fold")).to_pylist())
        del table
        release_freed_memory()
    log.info("L2 sort: %d out-of-fold videos in %d buckets of <= %d bytes", videos, buckets, bucket_bytes)
    return SortedRows(sorted_paths, videos, sorted(int(f) for f in folds))


class BucketRows(lgb.Sequence):
    """Feature rows at `positions` (ascending) of one sorted scratch file, read a row group at a time:
    LightGBM samples rows by ascending index, then pushes them in slices of `batch_size`."""

    batch_size = BATCH_ROWS

    def __init__(self, path: str, positions: np.ndarray, columns: list[str]) -> None:
        self._path, self._positions, self._columns = path, positions, columns
        self._group, self._matrix = -1, np.empty((0, len(columns)))

    def __len__(self) -> int:
        return len(self._positions)

    def __getitem__(self, index: int | slice) -> np.ndarray:
        if isinstance(index, numbers.Integral):
            group, offset = divmod(int(self._positions[index]), BATCH_ROWS)
            return self._row_group(group)[offset]
        if isinstance(index, slice):
            positions = self._positions[index]
            groups = positions // BATCH_ROWS
            parts = [
                self._row_group(group)[positions[groups == group] - group * BATCH_ROWS]
                for group in np.unique(groups)
            ]
            return np.concatenate(parts) if parts else np.empty((0, len(self._columns)))
        raise TypeError(f"BucketRows index must be an integer or a slice, got {type(index).__name__}")

    def _row_group(self, group: int) -> np.ndarray:
        if group != self._group:
            with open_parquet(self._path) as parquet:
                self._matrix = feature_matrix(parquet.read_row_group(group, self._columns), self._columns)
            self._group = group
        return self._matrix


def fit_booster(train_set: lgb.Dataset, valid_set: lgb.Dataset, config: LightGBMConfig) -> lgb.Booster:
    """LightGBM with the config's params, early-stopped on `valid_set`."""
    return lgb.train(
        config.lightgbm_params(),
        train_set,
        num_boost_round=config.num_boost_round,
        valid_sets=[valid_set],
        callbacks=[lgb.early_stopping(config.early_stopping_rounds, verbose=False)],
    )


def train_fold(
    rows: SortedRows, feature_columns: list[str], config: LightGBMConfig, fold: int
) -> tuple[lgb.Booster, dict[str, Any]]:
    """A LightGBM booster on the rows of every fold but `fold` (every positive row, the config's
    `negative_fraction` of the negative ones, weighted), early-stopped on a slice of their videos. Rows come
    in SortedRows' order: bagging draws rows by position, and Beam's joins fix no order. Holds an int64
    position, a float32 label and (when sampling) a float32 weight per training row besides LightGBM's
    Datasets."""
    sampled = config.negative_fraction < 1
    parts: dict[bool, list[tuple[BucketRows, np.ndarray, np.ndarray | None]]] = {False: [], True: []}
    for path in rows.paths:
        keys = read_parquet(path, ["video_id", "fold", "target", *(["class_id"] if sampled else [])])
        video_ids, target = _video_ids(keys), keys.column("target").to_numpy()
        chosen = keys.column("fold").to_numpy() != fold
        validation = in_validation_slice(video_ids, config.validation_fraction, config.seed + fold)
        weight = None
        if sampled:
            weight = negative_weights(
                video_ids,
                keys.column("class_id").to_numpy(),
                target,
                config.negative_fraction,
                config.seed + fold,
            )
            chosen &= weight > 0
        for part in (False, True):
            positions = np.flatnonzero(chosen & (validation == part))
            if positions.size:
                sequence = BucketRows(path, positions, feature_columns)
                parts[part].append(
                    (sequence, target[positions], None if weight is None else weight[positions])
                )

    def dataset(part: bool, reference=None) -> lgb.Dataset:
        return lgb.Dataset(
            [sequence for sequence, _, _ in parts[part]],
            label=np.concatenate([labels for _, labels, _ in parts[part]]).astype(np.float32),
            weight=np.concatenate([w for _, _, w in parts[part]]) if sampled else None,
            feature_name=feature_columns,
            categorical_feature=["class_id"],
            reference=reference,
            free_raw_data=True,
        )

    train_set = dataset(False)
    booster = fit_booster(train_set, dataset(True, reference=train_set), config)
    booster.free_dataset()  # the binned rows go; the trees stay for scoring
    info = {
        "fold": fold,
        "train_folds": [f for f in rows.folds if f != fold],
        "train_rows": sum(len(sequence) for sequence, _, _ in parts[False]),
        "validation_rows": sum(len(sequence) for sequence, _, _ in parts[True]),
        "negative_fraction": config.negative_fraction,
        "best_iteration": int(booster.best_iteration),
    }
    return booster, info


class TopCandidates:
    """What the GAPs of a split read: per named score, each video's rows at or above its k-th score (ties
    kept, so GAP@k's tie rule sees them all) with their class and target, and per video its label count and
    fold. Rows may come in any order (Beam's file and row order do not group a video's rows): they are
    buffered and pruned to each video's top rows whenever the buffer doubles what the last pruning kept, so
    memory follows videos x k, not candidate rows. Kept rows stay in arrival order: the GAPs equal those of
    `gap_from_candidates` on every row, bit for bit."""

    def __init__(self, k: int, names: list[str]) -> None:
        self._k, self._names = k, names
        self._codes: dict[str, int] = {}
        self._num_labels: list[np.ndarray] = []
        self._folds: list[np.ndarray] = []
        self._rows: dict[str, list[dict[str, np.ndarray]]] = {name: [] for name in names}
        self._buffered, self._kept = 0, 0

    def add(self, batch: pa.RecordBatch, scores: dict[str, np.ndarray]) -> None:
        """The rows of `batch` with their `scores` ({name: one score per row}, every name of the init)."""
        known = len(self._codes)
        codes = np.fromiter(
            (self._codes.setdefault(v, len(self._codes)) for v in _video_ids(batch)), np.int32, batch.num_rows
        )
        new = codes >= known  # codes are handed out in first-seen order: a video's first row gives its counts
        _, first = np.unique(codes[new], return_index=True)
        self._num_labels.append(batch.column("num_labels").to_numpy()[new][first])
        self._folds.append(batch.column("fold").to_numpy()[new][first].astype(np.int16))
        class_ids = batch.column("class_id").to_numpy().astype(np.int32)
        target = batch.column("target").to_numpy().astype(bool)
        for name in self._names:
            if not np.isfinite(scores[name]).all():
                raise ValueError(f"{name}: scores contain NaN or infinity")
            self._rows[name].append(
                {"video": codes, "class_id": class_ids, "target": target, "score": scores[name]}
            )
        self._buffered += batch.num_rows
        if self._buffered >= max(2 * self._kept, PRUNE_ROWS):
            self._prune()

    def _prune(self) -> None:
        for name in self._names:
            rows = {
                key: np.concatenate([part[key] for part in self._rows[name]]) for key in self._rows[name][0]
            }
            keep = _top_rows_of_videos(rows["video"], rows["score"], self._k)
            self._rows[name] = [{key: values[keep] for key, values in rows.items()}]
        self._kept = self._buffered = len(keep)

    def gaps(self, scores: list[str], by_fold: bool = False) -> dict[str, Any]:
        """GAP@k of the rows scored by each column in `scores` ({score: GAP}), or with `by_fold` of the one
        column `scores[0]` on each fold's videos ({fold: GAP}); every true label of their videos counts.
        Videos are numbered in video_id order, as gap_from_candidates numbers string ids."""
        if not self._codes:
            return {} if by_fold else {score: 0.0 for score in scores}
        if self._buffered > self._kept:  # rows came since the last pruning (gaps() is called per report)
            self._prune()
        ids = np.array(list(self._codes), dtype=object)
        rank = np.empty(len(ids), np.int32)
        rank[np.argsort(ids, kind="stable")] = np.arange(len(ids))
        num_labels, folds = np.concatenate(self._num_labels), np.concatenate(self._folds)

        def gap(score: str, videos_chosen: np.ndarray | None = None) -> float:
            (rows,) = self._rows[score]
            chosen = slice(None) if videos_chosen is None else videos_chosen[rows["video"]]
            videos = rows["video"][chosen]
            return gap_from_candidates(
                rank[videos],
                rows["class_id"][chosen],
                rows["score"][chosen],
                rows["target"][chosen],
                int(num_labels[np.unique(videos)].sum()),
                self._k,
            )

        if by_fold:
            return {str(fold): gap(scores[0], folds == fold) for fold in np.unique(folds)}
        return {score: gap(score) for score in scores}


def _top_rows_of_videos(videos: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    """Positions, ascending, of each video's rows scoring at least its k-th highest score (all its rows when
    it has fewer than k)."""
    order = np.lexsort((-scores, videos))
    ordered_videos, ordered_scores = videos[order], scores[order]
    starts = np.flatnonzero(np.r_[True, ordered_videos[1:] != ordered_videos[:-1]])
    sizes = np.diff(np.r_[starts, ordered_videos.size])
    kth = ordered_scores[starts + np.minimum(sizes, k) - 1]
    return np.sort(order[ordered_scores >= np.repeat(kth, sizes)])


def _score_split(
    files: list[str],
    path: str,
    feature_columns: list[str],
    score: Callable[[pa.RecordBatch, np.ndarray], tuple[np.ndarray, np.ndarray]],
    kept: TopCandidates | None = None,
    l1_columns: Sequence[str] = (),
) -> None:
    """Writes the scores of every row of `files` (in file-name and row order) to one Parquet file at `path`,
    a batch at a time; `score(batch, features)` gives (float64 scores, scored_by). Each batch's rows go to
    `kept` with their "score" and their `l1_columns`."""
    with open_parquet(files[0]) as parquet:
        schema = parquet.schema_arrow
    schema = pa.schema(
        [schema.field(name) for name in KEY_COLUMNS]
        + [pa.field("score", pa.float32()), pa.field("scored_by", pa.int32())]
    )
    with parquet_writer(path, schema) as writer:
        for file in files:
            for batch in parquet_batches(file, None, BATCH_ROWS):
                scores, scored_by = score(batch, feature_matrix(batch, feature_columns))
                columns = [batch.column(name) for name in KEY_COLUMNS]
                columns += [pa.array(scores.astype(np.float32)), pa.array(scored_by.astype(np.int32))]
                writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=schema))
                if kept is not None:
                    kept.add(batch, {"score": scores, **{c: batch.column(c).to_numpy() for c in l1_columns}})


def _count_videos(files: list[str]) -> int:
    videos: set[str] = set()
    for path in files:
        for batch in parquet_batches(path, ["video_id"], BATCH_ROWS):
            videos.update(_video_ids(batch))
    return len(videos)


class Executor(base_executor.BaseExecutor):
    def Do(  # noqa: N802 (TFX API)
        self,
        input_dict: dict[str, list[artifact.Artifact]],
        output_dict: dict[str, list[artifact.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        with memory_returned_when_freed():  # the sort's and each fold's freed memory is not kept
            self._train_and_score(input_dict, output_dict, exec_properties)

    def _train_and_score(
        self,
        input_dict: dict[str, list[artifact.Artifact]],
        output_dict: dict[str, list[artifact.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        config = parse_lightgbm_config(exec_properties["config_yaml"], exec_properties["config_source"])
        k = exec_properties["gap_k"]
        features = input_dict["features"][0]
        scores_out, model_out, metrics_out = (output_dict[key][0] for key in ("scores", "model", "metrics"))
        feature_columns = features.get_json_value_custom_property("feature_columns")
        model_names = features.get_json_value_custom_property("model_names")
        available = standard_artifact_utils.decode_split_names(features.split_names)
        files = {
            split: parquet_files(standard_artifact_utils.get_split_uri([features], split))
            for split in (OUT_OF_FOLD, HOLDOUT, TEST)
            if split == OUT_OF_FOLD or split in available
        }
        scratch = os.path.join(model_out.uri, SCRATCH_DIR)
        columns = list(dict.fromkeys(["video_id", "fold", "target", *feature_columns]))
        boosters, fold_models = {}, {}
        try:
            rows = sort_rows(files[OUT_OF_FOLD], columns, scratch, BUCKET_BYTES)
            videos = {split: _count_videos(paths) for split, paths in files.items() if split != OUT_OF_FOLD}
            check_split_counts(features, {OUT_OF_FOLD: rows.videos, **videos})
            for fold in rows.folds:
                boosters[fold], fold_models[str(fold)] = train_fold(rows, feature_columns, config, fold)
                release_freed_memory()  # the fold's Datasets and row groups
                write_text(
                    os.path.join(model_out.uri, f"fold_{fold}.txt"),
                    boosters[fold].model_to_string(num_iteration=boosters[fold].best_iteration),
                )
                log.info("L2 fold %d: best iteration %d", fold, fold_models[str(fold)]["best_iteration"])
        finally:
            if tf.io.gfile.exists(scratch):
                tf.io.gfile.rmtree(scratch)

        def predict(booster: lgb.Booster, matrix: np.ndarray) -> np.ndarray:
            return booster.predict(matrix, num_iteration=booster.best_iteration)

        def out_of_fold(batch: pa.RecordBatch, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            folds = batch.column("fold").to_numpy()
            scores = np.zeros(batch.num_rows, np.float32)  # as stored: the GAPs see float32 OOF scores
            for fold, booster in boosters.items():
                held_out = folds == fold
                if held_out.any():
                    scores[held_out] = predict(booster, matrix[held_out])
            return scores, folds

        def averaged(batch: pa.RecordBatch, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            total = np.zeros(batch.num_rows)
            for booster in boosters.values():
                total += predict(booster, matrix)
            return total / len(boosters), np.full(batch.num_rows, AVERAGED)

        l1_columns = _score_columns(feature_columns, model_names)
        oof = TopCandidates(k, ["score"])
        holdout = TopCandidates(k, ["score", *l1_columns])
        for split, paths in files.items():
            path = os.path.join(scores_out.uri, f"Split-{split}", "scores.parquet")
            if split == OUT_OF_FOLD:
                _score_split(paths, path, feature_columns, out_of_fold, oof)
            elif split == HOLDOUT:
                _score_split(paths, path, feature_columns, averaged, holdout, l1_columns)
            else:
                _score_split(paths, path, feature_columns, averaged)
        scores_out.split_names = standard_artifact_utils.encode_split_names(list(files))
        scores_out.set_json_value_custom_property("fold_models", fold_models)

        report: dict[str, Any] = {
            "k": k,
            "fold_gap": oof.gaps(["score"], by_fold=True),
            "oof_gap": oof.gaps(["score"])["score"],
        }
        if HOLDOUT in files:
            holdout_gaps = holdout.gaps(["score", *l1_columns])
            report["holdout_gap"] = holdout_gaps["score"]
            report["l1_holdout_gap"] = {
                name: holdout_gaps[column] for name, column in zip(model_names, l1_columns, strict=True)
            }
            report["best_l1_holdout_gap"] = max(report["l1_holdout_gap"].values())
        folds_info = {"feature_columns": feature_columns, "folds": fold_models}
        write_json(os.path.join(model_out.uri, "folds.json"), folds_info)
        write_json(os.path.join(metrics_out.uri, "metrics.json"), report)
        for key, value in report.items():
            metrics_out.set_json_value_custom_property(key, value)
        log.info("L2 stage report: %s", json.dumps(report))


def _score_columns(feature_columns: list[str], model_names: list[str]) -> list[str]:
    """The `score_<model>` feature column of each model, in model order."""
    columns = [
        c
        for c in feature_columns
        if c.startswith("score_") and c not in {"score_mean", "score_max", "score_std"}
    ]
    if len(columns) != len(model_names):
        raise ValueError(f"expected one score column per model {model_names}, got {columns}")
    return columns
