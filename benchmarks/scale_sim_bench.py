"""Scale simulation of the stages after L1 (issue #15): synthetic L1 predictions, no training.

Per size (`--videos`, comma-separated) it writes, streamed to disk, a fold-split Examples artifact and
--models assembled L1 Predictions artifacts (oof/holdout/test, dense float32 scores over --classes classes,
uncompressed: the one prediction format L1Assemble hands to L2Merge, `trainer.predictions`) with
`benchmarks.l2_bench.write_data` (correlated models, higher scores on each video's labels). Then every
stage's executor runs on them, each in a fresh subprocess (Beam DirectRunner in_memory, one worker, as the
pipeline's local runs), in pipeline order:

- merge: L2Merge (the L1 predictions joined with the fold split; per video only the candidates)
- features: L2Features (one Parquet row per candidate)
- lightgbm: L2LightGBM (the stack; --rounds boosting rounds, no early stop before them)
- soft_labels: SoftLabels (the stack's OOF scores joined into the student's examples)
- head_examples: HeadExamples (the student examples joined with --towers tower predictions; the first
  --towers L1 Predictions artifacts stand in for the towers' assembled predictions, same format)
- evaluation: StudentEvaluator's streaming path (trainer.metrics.TopRows) on the holdout: every L1 model,
  their mean (memory-mapped sum) and the stack, GAP/Hit@1/PERR/MAP and 1000 bootstrap resamples; the
  SavedModel rows (served towers, EnsembleModel) are left out (there is no trained student)

Per stage: wall and CPU seconds (and of them system seconds), disk reads (page-cache misses), peak RSS of
the child (VmHWM) and its RSS after imports, bytes written
(`components.splits.directory_bytes` of its outputs). Then, smallest -> largest size, the targets of issue
#15: peak RSS x <= 1.25 (L2LightGBM's binned Datasets are reported separately, by LightGBM's own (2M + 42) B
a row) and time <= 1.1x of linear. Each size's data is deleted after its run; a size whose estimated bytes
exceed the free disk is refused before anything is written. Raw results: <out>/results.json.

    python -m benchmarks.scale_sim_bench [--videos 100000,200000,400000] [--models 20] [--classes 3862]
    python -m benchmarks.scale_sim_bench --videos 500,1000,2000   # ~25 min on 2 cores, 0.7 GB of disk
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

import numpy as np  # noqa: E402

from benchmarks import common, l2_bench  # noqa: E402
from benchmarks.l2_bench import TOP_K, DataSpec  # noqa: E402
from pipeline.config import PipelineConfig  # noqa: E402

STAGES = ("merge", "features", "lightgbm", "soft_labels", "head_examples", "evaluation")
RSS_TARGET, TIME_TARGET = 1.25, 1.1
GAP_K, RESAMPLES = 20, 1000
LIGHTGBM_CONFIG = """
num_boost_round: {rounds}
early_stopping_rounds: {rounds}
params: {{num_leaves: 31, num_threads: 2}}
"""
# Bytes per video, measured on `l2_bench.write_data`'s data (run A) and rounded up: a fold-split example
# (4.7 KB), a student example with its soft label index (6.9 KB), a head example besides its towers' dense
# scores (5.8 KB); per candidate (K <= models x top_k): the merged record's 8 B per model + 4 B, the Parquet
# row's 8 B per model + ~60 B, the stack's score row ~30 B.
_EXAMPLE_BYTES, _STUDENT_BYTES, _HEAD_BYTES = 5_000, 7_500, 6_000
_MERGED_BYTES, _FEATURE_BYTES, _SCORE_BYTES = 4, 60, 30


def disk_by_stage(videos: int, models: int, classes: int, towers: int) -> dict[str, int]:
    """Upper bounds of the bytes on disk while each stage runs: the inputs, the outputs of it and of every
    earlier stage (kept until the size is done) and its own scratch, which it removes when it ends (the joins'
    shard copies of their inputs, L2LightGBM's unsorted and sorted buckets)."""
    candidates = min(classes, models * TOP_K)
    dense = 4 * classes  # one model's float32 scores of a video
    inputs = _EXAMPLE_BYTES + dense * models
    outputs = {
        "merge": candidates * (8 * models + _MERGED_BYTES),
        "features": candidates * (8 * models + _FEATURE_BYTES),
        "lightgbm": candidates * _SCORE_BYTES,
        "soft_labels": _STUDENT_BYTES,
        "head_examples": _HEAD_BYTES + dense * towers,
        "evaluation": dense,  # the L1 models' summed scores, memory-mapped (at most every video)
    }
    scratch = {
        "merge": inputs,
        "features": 0,
        "lightgbm": 2 * outputs["features"],
        "soft_labels": _EXAMPLE_BYTES + outputs["lightgbm"],
        "head_examples": _STUDENT_BYTES + dense * towers,
        "evaluation": 0,
    }
    kept, peaks = inputs, {}
    for stage in STAGES:
        kept += outputs[stage]
        peaks[stage] = videos * (kept + scratch[stage])
    return peaks


def estimated_bytes(videos: int, models: int, classes: int, towers: int) -> int:
    """Upper bound of the bytes one size needs on disk at once: its largest stage's `disk_by_stage`."""
    return max(disk_by_stage(videos, models, classes, towers).values())


def check_disk(directory: Path, sizes: list[int], models: int, classes: int, towers: int) -> int:
    """The estimated bytes of the largest size (sizes run one after another, each deleted after its run);
    SystemExit with the estimate and the free bytes when they do not fit."""
    directory.mkdir(parents=True, exist_ok=True)
    needed = estimated_bytes(max(sizes), models, classes, towers)
    free = shutil.disk_usage(directory).free
    if needed > free:
        raise SystemExit(
            f"scale_sim_bench: {max(sizes)} videos x {models} models x {classes} classes need up to "
            f"{needed / 1e9:.1f} GB on disk, {directory} has {free / 1e9:.1f} GB free; use smaller --videos"
        )
    return needed


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM; the parent that generated the data does not count)."""
    return common.status_mb("VmHWM")


def mean_candidates(models: int, classes: int, videos: int = 200, seed: int = 1) -> float:
    """Mean candidates per video (K of L2Merge's `candidate_record`, top_k TOP_K) on `videos` videos of
    `l2_bench.write_data`'s generator at `models` models: K at a model count too large to run."""
    from components.l2_merge.executor import candidate_record

    rng = np.random.default_rng(seed)
    labels = l2_bench.chunk_labels(rng, videos, classes)
    scores = l2_bench._chunk_scores(rng, labels, DataSpec(videos, models, classes))
    sizes = [candidate_record("", 0, (), scores[:, v], TOP_K).classes.size for v in range(videos)]
    return float(np.mean(sizes))


# --------------------------------------------------------------------------------- stages (subprocesses)


def _save_artifacts(root: Path, artifacts: dict) -> None:
    for key, artifact in artifacts.items():
        (root / "artifacts" / f"{key}.json").write_text(json.dumps(artifact.to_json_dict()))


def load_artifact(root: Path, key: str):
    from tfx.types.artifact import Artifact

    return Artifact.from_json_dict(json.loads((root / "artifacts" / f"{key}.json").read_text()))


def _outputs(root: Path, **types) -> dict:
    """Fresh output artifacts under root/work/<key>."""
    outputs = {}
    for key, artifact_type in types.items():
        outputs[key] = artifact_type()
        outputs[key].uri = str(root / "work" / key)
        shutil.rmtree(outputs[key].uri, ignore_errors=True)
    return outputs


def _evaluate(examples, models, stack_scores, classes: int, scratch: Path) -> dict:
    """StudentEvaluator's metrics of the L1 models, their mean and the stack on the holdout (streamed)."""
    from components.student_evaluator import executor as evaluator
    from trainer.metrics import bootstrap_gaps_of_rows, evaluate_rows

    videos = evaluator.split_labels(examples, classes)
    total = np.lib.format.open_memmap(scratch / "l1_sum.npy", "w+", np.float32, (len(videos.ids), classes))
    rows = {}
    for model in models:
        name = model.get_string_custom_property("config_name")
        rows[name] = evaluator.scored_rows(name, videos, evaluator.prediction_batches(model), GAP_K, total)
    rows["l1_mean"] = evaluator.scored_rows(
        "l1_mean", videos, evaluator.array_batches(videos.ids, total, len(models)), GAP_K
    )
    del total
    rows["stack"] = evaluator.scored_rows(
        "stack", videos, evaluator.stack_batches(stack_scores, videos), GAP_K
    )
    holdout = {name: evaluate_rows(model_rows) for name, model_rows in rows.items()}
    gaps = bootstrap_gaps_of_rows(rows, RESAMPLES, 0)
    for name, metrics in holdout.items():
        metrics["gap_interval"] = np.percentile(gaps[name], [2.5, 97.5]).tolist()
    return {"holdout_videos": len(videos.ids), "holdout": holdout}


def run_stage(
    stage: str, root: Path, rounds: int, towers: int, shard_mb: float, sort_mb: int | None = None
) -> dict:
    """One stage on the data set in `root`, in this process: seconds, CPU seconds, RSS, bytes written."""
    from tfx.types import standard_artifacts

    from components import artifacts as types
    from components.splits import directory_bytes

    spec = DataSpec(**json.loads((root / "spec.json").read_text()))
    examples, models, _, _ = l2_bench._artifacts(root, spec)
    import_rss = peak_rss_mb()
    start, times = time.perf_counter(), os.times()
    disk_read = common.io_mb("read_bytes")
    extra: dict = {}
    if stage == "merge":
        from components.l2_merge.executor import Executor

        outputs = _outputs(root, merged=types.MergedPredictions)
        inputs = {"examples": [examples], **{f"predictions_{m}": [p] for m, p in enumerate(models)}}
        properties = {"num_models": spec.models, "top_k": TOP_K, "shard_mb": shard_mb}
        Executor(l2_bench._context()).Do(inputs, {k: [v] for k, v in outputs.items()}, properties)
    elif stage == "features":
        from components.l2_features.executor import Executor

        outputs = _outputs(root, features=types.CandidateFeatures)
        inputs = {"merged": [load_artifact(root, "merged")]}
        Executor(l2_bench._context()).Do(inputs, {k: [v] for k, v in outputs.items()}, {})
        extra["candidate_rows"] = outputs["features"].get_json_value_custom_property("rows")
    elif stage == "lightgbm":
        from components.l2_lightgbm import executor as l2_lightgbm
        from components.l2_lightgbm.executor import Executor

        if sort_mb:
            l2_lightgbm.BUCKET_BYTES = sort_mb << 20

        outputs = _outputs(
            root, scores=types.CandidateScores, model=standard_artifacts.Model, metrics=types.StageMetrics
        )
        properties = {
            "config_yaml": LIGHTGBM_CONFIG.format(rounds=rounds),
            "config_source": "scale_sim_bench",
            "gap_k": GAP_K,
        }
        inputs = {"features": [load_artifact(root, "features")]}
        Executor().Do(inputs, {k: [v] for k, v in outputs.items()}, properties)
        extra["oof_gap"] = outputs["metrics"].get_json_value_custom_property("oof_gap")
        extra["holdout_gap"] = outputs["metrics"].get_json_value_custom_property("holdout_gap")
    elif stage == "soft_labels":
        from components.soft_labels.executor import Executor

        outputs = _outputs(
            root, soft_labels=types.SoftLabelIndex, student_examples=standard_artifacts.Examples
        )
        inputs = {"scores": [load_artifact(root, "scores")], "examples": [examples]}
        properties = {"shard_mb": shard_mb}
        Executor(l2_bench._context()).Do(inputs, {k: [v] for k, v in outputs.items()}, properties)
    elif stage == "head_examples":
        from components.head_examples.executor import Executor, towers_key

        outputs = _outputs(root, head_examples=standard_artifacts.Examples)
        inputs = {"examples": [load_artifact(root, "student_examples")]}
        inputs.update({towers_key(t): [models[t]] for t in range(towers)})
        properties = {"num_towers": towers, "shard_mb": shard_mb}
        Executor(l2_bench._context()).Do(inputs, {k: [v] for k, v in outputs.items()}, properties)
    else:
        outputs = {}
        scratch = root / "work" / "evaluation"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        report = _evaluate(examples, models, load_artifact(root, "scores"), spec.classes, scratch)
        (scratch / "l1_sum.npy").unlink()
        (scratch / "metrics.json").write_text(json.dumps(report))
        extra["holdout_videos"] = report["holdout_videos"]
        extra["stack_gap"] = report["holdout"]["stack"]["gap"]
        extra["l1_mean_gap"] = report["holdout"]["l1_mean"]["gap"]
    seconds, ended = time.perf_counter() - start, os.times()
    extra["user_s"], extra["system_s"] = ended.user - times.user, ended.system - times.system
    extra["disk_read_mb"] = common.io_mb("read_bytes") - disk_read  # page cache misses
    _save_artifacts(root, outputs)
    written = [artifact.uri for artifact in outputs.values()] or [str(root / "work" / "evaluation")]
    return {
        "seconds": seconds,
        "cpu_s": extra["user_s"] + extra["system_s"],
        "import_rss_mb": import_rss,
        "peak_rss_mb": peak_rss_mb(),
        "bytes_written": sum(directory_bytes(uri) for uri in written),
        **extra,
    }


def stage_subprocess(stage: str, root: Path, args: argparse.Namespace) -> dict:
    """`run_stage` in a fresh Python process (its own peak RSS); the result is its last stdout line."""
    command = [sys.executable, "-m", "benchmarks.scale_sim_bench", "--stage", stage, "--data", str(root)]
    command += ["--rounds", str(args.rounds), "--towers", str(args.towers), "--shard-mb", str(args.shard_mb)]
    command += ["--sort-mb", str(args.sort_mb)] if args.sort_mb else []
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{stage} on {root} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------ report


def binned_bytes(candidate_rows: dict[str, int], models: int, folds: int = l2_bench.NUM_FOLDS) -> int:
    """LightGBM alone (measured in isolation): one fold's Datasets, (F-1)/F x R_oof training rows x (2M + 42)
    B (README "Sizing" adds the executor's measured rest: 2M + 90 B a row)."""
    return int((folds - 1) / folds * candidate_rows["oof"] * (2 * models + 42))


def print_size(videos: int, results: dict[str, dict], models: int) -> None:
    rows = []
    for stage in STAGES:
        r = results[stage]
        rows.append(
            (
                stage,
                r["seconds"],
                r["cpu_s"],
                r["system_s"],
                r["disk_read_mb"],
                r["seconds"] / videos * 1e3,
                r["peak_rss_mb"],
                r["peak_rss_mb"] - r["import_rss_mb"],
                r["bytes_written"] / 2**20,
                r["bytes_written"] / videos / 1e3,
            )
        )
    candidates = results["features"]["candidate_rows"]
    k = sum(candidates.values()) / videos
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    common.print_table(
        f"{videos} videos x {models} models: K = {k:.1f} candidates per video; load average {load}",
        ("stage", "wall s", "CPU s", "of it system s", "disk read MB", "ms/video")
        + ("peak RSS MB", "growth MB", "written MB", "KB/video"),
        rows,
        lambda v: f"{v:.1f}" if abs(v) < 1000 else f"{v:.0f}",
    )
    binned = binned_bytes(candidates, models) / 2**20
    print(f"   L2LightGBM binned Datasets (LightGBM alone, (F-1)/F x R_oof x (2M + 42) B): {binned:.0f} MB")


def print_ratios(results: dict[int, dict[str, dict]], models: int) -> list[tuple]:
    """Smallest -> largest: peak RSS ratio, time vs linear, with the targets; returns the rows."""
    small, large = min(results), max(results)
    rows = []
    for stage in STAGES:
        a, b = results[small][stage], results[large][stage]
        rss = b["peak_rss_mb"] / a["peak_rss_mb"]
        linear = (b["seconds"] / a["seconds"]) / (large / small)
        rss_target = "separate" if stage == "lightgbm" else ("ok" if rss <= RSS_TARGET else "MISS")
        rows.append((stage, rss, rss_target, linear, "ok" if linear <= TIME_TARGET else "MISS"))
    common.print_table(
        f"{small} -> {large} videos: peak RSS ratio (target <= {RSS_TARGET}) and time / linear "
        f"(target <= {TIME_TARGET})",
        ("stage", "RSS x", "RSS target", "time / linear", "time target"),
        rows,
        lambda v: f"{v:.2f}",
    )
    a, b = (binned_bytes(results[n]["features"]["candidate_rows"], models) / 2**20 for n in (small, large))
    peak_a, peak_b = (results[n]["lightgbm"]["peak_rss_mb"] for n in (small, large))
    print(
        f"   lightgbm: binned Datasets {a:.0f} -> {b:.0f} MB (formula); "
        f"peak RSS grew {peak_b - peak_a:.0f} MB; "
        f"peak RSS less the binned Datasets x{(peak_b - b) / max(peak_a - a, 1.0):.2f}"
    )
    return rows


def run_sizes(args: argparse.Namespace) -> None:
    sizes = sorted(int(v) for v in args.videos.split(","))
    out = args.out.absolute()
    needed = check_disk(out, sizes, args.models, args.classes, args.towers)
    print(
        f"scale simulation: {sizes} videos x {args.models} models x {args.classes} classes, top_k {TOP_K}, "
        f"{args.towers} towers; up to {needed / 1e9:.1f} GB on disk under {out}",
        flush=True,
    )
    results_file = out / "results.json"
    results: dict[int, dict] = {}
    for videos in sizes:
        spec = DataSpec(videos, args.models, args.classes)
        root = out / f"data_{videos}v_{args.models}m_{args.classes}c"
        shutil.rmtree(root, ignore_errors=True)
        start = time.perf_counter()
        l2_bench.write_data(spec, root)
        (root / "spec.json").write_text(json.dumps(asdict(spec)))
        (root / "artifacts").mkdir()
        generated = sum(f.stat().st_size for f in root.rglob("*.tfrecord"))
        print(
            f"   generated {videos} videos ({generated / 1e9:.2f} GB) in {time.perf_counter() - start:.0f}s"
        )
        results[videos] = {"input_bytes": generated}
        try:
            for stage in STAGES:
                r = results[videos][stage] = stage_subprocess(stage, root, args)
                print(
                    f"   {videos} {stage}: {r['seconds']:.1f}s, peak RSS {r['peak_rss_mb']:.0f} MB",
                    flush=True,
                )
        finally:
            if not args.keep:
                shutil.rmtree(root, ignore_errors=True)
        print_size(videos, results[videos], args.models)
        record = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "load_average": os.getloadavg(),
            "cpus": os.cpu_count(),
            "settings": {k: str(v) for k, v in vars(args).items()},
            "results": results,
        }
        results_file.write_text(json.dumps(record, indent=1))
    if len(sizes) > 1:
        print_ratios(results, args.models)
    for models in (args.models, args.probe_models):
        record.setdefault("mean_candidates", {})[models] = k = mean_candidates(models, args.classes)
        print(f"   K on the generator at {models} models (200 videos, top_k {TOP_K}): {k:.1f}")
    results_file.write_text(json.dumps(record, indent=1))
    print(f"\nraw results: {results_file}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", default="100000,200000,400000", help="comma-separated data sizes")
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--classes", type=int, default=3862)
    parser.add_argument("--towers", type=int, default=6, help="L1 Predictions reused as tower predictions")
    parser.add_argument("--rounds", type=int, default=30, help="L2LightGBM boosting rounds")
    parser.add_argument("--shard-mb", type=float, default=PipelineConfig.join_shard_mb, help="join shards")
    parser.add_argument("--sort-mb", type=int, help="L2LightGBM's sort bucket (default: its BUCKET_BYTES)")
    parser.add_argument("--probe-models", type=int, default=113, help="models of the K probe (no stages)")
    parser.add_argument("--out", type=Path, default=Path("bench_out/scale_sim"))
    parser.add_argument("--keep", action="store_true", help="keep each size's data (default: deleted)")
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)  # internal: one stage, then exit
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.getLogger().setLevel(logging.WARNING)
    if args.towers > args.models:
        parser.error(f"--towers {args.towers} > --models {args.models}: towers reuse L1 predictions")
    if args.stage:
        result = run_stage(args.stage, args.data, args.rounds, args.towers, args.shard_mb, args.sort_mb)
        print(json.dumps(result))
        return
    run_sizes(args)


if __name__ == "__main__":
    main()
