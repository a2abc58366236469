"""L2LightGBM memory: peak RSS (ru_maxrss) of the executor on generated candidate rows at several sizes.

Per size: out-of-fold rows (`--rows`, 20 candidates per video, 5 folds, 8 Parquet files) and a tenth of that
each for holdout and test, L2Features' columns for --models models; then the L2LightGBM executor (30 rounds)
in a fresh subprocess with a sort budget of --bucket-mb. Target: RSS grows by LightGBM's binned Datasets and
the few bytes per row README "Sizing" names, not by the rows' width.

    python -m benchmarks.l2_lightgbm_bench [--rows 200000,800000] [--models 4] [--bucket-mb 16]
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="200000,800000", help="out-of-fold rows per size, comma-separated")
    parser.add_argument("--models", type=int, default=4)
    parser.add_argument("--bucket-mb", type=int, default=16)
    parser.add_argument("--out", default="bench_out/l2_lightgbm")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
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
