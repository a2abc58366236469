"""Quality benchmark: does the stack beat its inputs, does the student keep the stack's quality, do soft
labels beat hard ones, and how far is each from the best any model can reach on this data.

One `yt8m run` on generated data (pipeline.synth: label noise in every split, planted label probabilities, so
the oracle GAP is known) with the demo's model set (configs/l1: 5 L1 configs, configs/students: six towers
and the head), 5 folds. Then every model is scored on two splits with the same paired bootstrap
(trainer.metrics.bootstrap_gaps, resampling videos):

- holdout: what the pipeline's gate sees; the best L1 model is chosen here;
- test: the final, reported figures (the generator knows the test labels; nothing is chosen on them).

Rows: each L1 model, the mean of the L1 models, the stack, each tower (5-fold mean and served refit), the
EnsembleModel, the oracle; differences: stack - best L1, stack - L1 mean, EnsembleModel / stack, each /
oracle.
Then the soft- vs hard-label student ablation (benchmarks.student_bench, on the holdout). Targets (issue 16):
stack - best L1 >= +0.01 with the interval above 0; EnsembleModel >= 0.99 x stack; soft - hard > 0 with the
interval above 0; stack >= 0.95 x oracle.

    python -m benchmarks.quality_bench [--videos 17000] [--classes 200] [--frames 20]
                                       [--holdout-fraction 0.43] [--test-fraction 0.3]
                                       [--out bench_out/quality] [--resamples 1000] [--skip-ablation]

A rerun with the same settings reuses the data and every cached node (the home is under --out). Results:
<out>/quality.json and the tables on stdout. The defaults put 5,100 videos in the test split and ~5,100 in the
holdout (enough to resolve 0.005 GAP) and keep the training folds at 6.8k videos: `yt8m run` took 95 min on
2 cores (BENCHMARKS.md), scoring both splits ~30 min, the soft/hard ablation about as long as the student
stage again. 60k videos would take about 5 h.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks.common import print_table  # noqa: E402
from benchmarks.scale_bench import ensure_data  # noqa: E402
from pipeline.synth import SynthConfig  # noqa: E402

PIPELINE = "yt8m-quality"
L1_CONFIGS = ("logistic", "moe", "gated_mlp_lsep", "pooling_mlp", "attention_pool")
GAIN_TARGET, STUDENT_TARGET, ORACLE_TARGET = 0.01, 0.99, 0.95
ORACLE = "oracle (planted probabilities)"
K = 20  # GAP@20


def write_config(path: Path, data: Path, home: Path, classes: int, holdout_fraction: float) -> None:
    """The demo's pipeline (models, students, gate at the default fraction) on the generated data."""
    root = Path(__file__).resolve().parent.parent
    l1 = "".join(f"    - {root / 'configs' / 'l1' / name}.yaml\n" for name in L1_CONFIGS)
    path.write_text(
        f"pipeline_name: {PIPELINE}\nhome: {home}\n"
        f"data:\n  video_dir: {data / 'video'}\n  frame_dir: {data / 'frame'}\n  num_classes: {classes}\n"
        f"  test_truth: {data / 'test_truth.csv'}\n"
        f"folds:\n  num_folds: 5\n  holdout_fraction: {holdout_fraction}\n  seed: 42\n"
        f"l1:\n  configs:\n{l1}"
        f"l2:\n  lightgbm_config: {root / 'configs' / 'l2' / 'lightgbm.yaml'}\n"
        f"students:\n  configs: {root / 'configs' / 'students'}\n  gap_floor: 0.0\n"
        f"  push_directory: serving\n"
    )


def run_pipeline(config: Path, log_path: Path) -> float:
    """`yt8m run` in a subprocess; returns its wall seconds (a fully cached rerun takes seconds)."""
    started = time.time()
    with log_path.open("w") as log:
        code = subprocess.call(
            [sys.executable, "-m", "pipeline.cli", "run", "--config", str(config)], stdout=log, stderr=log
        )
    if code:
        raise SystemExit(f"yt8m run failed with exit code {code}; see {log_path}")
    return time.time() - started


def _tfx_artifact(store, mlmd_artifact):
    """A TFX Artifact object for an ML Metadata artifact (split names, custom properties)."""
    from tfx.types import artifact_utils

    (artifact_type,) = store.get_artifact_types_by_id([mlmd_artifact.type_id])
    return artifact_utils.deserialize_artifact(artifact_type, mlmd_artifact)


def split_scores(home: Path, data: Path, classes: int, split: str) -> tuple[int, dict, dict]:
    """(videos, {model: TopRows}, {model: kind}) of a finished run on `split` ("holdout": labels from the
    fold split; "test": from the generator's test_truth.csv), scored as StudentEvaluator scores them."""
    from components.student_evaluator import executor as evaluation
    from pipeline.metadata import open_store, run_executions
    from pipeline.synth import oracle_scores
    from trainer.submission import read_truth

    store = open_store(str(home / "metadata.sqlite"))
    runs = run_executions(store, PIPELINE)

    def output(node: str, key: str):
        return _tfx_artifact(store, runs[node].outputs[key][0])

    examples = output("VideoFoldSplit", "split_examples")
    videos = evaluation.split_labels(examples, classes, split)
    if split != "holdout":
        truth = read_truth(data / "test_truth.csv")
        videos = evaluation.SplitVideos(
            split, videos.ids, [np.array(truth[video_id]) for video_id in videos.ids], classes
        )

    def rows(name: str, batches):
        return evaluation.scored_rows(name, videos, batches, K)

    scored, kinds = {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        total = np.lib.format.open_memmap(f"{scratch}/sum.npy", "w+", np.float32, (len(videos.ids), classes))
        for name in L1_CONFIGS:
            predictions = output(f"L1Assemble_{name}", "predictions")
            scored[name] = evaluation.scored_rows(
                name, videos, evaluation.prediction_batches(predictions, split), K, total
            )
            kinds[name] = "L1"
        mean = evaluation.array_batches(videos.ids, total, len(L1_CONFIGS))
        scored[evaluation.L1_MEAN], kinds[evaluation.L1_MEAN] = rows(evaluation.L1_MEAN, mean), "L1 mean"
    stack = evaluation.stack_batches(output("L2LightGBM", "scores"), videos)
    scored[evaluation.STACK], kinds[evaluation.STACK] = rows(evaluation.STACK, stack), "stack"
    for node in sorted(n for n in runs if n.startswith("StudentAssemble_")):
        tower = output(node, "predictions")
        name = tower.get_string_custom_property("config_name")
        scored[name] = rows(name, evaluation.prediction_batches(tower, split))
        kinds[name] = "tower, 5-fold mean"
        refit = output(f"StudentTrainer_{node.removeprefix('StudentAssemble_')}_refit", "model")
        served = evaluation.served_tower(refit)
        batches = evaluation.model_batches(refit, examples, "serving_default", split)
        scored[served], kinds[served] = rows(served, batches), "tower, served (refit)"
    student = evaluation.model_batches(output("StudentExport", "model"), examples, split=split)
    scored[evaluation.STUDENT], kinds[evaluation.STUDENT] = rows(evaluation.STUDENT, student), "student"
    oracle = evaluation.array_batches(videos.ids, oracle_scores(data, videos.ids))
    scored[ORACLE], kinds[ORACLE] = rows(ORACLE, oracle), "oracle"
    return len(videos.ids), scored, kinds


def _interval(values: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def score_split(
    split: str, videos: int, scores: dict, kinds: dict, best_l1: str, resamples: int
) -> dict[str, Any]:
    """Point GAPs, paired-bootstrap intervals and the target differences of one split."""
    from components.student_evaluator.executor import L1_MEAN, STACK, STUDENT
    from trainer.metrics import bootstrap_gaps_of_rows, evaluate_rows

    point = {name: evaluate_rows(rows)["gap"] for name, rows in scores.items()}
    gaps = bootstrap_gaps_of_rows(scores, resamples=resamples)
    rows = [
        (name, kinds[name], point[name], "[{:.4f}, {:.4f}]".format(*_interval(gaps[name]))) for name in scores
    ]
    print_table(
        f"{split}: {videos} videos, GAP@20, paired-bootstrap 95% intervals ({resamples} resamples)",
        ("model", "kind", "GAP@20", "95% interval"),
        rows,
        lambda v: f"{v:.4f}",
    )
    differences = {
        f"stack - best L1 ({best_l1})": (point[STACK] - point[best_l1], gaps[STACK] - gaps[best_l1]),
        "stack - L1 mean": (point[STACK] - point[L1_MEAN], gaps[STACK] - gaps[L1_MEAN]),
        "EnsembleModel / stack": (point[STUDENT] / point[STACK], gaps[STUDENT] / gaps[STACK]),
        "best L1 / oracle": (point[best_l1] / point[ORACLE], gaps[best_l1] / gaps[ORACLE]),
        "stack / oracle": (point[STACK] / point[ORACLE], gaps[STACK] / gaps[ORACLE]),
        "EnsembleModel / oracle": (point[STUDENT] / point[ORACLE], gaps[STUDENT] / gaps[ORACLE]),
    }
    summary = {label: (value, *_interval(samples)) for label, (value, samples) in differences.items()}
    for label, (value, low, high) in summary.items():
        print(f"   {label}: {value:+.4f} [{low:+.4f}, {high:+.4f}]")
    stack_gain = next(v for label, v in summary.items() if label.startswith("stack - best L1"))
    targets = {
        "stack - best L1 >= +0.01, interval above 0": stack_gain[0] >= GAIN_TARGET and stack_gain[1] > 0,
        "EnsembleModel >= 0.99 x stack": summary["EnsembleModel / stack"][0] >= STUDENT_TARGET,
        "stack >= 0.95 x oracle": summary["stack / oracle"][0] >= ORACLE_TARGET,
    }
    for label, ok in targets.items():
        print(f"   target {label}: {'ok' if ok else 'MISSED'}")
    return {
        "videos": videos,
        "gap": point,
        "kinds": kinds,
        "differences": summary,
        "targets": targets,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=17_000)
    parser.add_argument("--classes", type=int, default=200)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--holdout-fraction", type=float, default=0.43)
    parser.add_argument(
        "--test-fraction", type=float, default=0.3, help="share of the generated videos in the test split"
    )
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path("bench_out/quality"))
    parser.add_argument(
        "--skip-ablation", action="store_true", help="no soft- vs hard-label student ablation"
    )
    args = parser.parse_args(argv)
    started = time.time()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    synth = SynthConfig(
        videos=args.videos,
        classes=args.classes,
        frames=args.frames,
        seed=args.seed,
        test_fraction=args.test_fraction,
    )
    data = ensure_data(out / "data", synth)
    config, home = out / "quality.yaml", out / "home"
    write_config(config, data, home, args.classes, args.holdout_fraction)
    run_s = run_pipeline(config, out / "run.log")
    print(f"yt8m run: {run_s:.0f} s (cached nodes are reused on a rerun); config {config}", flush=True)

    results: dict[str, Any] = {"settings": vars(args) | {"out": str(out)}, "run_s": run_s}
    holdout = split_scores(home, data, args.classes, "holdout")
    best_l1 = max(L1_CONFIGS, key=lambda name: _gap(holdout, name))
    print(f"best L1 model on the holdout: {best_l1}")
    for split, (videos, scores, kinds) in (
        ("holdout", holdout),
        ("test", split_scores(home, data, args.classes, "test")),
    ):
        results[split] = score_split(split, videos, scores, kinds, best_l1, args.resamples)
    if not args.skip_ablation:
        from benchmarks import student_bench
        from components.student_evaluator.executor import STACK
        from pipeline.config import load_pipeline_config

        run = student_bench.load_run(home, PIPELINE)
        results["ablation"] = student_bench.ablation(
            run, load_pipeline_config(config), None, results["holdout"]["gap"][STACK], 20, out
        )
    results["wall_s"] = time.time() - started
    (out / "quality.json").write_text(json.dumps(results, indent=1, default=str))
    print(f"\nwall time {results['wall_s']:.0f} s; results in {out / 'quality.json'}")


def _gap(split_result: tuple, name: str) -> float:
    from trainer.metrics import evaluate_rows

    return evaluate_rows(split_result[1][name])["gap"]


if __name__ == "__main__":
    main()
