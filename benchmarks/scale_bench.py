"""Scaling benchmark: the whole pipeline at several data sizes, wall time and peak RSS per stage.

Per size N (--videos, video-level layout) it generates N videos with --classes classes (pipeline.synth,
reused when the settings match), writes a pipeline config with the reduced L1 set of
benchmarks/configs/scale (logistic + MLP, a fixed 2 epochs, so training cost is linear in videos) and the
two-tower student suite, and runs `yt8m run` on a fresh home in a subprocess while sampling its RSS every
0.2 s. Every node's start/end come from ML Metadata; a stage is the node id up to its first '_'
(L1Trainer_logistic_fold0 -> L1Trainer). Per stage: wall s (summed over its nodes), peak RSS during its
nodes, and growth (peak - RSS when its first node started). --frame-videos adds one run with both layouts
and the frame-level pooling MLP on up to --frames frames per video (YouTube-8M caps at 300).

Linearity check per stage: (t(N) / t(n)) / (N / n) for each size N against the next smaller n; target
<= 1.1. Beam stages' peak-RSS growth should be flat. L2LightGBM's memory is reported with its candidate rows.

    python -m benchmarks.scale_bench [--videos 10000,30000,100000] [--classes 3862] [--folds 3]
                                     [--frame-videos 10000] [--frames 300] [--out bench_out/scale]

Results: <out>/results.json (one entry per run, appended as runs finish) and the tables on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

from benchmarks.common import print_table
from pipeline.synth import SynthConfig, write_dataset

SCALE_CONFIGS = Path(__file__).parent / "configs" / "scale"
LIGHTGBM_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "l2" / "lightgbm.yaml"
VIDEO_L1 = ("logistic", "mlp")
FRAME_L1 = ("pooling_mlp",)
BEAM_STAGES = (
    "VideoExampleGen",
    "FrameExampleGen",
    "VideoFoldSplit",
    "FrameFoldSplit",
    "StatisticsGen",
    "L1Predict",
    "L1Assemble",
    "L2Merge",
    "L2Features",
    "SoftLabels",
    "StudentPredict",
    "StudentAssemble",
    "HeadExamples",
    "BatchInference",
)


def ensure_data(out: Path, synth: SynthConfig) -> Path:
    """The generated data set for `synth` under `out`, written unless synth.json already matches."""
    marker = out / "synth.json"
    wanted = json.loads(json.dumps(asdict(synth)))
    if marker.exists() and json.loads(marker.read_text()).get("config") == wanted:
        return out
    shutil.rmtree(out, ignore_errors=True)
    started = time.time()
    write_dataset(synth, out)
    print(f"generated {synth.videos} videos ({','.join(synth.layouts)}) in {time.time() - started:.0f} s")
    return out


def write_config(path: Path, data: Path, home: Path, classes: int, folds: int, l1: tuple[str, ...]) -> None:
    frame_dir = f"  frame_dir: {data / 'frame'}\n" if (data / "frame").exists() else ""
    l1_lines = "".join(f"    - {SCALE_CONFIGS / 'l1' / name}.yaml\n" for name in l1)
    path.write_text(
        f"pipeline_name: yt8m-scale\nhome: {home}\n"
        f"data:\n  video_dir: {data / 'video'}\n{frame_dir}  num_classes: {classes}\n"
        f"  test_truth: {data / 'test_truth.csv'}\n"
        f"folds:\n  num_folds: {folds}\n  holdout_fraction: 0.05\n  seed: 42\n"
        f"l1:\n  configs:\n{l1_lines}"
        f"l2:\n  lightgbm_config: {LIGHTGBM_CONFIG}\n"
        f"students:\n  configs: {SCALE_CONFIGS / 'students'}\n  gap_floor: 0.0\n  stack_fraction: 0.0\n"
        f"  push_directory: serving\n"
    )


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def run_with_rss(command: list[str], log_path: Path) -> tuple[int, list[tuple[float, float]], float]:
    """Run `command`, sampling its RSS; returns (exit code, [(unix time, MB)], wall s)."""
    samples: list[tuple[float, float]] = []
    started = time.time()
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

        def sample() -> None:
            while process.poll() is None:
                rss = _rss_mb(process.pid)
                if rss is not None:
                    samples.append((time.time(), rss))
                time.sleep(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        code = process.wait()
        sampler.join()
    return code, samples, time.time() - started


def stage_costs(metadata_path: str, samples: list[tuple[float, float]]) -> tuple[dict, dict]:
    """Per stage: wall s, node count, peak RSS MB and growth MB; plus L2Features' candidate rows."""
    from pipeline.metadata import node_executions, open_store, property_value

    store = open_store(metadata_path)
    executions = {e.id: e for e in store.get_executions()}
    stages: dict[str, dict] = {}  # in pipeline order
    rows: dict = {}
    for node in node_executions(store, "yt8m-scale"):
        execution = executions[node.execution_id]
        start = execution.create_time_since_epoch / 1000
        end = execution.last_update_time_since_epoch / 1000
        stage = stages.setdefault(
            node.node_id.split("_")[0], {"wall_s": 0.0, "nodes": 0, "peak_mb": 0.0, "start_mb": None}
        )
        stage["wall_s"] += end - start
        stage["nodes"] += 1
        before = [mb for t, mb in samples if t <= start] or [samples[0][1]]
        during = [mb for t, mb in samples if start <= t <= end] or before[-1:]  # shorter than one sample
        stage["peak_mb"] = max(stage["peak_mb"], max(during))
        if stage["start_mb"] is None:
            stage["start_mb"] = before[-1]
        if node.node_id == "L2Features" and node.outputs.get("features"):
            rows = property_value(node.outputs["features"][0], "rows")
    for stage in stages.values():
        stage["growth_mb"] = stage["peak_mb"] - stage.pop("start_mb")
    return stages, rows


def run_size(args, videos: int, layouts: tuple[str, ...], frames: int, l1: tuple[str, ...]) -> dict:
    label = f"{videos}_{'_'.join(layouts)}"
    synth = SynthConfig(
        videos=videos, classes=args.classes, frames=frames, seed=0, videos_per_shard=5000, layouts=layouts
    )
    data = ensure_data(args.out / f"data_{label}_{args.classes}c_{frames}f", synth)
    home = args.out / f"home_{label}"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    config = home / "pipeline.yaml"
    write_config(config, data, home, args.classes, args.folds, l1)
    command = [sys.executable, "-m", "pipeline.cli", "run", "--config", str(config)]
    load_before = os.getloadavg()[0]
    code, samples, wall = run_with_rss(command, home / "run.log")
    if code != 0:
        raise SystemExit(f"pipeline run for {label} failed (exit {code}); see {home / 'run.log'}")
    stages, rows = stage_costs(str(home / "metadata.sqlite"), samples)
    return {
        "label": label,
        "videos": videos,
        "layouts": list(layouts),
        "frames": frames,
        "classes": args.classes,
        "folds": args.folds,
        "l1": list(l1),
        "wall_s": wall,
        "peak_mb": max(mb for _, mb in samples),
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "candidate_rows": rows,
        "stages": stages,
    }


def report(results: list[dict]) -> None:
    video_runs = sorted((r for r in results if r["layouts"] == ["video"]), key=lambda r: r["videos"])
    for run in results:
        rows = [
            (
                name,
                s["nodes"],
                s["wall_s"],
                1000 * s["wall_s"] / run["videos"],
                s["peak_mb"],
                s["growth_mb"],
                "beam" if name in BEAM_STAGES else "",
            )
            for name, s in run["stages"].items()
        ]
        print_table(
            f"{run['label']}: {run['videos']} videos, {run['classes']} classes, {run['folds']} folds, L1 "
            f"{run['l1']}; whole run {run['wall_s']:.0f} s, peak RSS {run['peak_mb']:.0f} MB, load "
            f"{run['load_before']:.1f} -> {run['load_after']:.1f}; candidate rows {run['candidate_rows']}",
            ("stage", "nodes", "wall s", "s per 1k videos", "peak RSS MB", "growth MB", "kind"),
            rows,
            lambda v: f"{v:.1f}",
        )
    if len(video_runs) < 2:
        return
    steps = list(zip(video_runs, video_runs[1:], strict=False))  # each size against the next smaller one
    headers = ["stage"]
    for small, large in steps:
        headers += [
            f"time {small['videos']}->{large['videos']}",
            f"growth MB {small['videos']}->{large['videos']}",
        ]
    rows = []
    for name in video_runs[-1]["stages"]:
        row: list = [name]
        for small, large in steps:
            before, after = small["stages"].get(name), large["stages"].get(name)
            if before is None or after is None or before["wall_s"] <= 0:
                row += ["", ""]
                continue
            row += [
                after["wall_s"] / before["wall_s"] / (large["videos"] / small["videos"]),
                f"{before['growth_mb']:.0f}->{after['growth_mb']:.0f}",
            ]
        rows.append(row)
    whole = ["whole run"]
    for small, large in steps:
        whole += [large["wall_s"] / small["wall_s"] / (large["videos"] / small["videos"]), ""]
    rows.append(whole)
    print_table(
        "linearity, each size against the next smaller: (t(N) / t(n)) / (N / n), target <= 1.1",
        headers,
        rows,
        lambda v: f"{v:.2f}",
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--videos", default="10000,30000,100000")
    parser.add_argument("--classes", type=int, default=3862)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--frame-videos", type=int, default=10000, help="0 skips the frame-level run")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path("bench_out/scale"))
    parser.add_argument("--report-only", action="store_true", help="print the tables of <out>/results.json")
    args = parser.parse_args(argv)
    args.out = args.out.absolute()
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else []
    if not args.report_only:
        plan = [(int(n), ("video",), 20, VIDEO_L1) for n in args.videos.split(",") if n]
        if args.frame_videos:
            plan.append((args.frame_videos, ("video", "frame"), args.frames, VIDEO_L1 + FRAME_L1))
        for videos, layouts, frames, l1 in plan:
            result = run_size(args, videos, layouts, frames, l1)
            results = [r for r in results if r["label"] != result["label"]] + [result]
            results_path.write_text(json.dumps(results, indent=1))
            print(
                f"{result['label']}: {result['wall_s']:.0f} s, peak RSS {result['peak_mb']:.0f} MB",
                flush=True,
            )
    report(results)


if __name__ == "__main__":
    main()
