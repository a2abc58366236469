"""Ingestion benchmark: the TFX path (YT8MExampleGen + FoldSplit executors) against a plain tf.data read.

For each layout (video-level tf.Example, frame-level tf.SequenceExample) it generates data with
pipeline.synth (reused when the settings match), warms everything up on a tiny data set, then runs once:
  (a) YT8MExampleGen.Do then FoldSplit.Do (Beam DirectRunner, in_memory, one worker), as the pipeline does;
  (b) trainer.readers.make_dataset over the same raw files (no compression, batch 256) to the end;
and prints videos/s of both and the ratio (a)/(b) against the target >= 0.5. Both are also timed on the
warm-up set (200 videos) once warm: its seconds are mostly fixed cost (Beam pipeline construction and
start), so "ratio less fixed" = (b's seconds less its warm-up seconds) / (a's less a's) is the ratio the two
rates tend to as the data grows. (a) runs on one Beam worker while (b) uses every core; (b) is also run with
tf.data on one thread, and "ratio, 1 thread" compares the two on one core each (what sets worker-hours on
a runner that gives each worker its share of the files).

    python -m benchmarks.ingest_bench [--videos N] [--frame-videos N] [--frames F] [--classes C] [--out DIR]
        [--repeats R]
    python -m benchmarks.ingest_bench --profile frame   # also cProfile that layout's ingestion (top 15)
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import cProfile  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import pstats  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import apache_beam as beam  # noqa: E402
import tensorflow as tf  # noqa: E402
from tfx.dsl.components.base.base_beam_executor import BaseBeamExecutor  # noqa: E402
from tfx.proto import example_gen_pb2  # noqa: E402
from tfx.types import standard_artifacts  # noqa: E402
from tfx.utils import proto_utils  # noqa: E402

from components.example_gen import executor as example_gen  # noqa: E402
from components.example_gen.component import split_input_config  # noqa: E402
from components.fold_split import executor as fold_split  # noqa: E402
from pipeline.config import DEFAULT_SPLIT_PATTERNS, LOCAL_BEAM_PIPELINE_ARGS  # noqa: E402
from pipeline.synth import SynthConfig, write_dataset  # noqa: E402
from trainer.readers import make_dataset  # noqa: E402

BEAM_ARGS = list(LOCAL_BEAM_PIPELINE_ARGS)  # the local runs'
PAYLOAD = {"video": example_gen_pb2.FORMAT_TF_EXAMPLE, "frame": example_gen_pb2.FORMAT_TF_SEQUENCE_EXAMPLE}
TARGET_RATIO = 0.5
BATCH = 256


@dataclass
class Result:
    """One layout's measurements (seconds, videos, bytes)."""

    layout: str
    videos: int
    raw_bytes: int
    example_gen_s: float
    fold_split_s: float
    ingest_cpu_s: float
    tf_data_s: float
    small_ingest_s: float  # both stages on the 200-video warm-up set
    small_tf_data_s: float
    tf_data_one_thread_s: float

    @property
    def ingest_rate(self) -> float:
        return self.videos / (self.example_gen_s + self.fold_split_s)

    @property
    def read_rate(self) -> float:
        return self.videos / self.tf_data_s

    @property
    def ratio(self) -> float:
        return self.ingest_rate / self.read_rate

    @property
    def ratio_one_thread(self) -> float:
        return self.tf_data_one_thread_s / (self.example_gen_s + self.fold_split_s)

    @property
    def ratio_less_fixed(self) -> float:
        ingest_s = self.example_gen_s + self.fold_split_s
        return (self.tf_data_s - self.small_tf_data_s) / (ingest_s - self.small_ingest_s)


def ensure_data(cfg: SynthConfig, data_dir: Path) -> Path:
    """Generate `cfg` into `data_dir` unless a data set with the same settings is already there."""
    summary = data_dir / "synth.json"
    wanted = json.loads(json.dumps(asdict(cfg)))
    if summary.exists() and json.loads(summary.read_text())["config"] == wanted:
        return data_dir
    shutil.rmtree(data_dir, ignore_errors=True)
    start = time.perf_counter()
    write_dataset(cfg, data_dir)
    print(f"generated {data_dir} in {time.perf_counter() - start:.1f}s", flush=True)
    return data_dir


def _context() -> BaseBeamExecutor.Context:
    """Executor context with the pipeline's Beam args, minus the per-executor ephemeral TFX sdist build."""
    return BaseBeamExecutor.Context(make_beam_pipeline_fn=lambda: beam.Pipeline(argv=BEAM_ARGS))


def run_ingest(data_dir: Path, layout: str, classes: int, work: Path) -> tuple[float, float, float, int]:
    """YT8MExampleGen then FoldSplit on one layout: both stages' seconds, CPU seconds, videos split."""
    shutil.rmtree(work, ignore_errors=True)
    examples, folds = standard_artifacts.Examples(), standard_artifacts.Examples()
    examples.uri, folds.uri = str(work / "examples"), str(work / "folds")
    os.makedirs(examples.uri)
    os.makedirs(folds.uri)
    input_config = split_input_config(DEFAULT_SPLIT_PATTERNS)
    start, cpu = time.perf_counter(), time.process_time()
    example_gen.Executor(_context()).Do(
        {},
        {"examples": [examples]},
        {
            "input_base": str(data_dir / layout),
            "input_config": proto_utils.proto_to_json(input_config),
            "output_config": proto_utils.proto_to_json(example_gen_pb2.Output()),
            "output_data_format": PAYLOAD[layout],
            "output_file_format": example_gen_pb2.FILE_FORMAT_UNSPECIFIED,
            "num_classes": classes,
            "unlabelled_splits": "test",
        },
    )
    middle = time.perf_counter()
    fold_split.Executor(_context()).Do(
        {"examples": [examples]},
        {"split_examples": [folds]},
        {
            "num_folds": 5,
            "holdout_fraction": 0.05,
            "seed": 0,
            "num_classes": classes,
            "unlabelled_splits": "test",
        },
    )
    end, cpu = time.perf_counter(), time.process_time() - cpu
    videos = sum(folds.get_json_value_custom_property("split_counts").values())
    return middle - start, end - middle, cpu, videos


def run_read(
    data_dir: Path, layout: str, classes: int, frames: int, one_thread: bool = False
) -> tuple[float, int]:
    """Read and parse every raw record with trainer.readers.make_dataset (with `one_thread`, all of tf.data's
    work on one thread); returns seconds and videos."""
    start = time.perf_counter()
    dataset = make_dataset([str(data_dir / layout / "*.tfrecord")], layout, classes, BATCH, max_frames=frames)
    if one_thread:
        options = tf.data.Options()
        options.threading.private_threadpool_size = 1
        options.threading.max_intra_op_parallelism = 1
        dataset = dataset.with_options(options)
    videos = sum(int(batch["id"].shape[0]) for batch in dataset)
    return time.perf_counter() - start, videos


def measure_sdist() -> float:
    """Seconds to build the ephemeral TFX sdist every Beam executor builds when given beam_pipeline_args."""
    from tfx.utils import dependency_utils

    start = time.perf_counter()
    package = Path(dependency_utils.build_ephemeral_package())
    seconds = time.perf_counter() - start
    shutil.rmtree(package.parents[3], ignore_errors=True)  # <mkdtemp>/build/tfx/dist/<sdist>
    return seconds


def profile(call: Callable[[], object], top: int = 15) -> None:
    """Run `call` under cProfile and print the `top` entries by cumulative and by own time."""
    profiler = cProfile.Profile()
    profiler.runcall(call)
    stats = pstats.Stats(profiler).strip_dirs()
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*.tfrecord"))


def print_table(results: list[Result]) -> None:
    """One row per layout: stage seconds, ingest CPU seconds, both rates and their ratio."""
    columns = [  # (header, number format, value)
        ("videos", "d", lambda r: r.videos),
        ("raw MB", ".1f", lambda r: r.raw_bytes / 2**20),
        ("ExampleGen s", ".2f", lambda r: r.example_gen_s),
        ("FoldSplit s", ".2f", lambda r: r.fold_split_s),
        ("CPU s", ".1f", lambda r: r.ingest_cpu_s),
        ("ingest v/s", ".0f", lambda r: r.ingest_rate),
        ("tf.data s", ".2f", lambda r: r.tf_data_s),
        ("tf.data v/s", ".0f", lambda r: r.read_rate),
        ("ratio", ".3f", lambda r: r.ratio),
        (f"target >={TARGET_RATIO}", "", lambda r: "ok" if r.ratio >= TARGET_RATIO else "MISS"),
        ("200-video ingest s", ".2f", lambda r: r.small_ingest_s),
        ("200-video tf.data s", ".2f", lambda r: r.small_tf_data_s),
        ("ratio less fixed", ".3f", lambda r: r.ratio_less_fixed),
        ("tf.data 1 thread s", ".2f", lambda r: r.tf_data_one_thread_s),
        ("ratio, 1 thread", ".3f", lambda r: r.ratio_one_thread),
    ]
    header = "layout " + " ".join(f"{name:>{max(len(name), 7)}}" for name, _, _ in columns)
    print(header)
    print("-" * len(header))
    for r in results:
        cells = (f"{value(r):>{max(len(name), 7)}{fmt}}" for name, fmt, value in columns)
        print(f"{r.layout:6} " + " ".join(cells))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=10000, help="video-level videos")
    parser.add_argument("--frame-videos", type=int, default=3000, help="frame-level videos")
    parser.add_argument("--frames", type=int, default=20, help="max frames per video")
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("bench_out"))
    parser.add_argument("--profile", choices=sorted(PAYLOAD), help="cProfile this layout's ingestion")
    parser.add_argument("--repeats", type=int, default=1, help="runs of both paths per layout, one row each")
    args = parser.parse_args(argv)
    logging.getLogger().setLevel(logging.WARNING)
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)

    out = args.out.absolute()
    counts = {"video": args.videos, "frame": args.frame_videos}
    data = {
        layout: ensure_data(
            SynthConfig(videos=n, classes=args.classes, frames=args.frames, layouts=(layout,)),
            out / f"data_{layout}",
        )
        for layout, n in counts.items()
    }
    warm = ensure_data(
        SynthConfig(videos=200, classes=args.classes, frames=args.frames, videos_per_shard=50), out / "warmup"
    )
    small = {}
    for layout in PAYLOAD:
        run_ingest(warm, layout, args.classes, out / "work" / "warmup")
        run_read(warm, layout, args.classes, args.frames)
        example_gen_s, fold_split_s, _, _ = run_ingest(warm, layout, args.classes, out / "work" / "warmup")
        small[layout] = example_gen_s + fold_split_s, run_read(warm, layout, args.classes, args.frames)[0]
    print(f"warm-up done; peak RSS {peak_rss_mb():.0f} MB", flush=True)

    results = []
    for layout, data_dir in data.items():
        for repeat in range(args.repeats):
            example_gen_s, fold_split_s, cpu_s, split_videos = run_ingest(
                data_dir, layout, args.classes, out / "work" / layout
            )
            tf_data_s, read_videos = run_read(data_dir, layout, args.classes, args.frames)
            one_thread_s = run_read(data_dir, layout, args.classes, args.frames, one_thread=True)[0]
            if not split_videos == read_videos == counts[layout]:
                raise RuntimeError(
                    f"{layout}: {split_videos} videos split, {read_videos} read, {counts[layout]} made"
                )
            results.append(
                Result(
                    layout if args.repeats == 1 else f"{layout}{repeat + 1}",
                    counts[layout],
                    _size(data_dir),
                    example_gen_s,
                    fold_split_s,
                    cpu_s,
                    tf_data_s,
                    *small[layout],
                    one_thread_s,
                )
            )
        print(f"{layout}: done; peak RSS {peak_rss_mb():.0f} MB", flush=True)
    sdist_s = measure_sdist()

    print()
    print(f"ingest benchmark, {os.cpu_count()} CPUs, Beam {' '.join(BEAM_ARGS)}, classes {args.classes}")
    print("each row is ONE run after a warm-up on a noisy machine (disk reads too): compare repeats;")
    print("CPU s = process CPU time of both ingest stages (less sensitive to other load than wall time)")
    print_table(results)
    print(f"peak RSS {peak_rss_mb():.0f} MB (whole process, both layouts)")
    print(
        "not in the table: under BeamDagRunner every Beam executor given beam_pipeline_args first builds "
        f"an ephemeral TFX sdist: {sdist_s:.1f}s each, 5 Beam nodes per pipeline run"
    )
    if args.profile:
        print(f"\ncProfile of {args.profile}-level ingestion (ExampleGen + FoldSplit):")
        profile(lambda: run_ingest(data[args.profile], args.profile, args.classes, out / "work" / "profile"))
    shutil.rmtree(out / "work", ignore_errors=True)


if __name__ == "__main__":
    main()
