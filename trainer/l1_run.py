"""TFX Trainer `run_fn` of the L1 models: one (config, fold) per Trainer node.

The model trains on the other folds' videos minus a validation slice carved from them by a hash of the video
id (early stopping and LR schedule watch GAP on that slice, never the out-of-fold split). It is exported as a
SavedModel whose `serving_default` maps serialized records of its layout to `video_id` and `scores`.
What the model was trained on is written to `assets.extra/training_info.json` inside the export, so the
prediction stage can prove that no out-of-fold prediction comes from a model that saw the video.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import keras
import tensorflow as tf

from trainer import features as F
from trainer.l1_config import L1Config, parse_l1_config
from trainer.losses import get_loss, mixup
from trainer.metrics import concatenate, top_rows, top_rows_gap
from trainer.readers import make_dataset, parse_frame_example, parse_video_examples
from trainer.split_roles import check_training_splits
from trainer.transform import FeatureTransform, graph_transform, transform_layer

TRAINING_INFO = os.path.join("assets.extra", "training_info.json")
EPOCH_LOG = "epochs.log"  # in the Trainer's model_run artifact, beside the TensorBoard logs
_HASH_BUCKETS = 10_000
GAP_K = 20  # val_gap is GAP@20, the competition metric


def _model_inputs(level: str) -> tuple[str, ...]:
    return (F.MEAN_RGB, F.MEAN_AUDIO) if level == "video" else (F.FRAME_RGB, F.FRAME_AUDIO, F.MASK)


def in_validation_slice(video_ids: tf.Tensor, fraction: float, seed: int) -> tf.Tensor:
    """Whether each training video belongs to the validation slice (a stable hash of seed and id)."""
    salted = tf.strings.join([tf.strings.as_string(seed), video_ids], separator=":")
    return tf.strings.to_hash_bucket_fast(salted, _HASH_BUCKETS) < int(round(fraction * _HASH_BUCKETS))


def training_datasets(
    config: L1Config, train_patterns: list[str], num_classes: int, transform: FeatureTransform | None = None
) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """(train, validation) datasets of (inputs, multi-hot labels) from the training folds, the parsed
    features passed through `transform` when given."""
    training = config.training
    inputs = _model_inputs(config.level)
    max_frames = training.max_frames or F.MAX_FRAMES

    def split(validation: bool, shuffle_seed: int | None) -> tf.data.Dataset:
        dataset = make_dataset(
            train_patterns,
            config.level,
            num_classes,
            training.batch_size,
            max_frames,
            shuffle_seed=shuffle_seed,
        )
        if transform is not None:
            dataset = dataset.map(transform, num_parallel_calls=tf.data.AUTOTUNE)

        def keep(batch: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
            in_slice = in_validation_slice(batch[F.ID], training.validation_fraction, training.seed)
            chosen = in_slice == validation
            return {key: tf.boolean_mask(batch[key], chosen) for key in (*inputs, F.LABELS)}

        dataset = dataset.map(keep).rebatch(training.batch_size)
        return dataset.map(lambda x: ({k: x[k] for k in inputs}, x[F.LABELS]))

    train = split(False, training.seed)
    if training.mixup_alpha > 0:
        train = train.enumerate().map(
            lambda step, batch: mixup(
                batch[0], batch[1], training.mixup_alpha, tf.stack([training.seed, step])
            )
        )
    validation = split(True, None)
    if training.max_validation_videos:
        validation = validation.unbatch().take(training.max_validation_videos).batch(training.batch_size)
    return train.prefetch(tf.data.AUTOTUNE), validation.cache()


class ValidationGap(keras.callbacks.Callback):
    """Adds `val_gap` (GAP@20 on the validation slice) to the epoch logs, before the callbacks that use it."""

    def __init__(self, validation: tf.data.Dataset) -> None:
        super().__init__()
        self._validation = validation
        self._predict = None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self._predict is None:
            self._predict = tf.function(lambda x: self.model(x, training=False), reduce_retracing=True)
        rows = [  # each batch cut to its videos' top rows: memory follows k, not the classes
            top_rows(self._predict(inputs).numpy(), batch_labels.numpy(), GAP_K)
            for inputs, batch_labels in self._validation
        ]
        gap = top_rows_gap(concatenate(rows)) if rows else 0.0
        if logs is not None:
            logs["val_gap"] = gap


class EpochLog(keras.callbacks.Callback):
    """One line per epoch (every metric in the epoch logs and the epoch's seconds) in `path`, rewritten
    after each epoch (gs:// files cannot be appended to): the Trainer node's training log."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self._path = path
        self._lines: list[str] = []
        self._began = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._began = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        metrics = "  ".join(f"{key} {float(value):.4f}" for key, value in sorted((logs or {}).items()))
        seconds = time.monotonic() - self._began
        self._lines.append(f"epoch {epoch + 1}/{self.params.get('epochs')}  {metrics}  ({seconds:.1f} s)\n")
        with tf.io.gfile.GFile(self._path, "w") as handle:
            handle.write("".join(self._lines))


def distribution_strategy() -> tf.distribute.Strategy:
    """All visible GPUs (MirroredStrategy) when there are several, else the default device."""
    gpus = tf.config.list_logical_devices("GPU")
    return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()


@contextlib.contextmanager
def precision_policy(mixed: bool) -> Iterator[None]:
    """Keras's global dtype policy while building and training: mixed_float16 (float16 compute, float32
    weights; the models' output layers stay float32, and compile adds loss scaling) or float32."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16" if mixed else "float32")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def train_model(
    config: L1Config,
    train_patterns: list[str],
    num_classes: int,
    log_dir: str | None = None,
    transform: FeatureTransform | None = None,
) -> tuple[keras.Model, dict[str, Any]]:
    """Train one L1 model on the `transform`ed features; returns it (best validation-GAP weights) and its
    training history."""
    keras.utils.set_random_seed(config.training.seed)
    train, validation = training_datasets(config, train_patterns, num_classes, transform)
    with distribution_strategy().scope(), precision_policy(config.training.mixed_precision):
        model = config.build_model(num_classes)
        model.compile(
            optimizer=keras.optimizers.Adam(config.training.learning_rate),
            loss=get_loss(config.training.loss),
        )
    reduce_lr = keras.callbacks.ReduceLROnPlateau(
        monitor="val_gap",
        mode="max",
        factor=config.training.reduce_lr_factor,
        patience=config.training.reduce_lr_patience,
    )
    return fit_on_validation_gap(
        model,
        train,
        validation,
        config.training.epochs,
        config.training.early_stopping_patience,
        log_dir,
        reduce_lr,
    )


def fit_on_validation_gap(
    model: keras.Model,
    train: tf.data.Dataset,
    validation: tf.data.Dataset,
    epochs: int,
    patience: int,
    log_dir: str | None,
    *callbacks: keras.callbacks.Callback,
) -> tuple[keras.Model, dict[str, list[float]]]:
    """Fit with `val_gap` in the epoch logs (before `callbacks` see them) and early stopping that restores
    the best-GAP weights; TensorBoard logs and one line per epoch (EPOCH_LOG) in `log_dir`, nothing on the
    console. Returns the model and its history."""
    early_stopping = keras.callbacks.EarlyStopping(
        monitor="val_gap", mode="max", patience=patience, restore_best_weights=True
    )
    every = [ValidationGap(validation), *callbacks, early_stopping]
    if log_dir:
        every += [keras.callbacks.TensorBoard(log_dir=log_dir), EpochLog(os.path.join(log_dir, EPOCH_LOG))]
    with warnings.catch_warnings():
        # Keras warns at the end of the first epoch of a dataset of unknown length, which ours are; the
        # datasets shuffle themselves (shuffle=False silences the other warning).
        warnings.filterwarnings("ignore", message="Your input ran out of data", category=UserWarning)
        history = model.fit(train, epochs=epochs, callbacks=every, verbose=0, shuffle=False)
    return model, {key: [float(v) for v in values] for key, values in history.history.items()}


def serving_function(
    model: keras.Model,
    level: str,
    num_classes: int,
    max_frames: int,
    transform: FeatureTransform | None = None,
):
    """tf.function: serialized records of `level` -> {"video_id", "scores" (sigmoid probabilities)}; the
    parsed features pass through `transform` (the model's Transform graph) when given."""
    inputs = _model_inputs(level)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve(examples: tf.Tensor) -> dict[str, tf.Tensor]:
        if level == "video":
            parsed = parse_video_examples(examples, num_classes)
            if transform is not None:
                parsed = transform(parsed)
        else:
            signature = {
                F.ID: tf.TensorSpec([], tf.string),
                F.FRAME_RGB: tf.TensorSpec([max_frames, F.RGB_SIZE], tf.float32),
                F.FRAME_AUDIO: tf.TensorSpec([max_frames, F.AUDIO_SIZE], tf.float32),
                F.MASK: tf.TensorSpec([max_frames], tf.float32),
            }
            parsed = tf.map_fn(
                lambda record: {
                    k: v
                    for k, v in parse_frame_example(record, num_classes, max_frames).items()
                    if k in signature
                },
                examples,
                fn_output_signature=signature,
            )
        logits = model({k: parsed[k] for k in inputs}, training=False)
        return {"video_id": parsed[F.ID], "scores": tf.sigmoid(logits)}

    return serve


def write_export(model: keras.Model, serve, path: str, info: dict[str, Any], *tracked) -> None:
    """The SavedModel with `serve` as serving_default, and `info` as its training info; `tracked`: what else
    `serve` uses (the Transform graph's layer)."""
    archive = keras.export.ExportArchive()
    for resource in (model, *tracked):
        archive.track(resource)
    archive.add_endpoint("serving_default", serve)
    archive.write_out(path, verbose=False)
    info_path = os.path.join(path, TRAINING_INFO)
    tf.io.gfile.makedirs(os.path.dirname(info_path))
    with tf.io.gfile.GFile(info_path, "w") as handle:
        json.dump(info, handle, indent=1)


def export_model(
    model: keras.Model,
    config: L1Config,
    num_classes: int,
    path: str,
    info: dict[str, Any],
    layer=None,
) -> None:
    """Write the SavedModel (serving_default: records -> video_id, scores, through the Transform graph's
    `layer` when given) and its training info."""
    max_frames = config.training.max_frames or F.MAX_FRAMES
    transform = graph_transform(layer, config.training.standardize_inputs) if layer else None
    serve = serving_function(model, config.level, num_classes, max_frames, transform)
    write_export(model, serve, path, info, *([layer] if layer else []))


def run_fn(fn_args) -> None:
    """TFX Trainer entry point. custom_config: l1_config_yaml, l1_config_source, fold, num_classes. A
    video-level model reads the Transform graph (`fn_args.transform_graph_path`) in training and serving."""
    custom = fn_args.custom_config
    config = parse_l1_config(custom["l1_config_yaml"], custom["l1_config_source"])
    num_classes = int(custom["num_classes"])
    check_training_splits(custom["train_splits"], fn_args.train_files)
    transform_graph = fn_args.transform_graph_path if config.level == "video" else None
    if config.level == "video" and not transform_graph:
        raise ValueError(f"{config.name}: a video-level L1 Trainer needs the Transform graph")
    layer = transform_layer(transform_graph) if transform_graph else None
    model, history = train_model(
        config,
        list(fn_args.train_files),
        num_classes,
        fn_args.model_run_dir,
        graph_transform(layer, config.training.standardize_inputs) if layer else None,
    )
    info = {
        "config": config.name,
        "model": config.model,
        "level": config.level,
        "fold": int(custom["fold"]),
        "train_splits": list(custom["train_splits"]),
        "train_files": list(fn_args.train_files),
        "validation_fraction": config.training.validation_fraction,
        "training": asdict(config.training),
        "history": history,
        "num_classes": num_classes,
        "transform_graph": transform_graph,
    }
    export_model(model, config, num_classes, fn_args.serving_model_dir, info, layer)
