"""L2LightGBM on a share of its negative rows (issue #15 item 2): holdout GAP and memory against all rows.

At 113 L1 models the stack's binned training rows alone are ~312 GB (BENCHMARKS.md), more than the
`l2_lightgbm` node of configs/kubeflow.yaml. With `negative_fraction` f < 1 in the LightGBM config every
positive candidate row is trained on and a stable, seeded share f of the negative ones, weighted 1 / f.
This measures what that costs: on `l2_bench.write_data`'s synthetic L1 predictions (--videos x --models x
--classes), L2Merge and L2Features run once; then the L2LightGBM executor runs once per --fractions value,
each in a fresh subprocess, on the same rows with the same config (--config, plus the fraction). Per
fraction: rows trained on by the largest fold, LightGBM's binned Datasets as LightGBM alone holds them
((2M + 42) B a training row), peak RSS (VmHWM), seconds, mean best iteration, OOF and holdout GAP@20;
then each fraction's holdout GAP minus fraction 1's, paired: the same holdout videos, a 95% bootstrap
interval over them (--resamples).

    python -m benchmarks.l2_negative_bench [--videos 40000] [--models 4] [--classes 1000]
        [--fractions 1,0.3,0.1] [--config configs/l2/lightgbm.yaml] [--resamples 1000]
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict  # noqa: E402
from pathlib import Path  # noqa: E402

from benchmarks import common, l2_bench, scale_sim_bench  # noqa: E402
from benchmarks.l2_bench import DataSpec  # noqa: E402

GAP_K = 20


def prepare(spec: DataSpec, root: Path) -> None:
    """Synthetic L1 predictions under `root`, then L2Merge and L2Features on them (each in a subprocess)."""
    if (root / "artifacts" / "features.json").exists():
        return
    shutil.rmtree(root, ignore_errors=True)
    l2_bench.write_data(spec, root)
    (root / "spec.json").write_text(json.dumps(asdict(spec)))
    (root / "artifacts").mkdir()
    stage_args = argparse.Namespace(rounds=1, towers=0, shard_mb=0, sort_mb=None)
    for stage in ("merge", "features"):
        result = scale_sim_bench.stage_subprocess(stage, root, stage_args)
        print(f"   {stage}: {result['seconds']:.0f}s", flush=True)


def run_lightgbm(root: Path, fraction: float, config_path: Path) -> dict:
    """The L2LightGBM executor on root's features with `fraction` of the negative rows, in this process."""
    from tfx.types import standard_artifacts

    from components import artifacts as types
    from components.l2_lightgbm.executor import Executor

    config = f"{config_path.read_text().rstrip()}\nnegative_fraction: {fraction}\n"
    outputs = {
        "scores": types.CandidateScores(),
        "model": standard_artifacts.Model(),
        "metrics": types.StageMetrics(),
    }
    for key, output in outputs.items():
        output.uri = str(root / "work" / f"lightgbm_{fraction}" / key)
        shutil.rmtree(output.uri, ignore_errors=True)
    start = time.perf_counter()
    Executor().Do(
        {"features": [scale_sim_bench.load_artifact(root, "features")]},
        {key: [output] for key, output in outputs.items()},
        {"config_yaml": config, "config_source": str(config_path), "gap_k": GAP_K},
    )
    folds = outputs["scores"].get_json_value_custom_property("fold_models").values()
    metrics = outputs["metrics"]
    return {
        "seconds": time.perf_counter() - start,
        "peak_rss_mb": common.status_mb("VmHWM"),
        "train_rows": max(fold["train_rows"] + fold["validation_rows"] for fold in folds),
        "best_iteration": sum(fold["best_iteration"] for fold in folds) / len(folds),
        "oof_gap": metrics.get_json_value_custom_property("oof_gap"),
        "holdout_gap": metrics.get_json_value_custom_property("holdout_gap"),
        "best_l1_holdout_gap": metrics.get_json_value_custom_property("best_l1_holdout_gap"),
        "scores": outputs["scores"].uri,
    }


def lightgbm_subprocess(root: Path, fraction: float, config_path: Path) -> dict:
    command = [sys.executable, "-m", "benchmarks.l2_negative_bench", "--child", str(fraction)]
    done = subprocess.run(
        [*command, "--data", str(root), "--config", str(config_path)], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"L2LightGBM at negative_fraction {fraction} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def holdout_rows(results: dict[float, dict]):
    """The holdout's candidate rows with one score column per fraction (the same rows in every run)."""
    import pyarrow.parquet as pq

    keys = ["video_id", "class_id", "target", "num_labels"]
    rows = None
    for fraction, result in results.items():
        scores = pq.read_table(f"{result['scores']}/Split-holdout", columns=[*keys, "score"]).to_pandas()
        scores = scores.rename(columns={"score": str(fraction)})
        rows = scores if rows is None else rows.merge(scores, on=keys, validate="one_to_one")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=40_000)
    parser.add_argument("--models", type=int, default=4)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--fractions", default="1,0.3,0.1", help="negative_fraction values, comma-separated")
    parser.add_argument("--config", type=Path, default=Path("configs/l2/lightgbm.yaml"))
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path("bench_out/l2_negative"))
    parser.add_argument("--child", type=float, help=argparse.SUPPRESS)  # internal: one fraction, then exit
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.getLogger().setLevel(logging.WARNING)
    if args.child is not None:
        print(json.dumps(run_lightgbm(args.data, args.child, args.config)))
        return
    fractions = sorted({1.0, *(float(f) for f in args.fractions.split(","))}, reverse=True)
    spec = DataSpec(args.videos, args.models, args.classes)
    root = args.out.absolute() / f"data_{spec.videos}v_{spec.models}m_{spec.classes}c"
    print(f"negative sampling: {spec}, fractions {fractions}, config {args.config}", flush=True)
    prepare(spec, root)
    results = {}
    for fraction in fractions:
        results[fraction] = lightgbm_subprocess(root, fraction, args.config)
        print(f"   negative_fraction {fraction}: {results[fraction]['seconds']:.0f}s", flush=True)
    rows = holdout_rows(results)
    table = []
    videos = len(rows["video_id"].unique())
    for fraction, r in results.items():
        difference = "(reference)"
        if fraction < 1:
            _, low, high = l2_bench.paired_gap_interval(rows, str(fraction), "1.0", GAP_K, args.resamples)
            r["holdout_minus_all"] = r["holdout_gap"] - results[1.0]["holdout_gap"]
            r["interval"] = [low, high]
            difference = f"{r['holdout_minus_all']:+.4f} [{low:+.4f}, {high:+.4f}]"
        table.append(
            (
                f"{fraction:g}",
                r["train_rows"],
                r["train_rows"] * (2 * args.models + 42) / 2**20,
                r["peak_rss_mb"],
                r["seconds"],
                r["best_iteration"],
                r["oof_gap"],
                r["holdout_gap"],
                difference,
            )
        )
    common.print_table(
        f"L2LightGBM by negative_fraction, {videos} holdout videos; best L1 holdout GAP "
        f"{results[1.0]['best_l1_holdout_gap']:.4f}; load average {os.getloadavg()[0]:.2f}",
        (
            "fraction",
            "fold rows",
            "binned MB",
            "peak MB",
            "seconds",
            "best iter",
            "OOF GAP",
            "holdout GAP",
            "holdout - all rows [95%]",
        ),
        table,
        lambda v: f"{v:.4f}" if abs(v) < 1 else f"{v:.0f}",
    )
    (args.out / "results.json").write_text(json.dumps({str(f): r for f, r in results.items()}, indent=1))


if __name__ == "__main__":
    main()
