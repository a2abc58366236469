"""L2LightGBM's GAP inputs: peak memory of `TopCandidates` on synthetic OOF rows, one process per size.

Per size: --videos videos x --rows rows a video (one score column, k = 20, random scores and targets, rows
in batches of 65,536 as `_score_split` reads them), added to `TopCandidates`, then the OOF and per-fold GAPs.
Prints the peak RSS over the process's start and its growth per video between sizes (README "Sizing"'s
per-video term). With `--previous FILE` (an older `components/l2_lightgbm/executor.py`, e.g. from
`git show REV:components/l2_lightgbm/executor.py > old.py`) its `Candidates` class (every row kept) runs on
the same rows, for a paired comparison.

    python -m benchmarks.l2_gap_memory_bench [--videos 100000,200000] [--rows 200] [--previous old.py]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time

import numpy as np

from benchmarks.common import status_mb

K, BATCH_ROWS, FOLDS = 20, 65_536, 5


def _collector(previous: str | None):
    """(add(batch, scores), gaps() -> oof GAP) of the current TopCandidates or the previous Candidates."""
    if previous is None:
        from components.l2_lightgbm.executor import TopCandidates

        kept = TopCandidates(K, ["score"])
        return (
            lambda batch, scores: kept.add(batch, {"score": scores}),
            lambda: (kept.gaps(["score"], by_fold=True), kept.gaps(["score"])["score"])[1],
        )
    spec = importlib.util.spec_from_file_location("previous_l2_lightgbm", previous)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    kept = module.Candidates()
    return (
        lambda batch, scores: kept.add(batch, {"score": scores}),
        lambda: (kept.gaps(K, ["score"], by_fold=True), kept.gaps(K, ["score"])["score"])[1],
    )


def child(videos: int, rows_per_video: int, previous: str | None) -> dict:
    import pyarrow as pa

    add, gaps = _collector(previous)
    rng = np.random.default_rng(0)
    start_mb, start = status_mb("VmRSS"), time.perf_counter()
    per_batch = max(1, BATCH_ROWS // rows_per_video)
    for first in range(0, videos, per_batch):
        count = min(per_batch, videos - first)
        rows = count * rows_per_video
        numbers = np.arange(first, first + count)
        batch = pa.RecordBatch.from_pydict(
            {
                "video_id": np.repeat(
                    np.array([f"video{v:09d}" for v in numbers], dtype=object), rows_per_video
                ),
                "class_id": rng.integers(0, 3862, rows).astype(np.int32),
                "target": (rng.random(rows) < 0.01).astype(np.int8),
                "num_labels": np.full(rows, 3, np.int32),
                "fold": np.repeat(numbers % FOLDS, rows_per_video).astype(np.int32),
            }
        )
        add(batch, rng.random(rows, dtype=np.float32))
    gap = gaps()
    return {"peak_mb": status_mb("VmHWM") - start_mb, "seconds": time.perf_counter() - start, "gap": gap}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", default="100000,200000", help="OOF videos per size, comma-separated")
    parser.add_argument("--rows", type=int, default=200, help="candidate rows a video (K)")
    parser.add_argument("--previous", help="an older executor.py whose Candidates to compare with")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(int(args.child), args.rows, args.previous)))
        return
    sizes = sorted(int(v) for v in args.videos.split(","))
    kinds = {"top-k rows": None, **({"every row (previous)": args.previous} if args.previous else {})}
    results: dict[str, dict[int, dict]] = {kind: {} for kind in kinds}
    for videos in sizes:
        for kind, previous in kinds.items():
            command = [sys.executable, "-m", "benchmarks.l2_gap_memory_bench", "--child", str(videos)]
            command += ["--rows", str(args.rows)] + (["--previous", previous] if previous else [])
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            result = results[kind][videos] = json.loads(done.stdout.strip().splitlines()[-1])
            print(
                f"{kind:>22}: {videos} videos x {args.rows} rows: peak {result['peak_mb']:.0f} MB over the "
                f"start, {result['seconds']:.0f} s, OOF GAP {result['gap']:.6f}",
                flush=True,
            )
    if len(sizes) > 1:
        low, high = sizes[0], sizes[-1]
        for kind, by_size in results.items():
            per_video = (by_size[high]["peak_mb"] - by_size[low]["peak_mb"]) * 2**20 / (high - low)
            print(f"{kind:>22}: {per_video / 1024:.1f} KB per video ({per_video / args.rows:.0f} B per row)")


if __name__ == "__main__":
    main()
