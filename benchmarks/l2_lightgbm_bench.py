"""L2LightGBM memory: peak RSS (ru_maxrss) of the executor on generated candidate rows at several sizes.

Per size: out-of-fold rows (`--rows`, 20 candidates per video, 5 folds, 8 Parquet files) and a tenth of that
each for holdout and test, L2Features' columns for --models models; then the L2LightGBM executor (30 rounds)
in a fresh subprocess with a sort budget of --bucket-mb. Target: RSS grows by LightGBM's binned Datasets and
the few bytes per row README "Sizing" names, not by the rows' width.

With --lightgbm-only ROWS,...: LightGBM alone, no executor, per size and --source a fresh subprocess that
builds one fold's Datasets as train_fold does (ROWS training rows, a tenth of them the validation slice;
L2Features' 2M + 6 columns, class_id categorical over 3862 classes, 1.5% positive targets) from one float32
matrix ("numpy") or from lgb.Sequence row groups of float64 rows like BucketRows' ("sequence"), trains the
executor's params (`--lightgbm-params` JSON overrides them, for attribution), and reports the peak RSS
(VmHWM, reset per phase) beyond the RSS after imports against README "Sizing"'s ROWS x (2M + 42) B.

    python -m benchmarks.l2_lightgbm_bench [--rows 200000,800000] [--models 4] [--bucket-mb 16]
    python -m benchmarks.l2_lightgbm_bench --lightgbm-only 600000,2400000 --models 20 [--source numpy]
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import numbers  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import lightgbm as lgb  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from benchmarks.common import print_table, status_mb  # noqa: E402

CANDIDATES, FOLDS, CLASSES = 20, 5, 1000
ROW_GROUP_ROWS = 50_000  # row groups of a bounded size, as Beam's Parquet sink writes them
CONFIG = """
num_boost_round: 30
early_stopping_rounds: 10
params: {num_leaves: 31, num_threads: 2}
"""


def _split_rows(split: str, videos: int, models: int, seed: int) -> pa.Table:
    """`videos` x CANDIDATES rows with L2Features' columns (scores carry signal on the targets)."""
    rng = np.random.default_rng(seed)
    video = np.repeat(np.arange(videos), CANDIDATES)
    target = (rng.random(video.size) < 0.15).astype(np.int8)
    labelled = split != "test"
    target = target if labelled else np.zeros_like(target)
    num_labels = np.repeat(target.reshape(videos, CANDIDATES).sum(1) + labelled, CANDIDATES).astype(np.int32)
    columns = {
        "video_id": pa.array([f"{split}{v:09d}" for v in range(videos)]).take(pa.array(video)),
        "fold": (video % FOLDS if split == "oof" else np.full(video.size, -1)).astype(np.int32),
        "class_id": ((video * 7 + np.tile(np.arange(CANDIDATES), videos) * 37) % CLASSES).astype(np.int32),
        "target": target,
        "num_labels": num_labels,
    }
    scores = []
    for m in range(models):
        score = np.clip(0.4 * target + 0.6 * rng.random(video.size), 0, 1).astype(np.float32)
        ranks = np.argsort(np.argsort(-score.reshape(videos, CANDIDATES), axis=1), axis=1) + 1
        columns[f"score_m{m}"], columns[f"rank_m{m}"] = score, ranks.ravel().astype(np.int32)
        scores.append(score)
    stacked = np.stack(scores, axis=1)
    columns.update(
        score_mean=stacked.mean(1).astype(np.float32),
        score_max=stacked.max(1).astype(np.float32),
        score_std=stacked.std(1).astype(np.float32),
        topk_count=np.full(video.size, models, np.int32),
        prior=rng.random(video.size).astype(np.float32),
    )
    return pa.table(columns)


def write_features(directory: Path, rows: int, models: int) -> dict:
    """The generated splits as Parquet files under `directory`; the artifact's custom properties."""
    videos = {
        "oof": rows // CANDIDATES,
        "holdout": rows // CANDIDATES // 10,
        "test": rows // CANDIDATES // 10,
    }
    for seed, (split, count) in enumerate(videos.items()):
        table = _split_rows(split, count, models, seed)
        (directory / f"Split-{split}").mkdir(parents=True)
        files = 8 if split == "oof" else 2
        step = -(-table.num_rows // files)
        for part in range(files):
            path = directory / f"Split-{split}" / f"part-{part}.parquet"
            pq.write_table(table.slice(part * step, step), path, row_group_size=ROW_GROUP_ROWS)
    names = [f"m{m}" for m in range(models)]
    features = [
        name for name in table.column_names if name not in {"video_id", "fold", "target", "num_labels"}
    ]
    return {"split_counts": videos, "feature_columns": features, "model_names": names}


def run_executor(directory: Path, properties: dict, bucket_mb: int) -> dict:
    """Runs L2LightGBM on the features under `directory` in this process: seconds and peak RSS."""
    from tfx.types import standard_artifact_utils, standard_artifacts

    from components.artifacts import CandidateFeatures, CandidateScores, StageMetrics
    from components.l2_lightgbm import executor

    executor.BUCKET_BYTES = bucket_mb << 20
    features = CandidateFeatures()
    features.uri = str(directory / "features")
    features.split_names = standard_artifact_utils.encode_split_names(["oof", "holdout", "test"])
    for key, value in properties.items():
        features.set_json_value_custom_property(key, value)
    outputs = {"scores": CandidateScores(), "model": standard_artifacts.Model(), "metrics": StageMetrics()}
    for key, output in outputs.items():
        output.uri = str(directory / key)
    start = time.perf_counter()
    executor.Executor().Do(
        {"features": [features]},
        {key: [output] for key, output in outputs.items()},
        {"config_yaml": CONFIG, "config_source": "bench.yaml", "gap_k": 20},
    )
    return {
        "seconds": round(time.perf_counter() - start, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "oof_gap": outputs["metrics"].get_json_value_custom_property("oof_gap"),
    }


# --lightgbm-only: candidate rows of a fold, generated a row group at a time from (seed, group)
LGB_CLASSES, LGB_POSITIVE, LGB_GROUP_ROWS, LGB_SEQUENCE_ROWS = 3862, 0.015, 65_536, 1 << 20
_CLASS_P = 1.0 / (np.arange(LGB_CLASSES) + 10.0)  # a long tail of candidate classes
_CLASS_P /= _CLASS_P.sum()


def _group_targets(seed: int, group: int) -> np.ndarray:
    return np.random.default_rng([seed, group, 0]).random(LGB_GROUP_ROWS) < LGB_POSITIVE


def _group_features(seed: int, group: int, models: int) -> np.ndarray:
    """Row group `group` as float64 [LGB_GROUP_ROWS, 2M + 6] in L2Features' column order: class_id, score and
    rank per model (scores carry signal on the targets), score_mean/max/std, topk_count, prior."""
    rng = np.random.default_rng([seed, group, 1])
    target = _group_targets(seed, group)
    class_id = rng.choice(LGB_CLASSES, LGB_GROUP_ROWS, p=_CLASS_P)
    scores = np.clip(0.25 * target[:, None] + rng.random((LGB_GROUP_ROWS, models)), 0, 1).astype(np.float32)
    ranks = rng.integers(1, 21, (LGB_GROUP_ROWS, models))
    per_model = np.stack([scores, ranks], axis=2).reshape(LGB_GROUP_ROWS, 2 * models)
    summary = [
        scores.mean(1),
        scores.max(1),
        scores.std(1),
        rng.integers(1, 21, LGB_GROUP_ROWS),
        _CLASS_P[class_id].astype(np.float32),
    ]
    return np.column_stack([class_id, per_model, *summary]).astype(np.float64)


def _labels(seed: int, rows: int) -> np.ndarray:
    groups = range(-(-rows // LGB_GROUP_ROWS))
    return np.concatenate([_group_targets(seed, g) for g in groups])[:rows].astype(np.float32)


class GeneratedRows(lgb.Sequence):
    """Generated rows [start, stop) of `seed`, float64 as BucketRows gives them, a row group at a time."""

    batch_size = LGB_GROUP_ROWS

    def __init__(self, seed: int, start: int, stop: int, models: int) -> None:
        self._seed, self._start, self._stop, self._models = seed, start, stop, models
        self._group, self._matrix = -1, np.empty((0, 2 * models + 6))

    def __len__(self) -> int:
        return self._stop - self._start

    def __getitem__(self, index: int | slice) -> np.ndarray:
        if isinstance(index, numbers.Integral):
            group, offset = divmod(self._start + int(index), LGB_GROUP_ROWS)
            return self._row_group(group)[offset]
        positions = self._start + np.arange(*index.indices(len(self)))
        groups = positions // LGB_GROUP_ROWS
        parts = [self._row_group(g)[positions[groups == g] - g * LGB_GROUP_ROWS] for g in np.unique(groups)]
        return np.concatenate(parts) if parts else np.empty((0, 2 * self._models + 6))

    def _row_group(self, group: int) -> np.ndarray:
        if group != self._group:
            self._group, self._matrix = group, _group_features(self._seed, group, self._models)
        return self._matrix


def _generated_data(seed: int, rows: int, models: int, source: str) -> np.ndarray | list[GeneratedRows]:
    """`rows` generated rows: one float32 matrix ("numpy") or Sequences of LGB_SEQUENCE_ROWS ("sequence")."""
    if source == "sequence":
        bounds = [*range(0, rows, LGB_SEQUENCE_ROWS), rows]
        return [GeneratedRows(seed, a, b, models) for a, b in zip(bounds, bounds[1:], strict=False)]
    matrix = np.empty((rows, 2 * models + 6), np.float32)
    for start in range(0, rows, LGB_GROUP_ROWS):
        stop = min(start + LGB_GROUP_ROWS, rows)
        matrix[start:stop] = _group_features(seed, start // LGB_GROUP_ROWS, models)[: stop - start]
    return matrix


def _reset_peak() -> None:
    """Sets VmHWM to the current RSS (Linux clear_refs 5)."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def run_lightgbm(rows: int, models: int, source: str, overrides: dict[str, Any]) -> dict:
    """One fold's Datasets and booster as train_fold and fit_booster build them, on `rows` generated rows (a
    tenth of them the validation slice): MB beyond the RSS after imports at each phase."""
    from components.l2_features.executor import feature_columns
    from components.l2_lightgbm.config import parse_lightgbm_config

    config = parse_lightgbm_config(CONFIG, "bench.yaml")
    params = {**config.lightgbm_params(), **overrides}
    columns = feature_columns([f"m{m}" for m in range(models)])
    sizes = {"train": rows - rows // 10, "valid": rows // 10}
    _reset_peak()
    base = status_mb("VmRSS")
    data = {part: _generated_data(seed, n, models, source) for seed, (part, n) in enumerate(sizes.items())}
    raw = status_mb("VmRSS") - base

    def dataset(part: str, reference: lgb.Dataset | None = None) -> lgb.Dataset:
        return lgb.Dataset(
            data.pop(part),
            label=_labels(list(sizes).index(part), sizes[part]),
            feature_name=columns,
            categorical_feature=["class_id"],
            reference=reference,
            free_raw_data=True,
            params=params,
        )

    start = time.perf_counter()
    _reset_peak()
    train_set = dataset("train").construct()
    construct_peak = status_mb("VmHWM") - base
    valid_set = dataset("valid", reference=train_set).construct()
    constructed = status_mb("VmRSS") - base
    construct_seconds = time.perf_counter() - start
    _reset_peak()
    booster = lgb.train(  # as fit_booster, with `overrides`
        params,
        train_set,
        num_boost_round=config.num_boost_round,
        valid_sets=[valid_set],
        callbacks=[lgb.early_stopping(config.early_stopping_rounds, verbose=False)],
    )
    train_peak = status_mb("VmHWM") - base
    bins = [train_set.feature_num_bin(i) for i in range(len(columns))]
    return {
        "construct_s": round(construct_seconds, 1),
        "train_s": round(time.perf_counter() - start - construct_seconds, 1),
        "rounds": booster.current_iteration(),
        "class_bins": bins[0],
        "max_other_bins": max(bins[1:]),
        "baseline_mb": round(base),
        "raw_mb": round(raw),
        "construct_peak_mb": round(construct_peak),
        "constructed_mb": round(constructed),
        "train_peak_mb": round(train_peak),
    }


def compare_lightgbm(sizes: list[int], models: int, sources: list[str], overrides: str) -> None:
    """run_lightgbm per size and source, each in a fresh subprocess; its table against README's formula."""
    results = []
    for source in sources:
        for rows in sizes:
            command = [sys.executable, "-m", "benchmarks.l2_lightgbm_bench", "--models", str(models)]
            command += ["--lightgbm-child", f"{rows},{source}", "--lightgbm-params", overrides]
            result = subprocess.run(command, check=True, capture_output=True, text=True)
            results.append({"rows": rows, "source": source, **json.loads(result.stdout.splitlines()[-1])})
            print(json.dumps(results[-1]), flush=True)
    table, smaller = [], {}
    for r in results:
        rest = r["train_peak_mb"] - r["rows"] * (2 * models + 42) / 2**20
        last = smaller.get(r["source"])
        growth = (rest - last[1]) * 2**20 / (r["rows"] - last[0]) if last else "-"
        table.append((r["source"], r["rows"], r["train_peak_mb"], r["train_peak_mb"] - rest, rest))
        table[-1] += (rest * 2**20 / r["rows"], growth)
        smaller[r["source"]] = (r["rows"], rest)
    print_table(
        f"LightGBM alone, M = {models}: peak RSS while training beyond the RSS after imports (MB), README "
        f"'Sizing' rows x (2M + 42) B, the rest; B per row and per row added since the smaller size",
        ("source", "rows", "peak MB", "formula MB", "rest MB", "rest B/row", "rest B/added row"),
        table,
        lambda v: f"{v:.0f}",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="200000,800000", help="out-of-fold rows per size, comma-separated")
    parser.add_argument("--models", type=int, default=4)
    parser.add_argument("--bucket-mb", type=int, default=16)
    parser.add_argument("--out", default="bench_out/l2_lightgbm")
    parser.add_argument("--lightgbm-only", help="LightGBM alone: training rows per size, comma-separated")
    parser.add_argument("--source", default="numpy,sequence", help="with --lightgbm-only: numpy, sequence")
    parser.add_argument("--lightgbm-params", default="{}", help="with --lightgbm-only: JSON param overrides")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--lightgbm-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.lightgbm_child:
        rows, source = args.lightgbm_child.split(",")
        print(json.dumps(run_lightgbm(int(rows), args.models, source, json.loads(args.lightgbm_params))))
        return
    if args.lightgbm_only:
        sizes = [int(value) for value in args.lightgbm_only.split(",")]
        compare_lightgbm(sizes, args.models, args.source.split(","), args.lightgbm_params)
        return
    if args.child:
        directory = Path(args.child)
        properties = json.loads((directory / "properties.json").read_text())
        print(json.dumps(run_executor(directory, properties, args.bucket_mb)))
        return
    for rows in (int(value) for value in args.rows.split(",")):
        directory = Path(args.out) / f"rows{rows}"
        shutil.rmtree(directory, ignore_errors=True)
        properties = write_features(directory / "features", rows, args.models)
        (directory / "properties.json").write_text(json.dumps(properties))
        command = [sys.executable, "-m", "benchmarks.l2_lightgbm_bench", "--child", str(directory)]
        result = subprocess.run(
            [*command, "--bucket-mb", str(args.bucket_mb)], check=True, capture_output=True, text=True
        )
        print(
            json.dumps(
                {"rows": rows, "bucket_mb": args.bucket_mb, **json.loads(result.stdout.splitlines()[-1])}
            )
        )


if __name__ == "__main__":
    main()
