"""L1 benchmark: training and prediction throughput of the pipeline's code paths, and the demo's L1 quality.

1. Training: trainer.l1_run.train_model (the TFX Trainer path: TFRecords -> parse -> validation-slice
   filter -> batches, GAP callback, LR/early-stopping callbacks) against a bare `model.fit` on the same
   training examples held in memory (pre-parsed tensors, same batch size and epochs, no callbacks), for one
   video-level and one frame-level config. Training examples/s of both and their ratio (target >= 0.9).
2. Prediction: the L1Predict Beam path (ReadFromTFRecord -> BatchElements -> PredictDoFn on the exported
   SavedModel -> encode -> WriteToTFRecord, DirectRunner in_memory, one worker) against `model.predict` on
   pre-parsed inputs of the same records. Videos/s and ratio (target >= 0.7).
3. Quality: for each L1Assemble output of the latest demo run in ML Metadata, holdout GAP@20, Hit@1, PERR,
   MAP, GAP on the frame-local classes (synth.json) and on the others, and the OOF GAP (all, local, other).

    python -m benchmarks.l1_bench [--home yt8m_home] [--data data/demo] [--epochs 5] [--skip-speed]

Each measurement is a single run, after a short warm-up. Wall-clock rates depend on whatever else the machine
is doing, so the tables also give CPU-time ratios (process CPU seconds, every thread), which are steadier on a
shared machine; ratios of the epochs after the first separate per-epoch costs from one-time costs (tracing,
dataset set-up), and for prediction the Beam path's fixed cost is measured on a one-record input.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import glob  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable, Iterator, Sequence  # noqa: E402
from dataclasses import dataclass, replace  # noqa: E402
from pathlib import Path  # noqa: E402
from unittest import mock  # noqa: E402

import apache_beam as beam  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from ml_metadata.proto import metadata_store_pb2  # noqa: E402
from tensorflow.core.example import example_pb2  # noqa: E402

from benchmarks import common
from components.fold_split.executor import fold_names  # noqa: E402
from components.l1_predict.executor import _BATCH, PredictDoFn  # noqa: E402
from components.splits import HOLDOUT, OUT_OF_FOLD  # noqa: E402
from pipeline.config import LOCAL_BEAM_PIPELINE_ARGS, load_pipeline_config  # noqa: E402
from pipeline.metadata import node_executions, open_store, property_value  # noqa: E402
from trainer import features as F  # noqa: E402
from trainer.l1_config import L1Config, load_l1_config  # noqa: E402
from trainer.l1_run import export_model, train_model, training_datasets  # noqa: E402
from trainer.losses import get_loss  # noqa: E402
from trainer.metrics import evaluate, gap_at_k  # noqa: E402
from trainer.predictions import decode_prediction  # noqa: E402
from trainer.readers import make_dataset  # noqa: E402

BEAM_ARGS = list(LOCAL_BEAM_PIPELINE_ARGS)  # the local runs'
TRAIN_CONFIGS = ("configs/l1/mlp_bottleneck.yaml", "configs/l1/pooling_mlp.yaml")
DEMO_CONFIG = "configs/demo.yaml"
TRAIN_TARGET, PREDICT_TARGET = 0.9, 0.7
PREDICT_BATCH = _BATCH["max_batch_size"]

Arrays = dict[str, np.ndarray]


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A fixed-width table; floats with 3 decimals (or none above 100)."""
    common.print_table(title, headers, rows, _three_decimals)


def _three_decimals(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3f}"


def machine_note() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    busy = "a pipeline run IS in progress" if common.pipeline_running() else "no pipeline run in progress"
    return (
        f"machine: {os.cpu_count()} CPUs, load average {load}, {busy}. Shared machine: timings are noisy "
        "single runs, compare ratios rather than absolute rates."
    )


@dataclass(frozen=True)
class Span:
    """Wall-clock and process CPU seconds (CPU: every thread of this process, Beam's in_memory runner too)."""

    wall: float
    cpu: float

    @staticmethod
    def now() -> Span:
        return Span(time.perf_counter(), time.process_time())

    def __sub__(self, other: Span) -> Span:
        return Span(self.wall - other.wall, self.cpu - other.cpu)


def timed(call: Callable[[], object]) -> tuple[object, Span]:
    start = Span.now()
    result = call()
    return result, Span.now() - start


def concat_batches(batches: Sequence[Arrays]) -> Arrays:
    return {key: np.concatenate([b[key] for b in batches]) for key in batches[0]}


def read_records(pattern: str) -> list[bytes]:
    """Every record of the (GZIP if *.gz) TFRecord files matching `pattern`."""
    files = sorted(glob.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no files match {pattern}")
    from trainer import readers

    dataset = readers.read_records(files).batch(1024)
    return [record for batch in dataset.as_numpy_iterator() for record in batch]


# ---------------------------------------------------------------------------------------------- training


class EpochTimer(keras.callbacks.Callback):
    """Records the time at the end of each epoch (listed last, so after the other callbacks)."""

    def __init__(self) -> None:
        super().__init__()
        self.ends: list[Span] = []

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.ends.append(Span.now())


@contextlib.contextmanager
def timed_fit(timer: EpochTimer) -> Iterator[None]:
    """Within the block every keras.Model.fit gets `timer` appended to its callbacks."""
    original = keras.Model.fit

    def fit(self: keras.Model, *args, callbacks: list | None = None, **kwargs):
        return original(self, *args, callbacks=[*(callbacks or []), timer], **kwargs)

    with mock.patch.object(keras.Model, "fit", fit):
        yield


@dataclass
class Run:
    """One training run: the whole call (build, compile, datasets, fit, callbacks) and its epoch ends."""

    total: Span
    epoch_ends: list[Span]

    @property
    def epochs(self) -> int:
        return len(self.epoch_ends)

    @property
    def later_epochs(self) -> Span:
        """Mean time of the epochs after the first (no tracing; the validation slice is cached)."""
        if self.epochs < 2:
            return Span(float("nan"), float("nan"))
        spent = self.epoch_ends[-1] - self.epoch_ends[0]
        return Span(spent.wall / (self.epochs - 1), spent.cpu / (self.epochs - 1))


def timed_run(call: Callable[[], object]) -> tuple[object, Run]:
    timer = EpochTimer()
    with timed_fit(timer):
        result, total = timed(call)
    return result, Run(total, timer.ends)


@dataclass
class TrainResult:
    config: L1Config
    examples: int  # training examples per epoch (validation slice excluded)
    trainer: Run
    bare: Run
    model: keras.Model
    input_keys: tuple[str, ...]


def in_memory_training_set(
    config: L1Config, patterns: list[str], num_classes: int
) -> tuple[Arrays, np.ndarray]:
    """The exact training examples of the Trainer path (one epoch of its train dataset), as numpy."""
    train, _ = training_datasets(config, patterns, num_classes)
    inputs, labels = [], []
    for batch_inputs, batch_labels in train.as_numpy_iterator():
        inputs.append(batch_inputs)
        labels.append(batch_labels)
    return concat_batches(inputs), np.concatenate(labels)


def bare_fit(config: L1Config, dataset: tf.data.Dataset, num_classes: int) -> None:
    """Build, compile and fit the model on `dataset` (no callbacks, no shuffling)."""
    keras.utils.set_random_seed(config.training.seed)
    model = config.build_model(num_classes)
    model.compile(
        optimizer=keras.optimizers.Adam(config.training.learning_rate), loss=get_loss(config.training.loss)
    )
    model.fit(dataset, epochs=config.training.epochs, verbose=0)


def bench_training(config_path: str, data: Path, num_classes: int, epochs: int) -> TrainResult:
    """One Trainer-path run and one bare run of `config_path` on the labelled demo data of its layout."""
    config = load_l1_config(config_path)
    config = replace(config, training=replace(config.training, epochs=epochs))
    patterns = [str(data / config.level / f"{split}*.tfrecord") for split in ("train", "validate")]
    inputs, labels = in_memory_training_set(config, patterns, num_classes)  # also warms tf.data up
    in_memory = tf.data.Dataset.from_tensor_slices((inputs, labels))
    in_memory = in_memory.batch(config.training.batch_size).prefetch(tf.data.AUTOTUNE)
    bare_fit(replace(config, training=replace(config.training, epochs=1)), in_memory.take(2), num_classes)
    with contextlib.redirect_stdout(io.StringIO()):  # train_model fits with verbose=2
        (model, _), trainer = timed_run(lambda: train_model(config, patterns, num_classes))
    _, bare = timed_run(lambda: bare_fit(config, in_memory, num_classes))
    return TrainResult(config, len(labels), trainer, bare, model, tuple(inputs))


def print_training(results: list[TrainResult]) -> None:
    rows = []
    for r in results:
        trainer, bare = r.trainer, r.bare
        rates = [r.examples * run.epochs / run.total.wall for run in (trainer, bare)]
        ratio = rates[0] / rates[1]
        rows.append(
            (r.config.name, r.config.level, r.examples, trainer.epochs, trainer.total.wall, bare.total.wall)
            + (*rates, ratio, "ok" if ratio >= TRAIN_TARGET else "MISS", bare.total.cpu / trainer.total.cpu)
            + (
                bare.later_epochs.wall / trainer.later_epochs.wall,
                bare.later_epochs.cpu / trainer.later_epochs.cpu,
            )
        )
    print_table(
        "1. Training throughput: train_model (Trainer path) vs bare model.fit on in-memory tensors, one run\n"
        "   whole run (build, compile, datasets, fit, callbacks); 'epochs 2+' = the epochs after the first;\n"
        "   ratio = Trainer ex/s / bare ex/s (wall); CPU ratio = bare CPU s / Trainer CPU s",
        ("config", "level", "train ex", "epochs", "Trainer s", "bare s", "Trainer ex/s", "bare ex/s", "ratio")
        + (f"target >={TRAIN_TARGET}", "CPU ratio", "ratio 2+", "CPU ratio 2+"),
        rows,
    )


# -------------------------------------------------------------------------------------------- prediction


def beam_predict(model_path: str, pattern: str, out_dir: str) -> Span:
    """Time of the L1Predict Beam path (read, batch, PredictDoFn, encode, write) over `pattern`."""
    start = Span.now()
    with beam.Pipeline(argv=BEAM_ARGS) as pipeline:
        _ = (
            pipeline
            | "Read" >> beam.io.ReadFromTFRecord(pattern)
            | "Batch" >> beam.BatchElements(**_BATCH)
            | "Predict" >> beam.ParDo(PredictDoFn(model_path, 0))
            | "Write"
            >> beam.io.WriteToTFRecord(os.path.join(out_dir, "predictions"), file_name_suffix=".tfrecord")
        )
    return Span.now() - start


@dataclass
class PredictResult:
    config: L1Config
    videos: int
    beam: Span
    beam_one: Span  # the same Beam path over a single record: its fixed cost
    predict: Span  # first model.predict call (traces the predict function)
    predict_warm: Span  # second call
    max_diff: float  # max |Beam score - sigmoid(model.predict)| over all videos and classes


def bench_prediction(result: TrainResult, data: Path, num_classes: int) -> PredictResult:
    """Beam L1Predict vs model.predict over every record of the layout, with the model trained in part 1."""
    config = result.config
    max_frames = config.training.max_frames or F.MAX_FRAMES
    pattern = str(data / config.level / "*.tfrecord")
    dataset = make_dataset([pattern], config.level, num_classes, PREDICT_BATCH, max_frames)
    parsed = concat_batches(list(dataset.as_numpy_iterator()))
    in_memory = tf.data.Dataset.from_tensor_slices({key: parsed[key] for key in result.input_keys})
    in_memory = in_memory.batch(PREDICT_BATCH)
    with tempfile.TemporaryDirectory() as tmp:
        model_path, one = os.path.join(tmp, "model"), os.path.join(tmp, "one.tfrecord")
        export_model(result.model, config, num_classes, model_path, {"config": config.name})
        with tf.io.TFRecordWriter(one) as writer:
            writer.write(read_records(pattern)[0])
        beam_predict(model_path, one, os.path.join(tmp, "warmup"))  # Beam's one-time imports and set-up
        beam_all = beam_predict(model_path, pattern, os.path.join(tmp, "all"))
        beam_one = beam_predict(model_path, one, os.path.join(tmp, "one"))
        written = [decode_prediction(r) for r in read_records(os.path.join(tmp, "all", "predictions*"))]
    logits, predict = timed(lambda: result.model.predict(in_memory, verbose=0))
    _, predict_warm = timed(lambda: result.model.predict(in_memory, verbose=0))
    ids = [vid.decode() for vid in parsed[F.ID]]
    if sorted(vid for vid, _, _ in written) != sorted(ids):
        raise RuntimeError(f"Beam wrote {len(written)} predictions for {len(ids)} records, or other ids")
    expected = dict(zip(ids, 1 / (1 + np.exp(-np.asarray(logits, np.float64))), strict=True))
    max_diff = max(float(np.abs(scores - expected[vid]).max()) for vid, _, scores in written)
    return PredictResult(config, len(ids), beam_all, beam_one, predict, predict_warm, max_diff)


def print_prediction(results: list[PredictResult]) -> None:
    rows = []
    for r in results:
        beam_rate, predict_rate = r.videos / r.beam.wall, r.videos / r.predict.wall
        ratio = beam_rate / predict_rate
        marginal = (r.videos - 1) / (r.beam - r.beam_one).wall
        rows.append(
            (r.config.name, r.config.level, r.videos, r.beam.wall, r.predict.wall, beam_rate, predict_rate)
            + (ratio, "ok" if ratio >= PREDICT_TARGET else "MISS", r.predict.cpu / r.beam.cpu)
            + (r.beam_one.wall, marginal, r.videos / r.predict_warm.wall)
            + (marginal / (r.videos / r.predict_warm.wall), f"{r.max_diff:.1e}")
        )
    print_table(
        "2. Prediction throughput: L1Predict Beam path vs model.predict on pre-parsed inputs, one run each\n"
        "   ratio = Beam v/s / predict v/s (wall); CPU ratio = predict CPU s / Beam CPU s;\n"
        "   'marg' = Beam minus its fixed cost (the same path over 1 record) vs predict's second call;\n"
        "   max |diff| = Beam scores (prediction records) vs sigmoid(model.predict)",
        ("config", "level", "videos", "Beam s", "predict s", "Beam v/s", "predict v/s", "ratio")
        + (f"target >={PREDICT_TARGET}", "CPU ratio", "Beam 1-rec s", "Beam marg v/s", "predict 2nd v/s")
        + ("marg ratio", "max |diff|"),
        rows,
    )


# ----------------------------------------------------------------------------------------------- quality


def split_labels(uri: str, split: str, level: str) -> dict[str, tuple[int, ...]]:
    """Video id -> class ids of one split of a FoldSplit output."""
    labels = {}
    for record in read_records(os.path.join(uri, f"Split-{split}", "*")):
        if level == "video":
            features = example_pb2.Example.FromString(record).features.feature
        else:
            features = example_pb2.SequenceExample.FromString(record).context.feature
        labels[features[F.ID].bytes_list.value[0].decode()] = tuple(features[F.LABELS].int64_list.value)
    return labels


def scores_and_labels(
    uri: str, split: str, truth: dict[str, tuple[int, ...]], num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """A prediction split's scores and the multi-hot labels of the same videos (every id must be known)."""
    decoded = [decode_prediction(r) for r in read_records(os.path.join(uri, f"Split-{split}", "*"))]
    missing = {vid for vid, _, _ in decoded} ^ set(truth)
    if missing:
        raise RuntimeError(
            f"{uri} Split-{split}: {len(missing)} videos differ from the labels, e.g. {min(missing)}"
        )
    scores = np.stack([s for _, _, s in decoded])
    labels = np.zeros_like(scores)
    for row, (vid, _, _) in enumerate(decoded):
        labels[row, list(truth[vid])] = 1
    return scores, labels


def bench_quality(home: Path, data: Path) -> None:
    """Holdout metrics (overall, frame-local classes, others) and OOF GAP of every assembled L1 model."""
    pipeline = load_pipeline_config(DEMO_CONFIG)
    sqlite = home / "metadata.sqlite"
    if not sqlite.exists():
        print(f"\n3. Quality: no ML Metadata at {sqlite}; run the demo first (`make demo`).")
        return
    if common.pipeline_running():
        print("\n   note: a pipeline run is in progress; ML Metadata may show a partial run.")
    # Per node, its latest finished execution (a run in progress leaves the previous one visible).
    executions = {
        e.node_id: e
        for e in node_executions(open_store(str(sqlite)), pipeline.pipeline_name)
        if e.state in ("COMPLETE", "CACHED")
    }
    assembled = [e for node, e in sorted(executions.items()) if node.startswith("L1Assemble_")]
    folds = executions.get("VideoFoldSplit") or executions.get("FrameFoldSplit")
    if not assembled or folds is None:
        print(f"\n3. Quality: no finished L1Assemble in {sqlite}; run the demo first (`make demo`).")
        return
    fold_artifact = folds.outputs["split_examples"][0]
    level = "video" if folds.node_id.startswith("Video") else "frame"
    num_folds = int(property_value(fold_artifact, "num_folds"))
    holdout = split_labels(fold_artifact.uri, HOLDOUT, level)
    oof = {
        k: v
        for split in fold_names(num_folds)
        for k, v in split_labels(fold_artifact.uri, split, level).items()
    }
    frame_local = json.loads((data / "synth.json").read_text())["frame_local_classes"]
    rows = [quality_row(e.outputs["predictions"][0], holdout, oof, frame_local) for e in assembled]
    rows.sort(key=lambda r: (r[1], -r[2]))
    print_table(
        f"3. L1 quality, latest '{pipeline.pipeline_name}' run in {sqlite}: {len(holdout)} holdout videos, "
        f"{len(oof)} OOF videos; 'local' = the {len(frame_local)} frame-local classes, 'other' = the rest",
        ("config", "level", "GAP@20", "Hit@1", "PERR", "MAP", "GAP local", "GAP other")
        + ("OOF GAP", "OOF local", "OOF other"),
        rows,
    )
    for column, name in ((6, "holdout GAP local"), (7, "holdout GAP other"), (9, "OOF GAP local")):
        summary = []
        for level in ("video", "frame"):
            values = [r[column] for r in rows if r[1] == level] or [np.nan]
            summary.append(f"{level}-level models mean {np.mean(values):.3f} best {np.max(values):.3f}")
        print(f"   {name}: {'; '.join(summary)}")


def quality_row(
    artifact: metadata_store_pb2.Artifact,
    holdout: dict[str, tuple[int, ...]],
    oof: dict[str, tuple[int, ...]],
    frame_local: list[int],
) -> tuple:
    """(name, level, holdout GAP, Hit@1, PERR, MAP, GAP local, GAP other, OOF GAP, OOF local, OOF other)."""
    num_classes = int(property_value(artifact, "num_classes"))
    others = sorted(set(range(num_classes)) - set(frame_local))
    row: tuple = (property_value(artifact, "config_name"), property_value(artifact, "level"))
    scores, labels = scores_and_labels(artifact.uri, HOLDOUT, holdout, num_classes)
    metrics = evaluate(scores, labels)
    row += (metrics["gap"], metrics["hit_at_1"], metrics["perr"], metrics["map"])
    row += (
        gap_at_k(scores[:, frame_local], labels[:, frame_local]),
        gap_at_k(scores[:, others], labels[:, others]),
    )
    scores, labels = scores_and_labels(artifact.uri, OUT_OF_FOLD, oof, num_classes)
    row += (gap_at_k(scores, labels), gap_at_k(scores[:, frame_local], labels[:, frame_local]))
    return row + (gap_at_k(scores[:, others], labels[:, others]),)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=Path("yt8m_home"), help="pipeline home (ML Metadata)")
    parser.add_argument("--data", type=Path, default=Path("data/demo"), help="demo data (yt8m synth)")
    parser.add_argument("--epochs", type=int, default=5, help="training epochs of part 1")
    parser.add_argument("--skip-speed", action="store_true", help="only part 3 (quality)")
    args = parser.parse_args(argv)
    logging.getLogger().setLevel(logging.WARNING)
    # Keras warns at the end of every first epoch over a dataset of unknown size (the Trainer's filter).
    warnings.filterwarnings("ignore", message="Your input ran out of data", category=UserWarning)
    warnings.filterwarnings("ignore", message="`shuffle=True` was passed", category=UserWarning)
    print(machine_note())
    num_classes = json.loads((args.data / "synth.json").read_text())["config"]["classes"]
    if not args.skip_speed:
        results = [bench_training(path, args.data, num_classes, args.epochs) for path in TRAIN_CONFIGS]
        print_training(results)
        print_prediction([bench_prediction(r, args.data, num_classes) for r in results])
    bench_quality(args.home, args.data)


if __name__ == "__main__":
    main()
