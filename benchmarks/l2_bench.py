"""L2 benchmark: the demo's stacking gain, and memory/throughput of L2Merge + L2Features at two data sizes.

1. GAP: from the latest demo run in ML Metadata (configs/demo.yaml, --home), every L1 model's holdout GAP@k,
   the LightGBM stack's, stack - best L1 against the target (+0.01) with a bootstrap interval over the
   holdout videos, and the stack's OOF GAP per fold. Waits (--wait) for a running `yt8m run` to end.
2. Memory and throughput: per size, a fold-split Examples artifact (pipeline.synth.video_example records)
   and --models hand-made L1 Predictions artifacts (oof/holdout/test, correlated scores with
   signal on the labels) under bench_out/l2/ (reused when the settings match); then the L2Merge and the
   L2Features executors (Beam DirectRunner in_memory, one worker, as the pipeline) each in a fresh
   subprocess: videos/s and peak RSS (ru_maxrss) per stage and size. Target: RSS flat across sizes.
3. The same features in plain numpy (tf.data + np.frombuffer to read the sparse merged records, vectorised
   summaries, one Parquet file per split) in another subprocess on the same merged data,
   its rows checked equal to the component's at the smallest size; ratio L2Features / numpy (target >= 0.5).

    python -m benchmarks.l2_bench [--home yt8m_home] [--videos 10000,100000] [--models 4] [--classes 1000]
    python -m benchmarks.l2_bench --skip-gap --classes 3862          # the real class count (slow, see README)

--classes defaults to 1000: with 3862, 100k videos would take about 25 minutes and about 14 GB in L2Merge.

Every number is one run on a shared machine; compare ratios rather than absolute rates.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import collections  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator, Sequence  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402
from pipeline.config import LOCAL_BEAM_PIPELINE_ARGS, PipelineConfig  # noqa: E402

DEMO_CONFIG = "configs/demo.yaml"
BEAM_ARGS = list(LOCAL_BEAM_PIPELINE_ARGS)  # the local runs'
GAIN_TARGET, SPEED_TARGET = 0.01, 0.5
NUM_FOLDS, TOP_K, CHUNK = 5, 20, 2000
STAGES = ("merge", "features", "numpy")
DONE = ("COMPLETE", "CACHED")


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A fixed-width table; floats: 4 decimals below 1 (GAPs), 1 below 100, none above."""
    common.print_table(title, headers, rows, _gap_decimals)


def _gap_decimals(value: float) -> str:
    return f"{value:.4f}" if abs(value) < 1 else f"{value:.1f}" if abs(value) < 100 else f"{value:.0f}"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -------------------------------------------------------------------------------------------------- 1. GAP


def bootstrap_gain(
    scores_uri: str, features_uri: str, model: str, k: int, draws: int = 1000
) -> tuple[int, float, float]:
    """Holdout videos and the 2.5/97.5 percentiles of GAP(stack) - GAP(`model`) over resampled videos."""
    import pyarrow.parquet as pq

    from components.l2_features.executor import model_columns

    ((column, _),) = model_columns([model])
    stack = pq.read_table(f"{scores_uri}/Split-holdout").to_pandas()
    l1 = pq.read_table(f"{features_uri}/Split-holdout", columns=["video_id", "class_id", column]).to_pandas()
    rows = stack.merge(l1, on=["video_id", "class_id"], validate="one_to_one")
    return paired_gap_interval(rows, "score", column, k, draws)


def paired_gap_interval(rows, first: str, second: str, k: int, draws: int = 1000) -> tuple[int, float, float]:
    """Videos and the 2.5/97.5 percentiles of GAP(`first`) - GAP(`second`), two score columns of the same
    candidate rows (a DataFrame with video_id, class_id, target, num_labels), over videos resampled with
    replacement (seed 0; a video drawn twice counts as two)."""
    from trainer.metrics import gap_from_candidates

    rows = rows.sort_values("video_id", kind="stable")
    video_ids = rows["video_id"].to_numpy()
    starts = np.flatnonzero(np.r_[True, video_ids[1:] != video_ids[:-1]])
    lengths, labels = np.diff(np.r_[starts, len(rows)]), rows["num_labels"].to_numpy()[starts]
    classes, target = rows["class_id"].to_numpy(), rows["target"].to_numpy()
    scores = (rows[first].to_numpy(), rows[second].to_numpy())
    rng, gains = np.random.default_rng(0), []
    for _ in range(draws):
        pick = rng.integers(0, starts.size, starts.size)
        index = np.concatenate([np.arange(starts[v], starts[v] + lengths[v]) for v in pick])
        ids = np.repeat(np.arange(pick.size), lengths[pick])
        first_gap, second_gap = (
            gap_from_candidates(ids, classes[index], s[index], target[index], labels[pick].sum(), k)
            for s in scores
        )
        gains.append(first_gap - second_gap)
    low, high = np.percentile(gains, [2.5, 97.5])
    return starts.size, float(low), float(high)


def bench_gap(home: Path, max_wait_s: float) -> None:
    """Holdout GAP of every L1 model and of the stack, and the stack's per-fold OOF GAP, from MLMD."""
    from pipeline.config import load_pipeline_config
    from pipeline.metadata import open_store, property_value, run_executions

    start = time.perf_counter()
    if common.pipeline_running():
        print(f"1. a pipeline run is in progress; waiting up to {max_wait_s:.0f}s for it to end", flush=True)
        while common.pipeline_running() and time.perf_counter() - start < max_wait_s:
            time.sleep(10)
        state = "still running (reading a partial run)" if common.pipeline_running() else "ended"
        print(f"   the run {state} after {time.perf_counter() - start:.0f}s", flush=True)
    name = load_pipeline_config(DEMO_CONFIG).pipeline_name
    sqlite = home / "metadata.sqlite"
    executions = run_executions(open_store(str(sqlite)), name) if sqlite.exists() else {}
    stacker, features = executions.get("L2LightGBM"), executions.get("L2Features")
    if stacker is None or stacker.state not in DONE or features is None:
        print(f"\n1. GAP: no finished L2LightGBM of '{name}' in {sqlite}; make one with `make demo`.")
        return
    metrics = stacker.outputs["metrics"][0]
    k = int(property_value(metrics, "k"))
    l1 = property_value(metrics, "l1_holdout_gap")
    stack, best = property_value(metrics, "holdout_gap"), property_value(metrics, "best_l1_holdout_gap")
    best_name = max(l1, key=l1.get)
    rows = [(model, "L1", gap) for model, gap in sorted(l1.items(), key=lambda item: -item[1])]
    rows.append(("LightGBM stack", "L2", stack))
    print_table(
        f"1. holdout GAP@{k}, latest '{name}' run in {sqlite} (L2LightGBM execution "
        f"{stacker.execution_id}, {stacker.state})",
        ("model", "level", f"GAP@{k}"),
        rows,
    )
    gain = stack - best
    verdict = "ok" if gain >= GAIN_TARGET else "MISS"
    print(
        f"   best L1: {best_name} {best:.4f}; stack - best L1 {gain:+.4f} (target +{GAIN_TARGET}): {verdict}"
    )
    videos, low, high = bootstrap_gain(
        stacker.outputs["scores"][0].uri, features.outputs["features"][0].uri, best_name, k
    )
    interval = f"[{low:+.4f}, {high:+.4f}]"
    print(f"   {videos} holdout videos; 95% bootstrap interval of the gain (resampling videos): {interval}")
    fold_gap = property_value(metrics, "fold_gap")
    rows = [(f"fold_{fold}", gap) for fold, gap in sorted(fold_gap.items(), key=lambda item: int(item[0]))]
    rows.append(("all OOF", property_value(metrics, "oof_gap")))
    print_table(
        f"   stack OOF GAP@{k} per fold (each fold scored by the booster not trained on it)",
        ("fold", "GAP"),
        rows,
    )


# ------------------------------------------------------------------------------------------ 2. data sets


@dataclass(frozen=True)
class DataSpec:
    """One generated data set: videos (10% test, 5% holdout, the rest over NUM_FOLDS folds) and models."""

    videos: int
    models: int
    classes: int
    seed: int = 0


def split_of(index: int) -> tuple[str, int]:
    """(examples split, fold of the prediction) of a video index."""
    from trainer.predictions import AVERAGED

    r = index % 20
    if r < 2:
        return "test", AVERAGED
    if r == 2:
        return "holdout", AVERAGED
    fold = (index // 20 + r) % NUM_FOLDS
    return f"fold_{fold}", fold


def split_names() -> list[str]:
    return [*(f"fold_{k}" for k in range(NUM_FOLDS)), "holdout", "test"]


def model_names(models: int) -> list[str]:
    return [f"l1.model-{m}" for m in range(models)]


def chunk_labels(rng: np.random.Generator, videos: int, classes: int) -> list[np.ndarray]:
    """Each video's 1 to 5 label classes (int, ascending), drawn with Zipf class frequencies."""
    zipf = 1.0 / np.arange(1, classes + 1)
    drawn = rng.choice(classes, size=(videos, 5), p=zipf / zipf.sum())
    return [np.unique(row[: 1 + n]) for row, n in zip(drawn, rng.binomial(4, 0.4, videos), strict=True)]


def _chunk_scores(rng: np.random.Generator, labels: list[np.ndarray], spec: DataSpec) -> np.ndarray:
    """float32 [models, videos, classes] in [0, 1]: a shared per-video component (correlated models),
    per-model noise, and a per-model amount of signal on the video's labels."""
    shared = rng.random((len(labels), spec.classes), dtype=np.float32)
    rows = np.repeat(np.arange(len(labels)), [lab.size for lab in labels])
    cols = np.concatenate(labels)
    out = np.empty((spec.models, len(labels), spec.classes), np.float32)
    for m in range(spec.models):
        scores = 0.6 * shared + 0.4 * rng.random(shared.shape, dtype=np.float32)
        scores[rows, cols] += (0.3 + 0.2 * m / max(spec.models - 1, 1)) * 2 * rng.random(cols.size)
        out[m] = scores / 1.6
    return out


def write_data(spec: DataSpec, root: Path) -> None:
    """The fold-split Examples (examples/) and one Predictions tree per model (model_<m>/) under `root`."""
    import tensorflow as tf

    from pipeline.synth import SyntheticVideo, video_example, video_id
    from trainer.predictions import encode_prediction

    def writer(path: Path) -> tf.io.TFRecordWriter:
        """Uncompressed, as L1Assemble writes predictions (gzip shrinks float scores by ~10%, slowly)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        return tf.io.TFRecordWriter(str(path))

    examples = {
        split: writer(root / "examples" / f"Split-{split}" / "part.tfrecord") for split in split_names()
    }
    predictions = [
        {
            split: writer(root / f"model_{m}" / f"Split-{split}" / "part.tfrecord")
            for split in ("oof", "holdout", "test")
        }
        for m in range(spec.models)
    ]
    rng = np.random.default_rng(spec.seed)
    for start in range(0, spec.videos, CHUNK):
        indexes = range(start, min(start + CHUNK, spec.videos))
        labels = chunk_labels(rng, len(indexes), spec.classes)
        scores = _chunk_scores(rng, labels, spec)
        frames = rng.integers(0, 256, size=(len(indexes), 1, 1152), dtype=np.uint8)
        for row, index in enumerate(indexes):
            vid, (split, fold) = video_id(index), split_of(index)
            video = SyntheticVideo(vid, labels[row].astype(np.int64), frames[row])
            examples[split].write(video_example(video, with_labels=split != "test"))
            target = "oof" if split.startswith("fold_") else split
            for m in range(spec.models):
                predictions[m][target].write(encode_prediction(vid, scores[m, row], fold))
    for handle in [*examples.values(), *(w for model in predictions for w in model.values())]:
        handle.close()


def ensure_data(spec: DataSpec, out: Path) -> Path:
    """`spec`'s data under `out` (generated unless a finished copy with the same settings is there)."""
    root = out / f"data_{spec.videos}v_{spec.models}m_{spec.classes}c"
    done = root / "spec.json"
    if done.exists() and json.loads(done.read_text()) == asdict(spec):
        return root
    shutil.rmtree(root, ignore_errors=True)
    start = time.perf_counter()
    write_data(spec, root)
    done.write_text(json.dumps(asdict(spec)))
    size = sum(f.stat().st_size for f in root.rglob("*.tfrecord")) / 2**20
    print(f"   generated {root} ({size:.0f} MB) in {time.perf_counter() - start:.0f}s", flush=True)
    return root


# ---------------------------------------------------------------------------- 2./3. stages (subprocesses)


def _artifacts(root: Path, spec: DataSpec):
    """The Examples, Predictions, MergedPredictions and CandidateFeatures artifacts of a data set."""
    from tfx.components.util import examples_utils
    from tfx.proto import example_gen_pb2
    from tfx.types import standard_artifact_utils, standard_artifacts

    from components.artifacts import CandidateFeatures, MergedPredictions, Predictions

    examples = standard_artifacts.Examples()
    examples.uri = str(root / "examples")
    examples.split_names = standard_artifact_utils.encode_split_names(split_names())
    examples.set_int_custom_property("num_folds", NUM_FOLDS)
    videos = collections.Counter(split_of(index)[0] for index in range(spec.videos))
    examples.set_json_value_custom_property("split_counts", {split: videos[split] for split in split_names()})
    examples_utils.set_payload_format(examples, example_gen_pb2.FORMAT_TF_EXAMPLE)
    models = []
    for m, name in enumerate(model_names(spec.models)):
        model = Predictions()
        model.uri = str(root / f"model_{m}")
        model.split_names = standard_artifact_utils.encode_split_names(["oof", "holdout", "test"])
        model.set_string_custom_property("config_name", name)
        model.set_int_custom_property("num_classes", spec.classes)
        models.append(model)
    merged = MergedPredictions()
    merged.uri = str(root / "work" / "merged")
    merged.split_names = standard_artifact_utils.encode_split_names(["oof", "holdout", "test"])
    merged.set_json_value_custom_property("model_names", model_names(spec.models))
    merged.set_int_custom_property("num_classes", spec.classes)
    merged.set_int_custom_property("num_folds", NUM_FOLDS)
    merged.set_int_custom_property("top_k", TOP_K)
    oof = sum(videos[f"fold_{k}"] for k in range(NUM_FOLDS))
    merged.set_json_value_custom_property(
        "split_counts", {"oof": oof, "holdout": videos["holdout"], "test": videos["test"]}
    )
    features = CandidateFeatures()
    features.uri = str(root / "work" / "features")
    return examples, models, merged, features


def _context():
    import apache_beam as beam
    from tfx.dsl.components.base.base_beam_executor import BaseBeamExecutor

    return BaseBeamExecutor.Context(make_beam_pipeline_fn=lambda: beam.Pipeline(argv=BEAM_ARGS))


def _merged_batches(merged_dir: Path, split: str, classes: int, scores: bool = True) -> Iterator[dict]:
    """Batches of merged records: fold, labels (bool [B, C]) and, with `scores`, id (str), candidates per
    video (int [B]) and the videos' candidates one after another: classes (int32 [rows]), scores (float32
    [models, rows]) and ranks (int32 [models, rows])."""
    import tensorflow as tf

    from trainer.readers import read_records

    spec = {"fold": tf.io.FixedLenFeature([], tf.int64), "labels": tf.io.VarLenFeature(tf.int64)}
    if scores:
        spec.update(
            {key: tf.io.FixedLenFeature([], tf.string) for key in ("id", "classes", "scores", "ranks")}
        )
    files = sorted(str(p) for p in (merged_dir / f"Split-{split}").glob("*"))
    for serialized in read_records(files).batch(CHUNK):
        parsed = tf.io.parse_example(serialized, spec)
        batch = {"fold": parsed["fold"].numpy(), "labels": np.zeros((len(parsed["fold"]), classes), bool)}
        batch["labels"][parsed["labels"].indices.numpy()[:, 0], parsed["labels"].values.numpy()] = True
        if scores:
            batch["id"] = np.array([v.decode() for v in parsed["id"].numpy()], dtype=object)
            candidates = [np.frombuffer(v, "<i4") for v in parsed["classes"].numpy()]
            batch["count"] = np.array([c.size for c in candidates])
            batch["classes"] = np.concatenate(candidates)
            for key, dtype in (("scores", "<f4"), ("ranks", "<i4")):
                values = zip(parsed[key].numpy(), batch["count"], strict=True)
                batch[key] = np.concatenate(
                    [np.frombuffer(v, dtype).reshape(-1, k) for v, k in values], axis=1
                )
        yield batch


def numpy_features(merged_dir: Path, out_dir: Path, names: list[str], classes: int, top_k: int) -> int:
    """L2Features' rows in vectorised numpy, one Parquet file per split; returns the number of rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from components.l2_features.executor import parquet_schema

    schema, models = parquet_schema(names), len(names)
    videos, class_counts = np.zeros(NUM_FOLDS), np.zeros((NUM_FOLDS, classes))
    for batch in _merged_batches(merged_dir, "oof", classes, scores=False):  # pass 1: priors
        for fold in range(NUM_FOLDS):
            videos[fold] += np.count_nonzero(batch["fold"] == fold)
            class_counts[fold] += batch["labels"][batch["fold"] == fold].sum(axis=0)
    counts = np.vstack([class_counts.sum(0) - class_counts, class_counts.sum(0)])
    totals = np.append(videos.sum() - videos, videos.sum())[:, None]
    priors = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0).astype(np.float32)
    total = 0
    out_dir.mkdir(parents=True, exist_ok=True)
    for split in ("oof", "holdout", "test"):
        with pq.ParquetWriter(out_dir / f"{split}.parquet", schema) as writer:
            for batch in _merged_batches(merged_dir, split, classes):
                video, cls = np.repeat(np.arange(batch["count"].size), batch["count"]), batch["classes"]
                picked, picked_ranks = batch["scores"], batch["ranks"]  # [models, rows]
                columns = {
                    "video_id": pa.array(batch["id"][video], pa.string()),
                    "fold": batch["fold"][video].astype(np.int32),
                    "class_id": cls.astype(np.int32),
                    "target": batch["labels"][video, cls].astype(np.int8),
                    "num_labels": batch["labels"].sum(axis=1).astype(np.int32)[video],
                }
                for m in range(models):
                    columns[schema.names[5 + 2 * m]] = picked[m]
                    columns[schema.names[6 + 2 * m]] = picked_ranks[m]
                columns.update(
                    score_mean=picked.mean(axis=0),
                    score_max=picked.max(axis=0),
                    score_std=picked.std(axis=0),
                    topk_count=(picked_ranks <= top_k).sum(axis=0).astype(np.int32),
                    prior=priors[batch["fold"][video], cls],  # fold -1 (AVERAGED) -> the all-folds row
                )
                writer.write_table(pa.Table.from_pydict(columns, schema=schema))
                total += video.size
    return total


def run_stage(stage: str, root: Path, join_shard_mb: float) -> dict[str, float]:
    """Run one stage on the data set in `root` (inside this process); seconds, CPU seconds, RSS."""
    spec = DataSpec(**json.loads((root / "spec.json").read_text()))
    examples, models, merged, features = _artifacts(root, spec)
    import_rss = peak_rss_mb()
    start, cpu = time.perf_counter(), time.process_time()
    if stage == "merge":
        from components.l2_merge.executor import Executor

        shutil.rmtree(merged.uri, ignore_errors=True)
        inputs = {"examples": [examples], **{f"predictions_{m}": [p] for m, p in enumerate(models)}}
        properties = {"num_models": spec.models, "top_k": TOP_K, "shard_mb": join_shard_mb}
        Executor(_context()).Do(inputs, {"merged": [merged]}, properties)
    elif stage == "features":
        from components.l2_features.executor import Executor

        shutil.rmtree(features.uri, ignore_errors=True)
        Executor(_context()).Do({"merged": [merged]}, {"features": [features]}, {})
    else:
        shutil.rmtree(root / "work" / "numpy", ignore_errors=True)
        names = model_names(spec.models)
        numpy_features(Path(merged.uri), root / "work" / "numpy", names, spec.classes, TOP_K)
    return {
        "seconds": time.perf_counter() - start,
        "cpu_s": time.process_time() - cpu,
        "import_rss_mb": import_rss,
        "peak_rss_mb": peak_rss_mb(),
    }


def stage_subprocess(stage: str, root: Path, join_shard_mb: float) -> dict[str, float]:
    """`run_stage` in a fresh Python process (its own peak RSS); the result is its last stdout line."""
    command = [sys.executable, "-m", "benchmarks.l2_bench", "--stage", stage, "--data", str(root)]
    command += ["--join-shard-mb", str(join_shard_mb)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{stage} on {root} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def check_rows_equal(root: Path) -> str:
    """Compare every split's numpy rows with L2Features' rows (schema and values, sorted by video, class)."""
    import pyarrow.parquet as pq

    keys = [("video_id", "ascending"), ("class_id", "ascending")]
    total = 0
    for split in ("oof", "holdout", "test"):
        component = pq.read_table(root / "work" / "features" / f"Split-{split}").sort_by(keys)
        plain = pq.read_table(root / "work" / "numpy" / f"{split}.parquet").sort_by(keys)
        if not component.schema.equals(plain.schema):
            raise RuntimeError(f"{split}: schemas differ:\n{component.schema}\n---\n{plain.schema}")
        for name in component.column_names:
            a, b = component[name].to_numpy(), plain[name].to_numpy()
            if not np.array_equal(a, b):
                bad = int(np.flatnonzero(a != b)[0]) if a.shape == b.shape else -1
                raise RuntimeError(f"{split}: column {name} differs (first at sorted row {bad})")
        total += component.num_rows
    return f"{total} rows over oof/holdout/test identical (schema and every value)"


def bench_speed(sizes: list[int], models: int, classes: int, out: Path, join_shard_mb: float) -> None:
    """Generate each size, run merge / features / numpy in subprocesses, print the tables."""
    results: dict[int, dict[str, dict[str, float]]] = {}
    check = "not checked"
    for n in sizes:
        root = ensure_data(DataSpec(n, models, classes), out)
        results[n] = {}
        for stage in STAGES:
            results[n][stage] = stage_subprocess(stage, root, join_shard_mb)
            r = results[n][stage]
            print(
                f"   {n} videos, {stage}: {r['seconds']:.1f}s, peak RSS {r['peak_rss_mb']:.0f} MB", flush=True
            )
        if n == min(sizes):
            check = check_rows_equal(root)
        shutil.rmtree(root / "work", ignore_errors=True)
    rows = []
    for stage in STAGES:
        for n in sizes:
            r = results[n][stage]
            growth = r["peak_rss_mb"] - r["import_rss_mb"]
            rows.append((stage, n, r["seconds"], r["cpu_s"], n / r["seconds"], r["peak_rss_mb"], growth))
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print_table(
        f"2. L2 stages, {models} models x {classes} classes, top_k {TOP_K}, each stage a fresh process "
        f"(Beam {' '.join(BEAM_ARGS)}); {os.cpu_count()} CPUs, load average now {load}. "
        "'growth' = peak RSS minus the RSS after imports, before the stage",
        ("stage", "videos", "wall s", "CPU s", "videos/s", "peak RSS MB", "growth MB"),
        rows,
    )
    small, large = min(sizes), max(sizes)
    for stage in STAGES if large > small else ():
        a, b = results[small][stage], results[large][stage]
        peak = b["peak_rss_mb"] / a["peak_rss_mb"]
        growth = (b["peak_rss_mb"] - b["import_rss_mb"]) / max(a["peak_rss_mb"] - a["import_rss_mb"], 1.0)
        verdict = "ok" if peak <= 1.2 else "MISS"
        print(
            f"   {stage}: from {small} to {large} videos peak RSS x{peak:.2f}, growth x{growth:.1f} "
            f"(target: flat, peak <= x1.2): {verdict}"
        )
    print(f"\n3. L2Features vs plain numpy on the same merged records; check at {small} videos: {check}")
    for n in sizes:
        component = n / results[n]["features"]["seconds"]
        plain = n / results[n]["numpy"]["seconds"]
        verdict = "ok" if component / plain >= SPEED_TARGET else "MISS"
        print(
            f"   {n} videos: L2Features {component:.0f} videos/s, numpy {plain:.0f} videos/s, "
            f"ratio {component / plain:.3f} (target >= {SPEED_TARGET}): {verdict}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=Path("yt8m_home"))
    parser.add_argument("--videos", default="10000,100000", help="comma-separated data sizes")
    parser.add_argument("--models", type=int, default=4)
    parser.add_argument("--classes", type=int, default=1000, help="3862 = the real data (slow, see README)")
    parser.add_argument("--out", type=Path, default=Path("bench_out/l2"))
    parser.add_argument("--wait", type=float, default=3600, help="max seconds to wait for a running demo")
    parser.add_argument("--skip-gap", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)  # internal: one stage, then exit
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument(
        "--join-shard-mb", type=float, default=PipelineConfig.join_shard_mb, help="join shard size, MB"
    )
    args = parser.parse_args(argv)
    logging.getLogger().setLevel(logging.WARNING)
    if args.stage:
        print(json.dumps(run_stage(args.stage, args.data, args.join_shard_mb)))
        return
    start = time.perf_counter()
    if not args.skip_gap:
        bench_gap(args.home, args.wait)
    if not args.skip_speed:
        sizes = sorted(int(v) for v in args.videos.split(","))
        print(f"\n2./3. L2 merge + features at {sizes} videos (data under {args.out})", flush=True)
        bench_speed(sizes, args.models, args.classes, args.out.absolute(), args.join_shard_mb)
    print(f"\ntotal {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
