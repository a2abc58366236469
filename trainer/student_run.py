"""TFX Trainer `run_fn` of the students: a tower (A..F) per fold or refit on every fold, and the
EnsembleModel head, trained on the towers' out-of-fold outputs.

Targets are the soft labels joined into the examples by SoftLabels, blended with the hard labels by the
config's `hard_label_weight`. The models read the Transform graph's `features` (`trainer.transform`),
applied to the parsed records in training and inside the export. Early stopping watches GAP@20 against the
hard labels on a validation slice of the training videos (a hash of seed and id), never on an out-of-fold
split. The export is a SavedModel whose `serving_default` maps serialized records to `video_id` and `scores`
(so L1Predict and L1Assemble give the towers' out-of-fold predictions), with the Keras model
(`assets.extra/model.keras`, for the serving ensemble) and the training info
(`assets.extra/training_info.json`) beside it.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

import keras
import tensorflow as tf

from trainer.features import ID, LABELS
from trainer.l1_run import (
    distribution_strategy,
    fit_on_validation_gap,
    in_validation_slice,
    precision_policy,
    write_export,
)
from trainer.readers import read_records
from trainer.split_roles import check_training_splits
from trainer.students import (
    TARGETS,
    TOWER_OUTPUTS,
    StudentConfig,
    compile_student,
    parse_student_config,
    parse_student_examples,
    scores_function,
)
from trainer.transform import FEATURES, FeatureTransform, graph_transform, transform_layer

KERAS_MODEL = os.path.join("assets.extra", "model.keras")
REFIT = -1  # the `fold` of a model trained on every fold


def _model_inputs(config: StudentConfig) -> tuple[str, ...]:
    return (FEATURES,) if config.is_tower else (TOWER_OUTPUTS, FEATURES)


def student_datasets(
    config: StudentConfig,
    train_patterns: list[str],
    num_classes: int,
    transform: FeatureTransform,
    tower_output_size: int = 0,
) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """(train: (inputs, blended targets), validation: (inputs, hard labels)) from the training splits, the
    parsed records passed through `transform` (the Transform graph)."""
    training = config.training
    files = sorted({path for pattern in train_patterns for path in tf.io.gfile.glob(pattern)})
    if not files:
        raise FileNotFoundError(f"no student examples match {train_patterns}")
    inputs = _model_inputs(config)

    def split(validation: bool, target: str, shuffle_seed: int | None) -> tf.data.Dataset:
        dataset = read_records(files, parallel_reads=4)
        if shuffle_seed is not None:
            dataset = dataset.shuffle(10 * training.batch_size, seed=shuffle_seed)
        dataset = (
            dataset.batch(training.batch_size)
            .map(
                lambda records: parse_student_examples(
                    records, num_classes, training.hard_label_weight, tower_output_size
                ),
                num_parallel_calls=tf.data.AUTOTUNE,
            )
            .map(transform, num_parallel_calls=tf.data.AUTOTUNE)
        )

        def keep(batch: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
            in_slice = in_validation_slice(batch[ID], training.validation_fraction, training.seed)
            return {key: tf.boolean_mask(batch[key], in_slice == validation) for key in (*inputs, target)}

        dataset = dataset.map(keep).rebatch(training.batch_size)
        return dataset.map(lambda batch: ({key: batch[key] for key in inputs}, batch[target]))

    train = split(False, TARGETS, training.seed).prefetch(tf.data.AUTOTUNE)
    return train, split(True, LABELS, None).cache()


def train_student(
    config: StudentConfig,
    train_patterns: list[str],
    num_classes: int,
    transform: FeatureTransform,
    tower_count: int = 0,
    log_dir: str | None = None,
) -> tuple[keras.Model, dict[str, list[float]]]:
    """Train one student (the head when tower_count > 0) on the `transform`ed records; returns the
    best-val-GAP model and its history."""
    keras.utils.set_random_seed(config.training.seed)
    train, validation = student_datasets(
        config, train_patterns, num_classes, transform, tower_count * num_classes
    )
    with distribution_strategy().scope(), precision_policy(config.training.mixed_precision):
        model = compile_student(config.build_model(num_classes, tower_count), config.training)
    training = config.training
    return fit_on_validation_gap(
        model, train, validation, training.epochs, training.early_stopping_patience, log_dir
    )


def head_scores_function(
    model: keras.Model, num_classes: int, tower_output_size: int, transform: FeatureTransform
):
    """tf.function: serialized head examples (with `tower_outputs`) -> (parse, `transform`) -> video_id,
    scores."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve(examples: tf.Tensor) -> dict[str, tf.Tensor]:
        parsed = transform(parse_student_examples(examples, num_classes, 0.0, tower_output_size))
        scores = model({key: parsed[key] for key in (TOWER_OUTPUTS, FEATURES)}, training=False)
        return {"video_id": parsed[ID], "scores": scores}

    return serve


def export_student_model(
    model: keras.Model, config: StudentConfig, num_classes: int, path: str, info: dict[str, Any], layer
) -> None:
    """SavedModel (serving_default: records -> the Transform graph's `layer` -> video_id, scores), training
    info and the Keras model."""
    transform = graph_transform(layer)
    if config.is_tower:
        serve = scores_function(model, num_classes, transform)
    else:
        serve = head_scores_function(model, num_classes, model.input[TOWER_OUTPUTS].shape[-1], transform)
    write_export(model, serve, path, info, layer)
    model.save(os.path.join(path, KERAS_MODEL))


def run_fn(fn_args) -> None:
    """TFX Trainer entry point. custom_config: student_config_yaml, student_config_source, fold (-1: refit on
    every fold), train_splits, num_classes, tower_names (the head's towers in order; [] for a tower). Reads
    the Transform graph (`fn_args.transform_graph_path`)."""
    custom = fn_args.custom_config
    config = parse_student_config(custom["student_config_yaml"], custom["student_config_source"])
    num_classes, tower_names = int(custom["num_classes"]), list(custom["tower_names"])
    check_training_splits(custom["train_splits"], fn_args.train_files)
    if not fn_args.transform_graph_path:
        raise ValueError(f"{config.name}: a student Trainer needs the Transform graph")
    layer = transform_layer(fn_args.transform_graph_path)
    model, history = train_student(
        config,
        list(fn_args.train_files),
        num_classes,
        graph_transform(layer),
        len(tower_names),
        fn_args.model_run_dir,
    )
    info = {
        "config": config.name,
        "model": config.model,
        "level": "video",
        "fold": int(custom["fold"]),
        "train_splits": list(custom["train_splits"]),
        "train_files": list(fn_args.train_files),
        "tower_names": tower_names,
        "training": asdict(config.training),
        "history": history,
        "num_classes": num_classes,
        "transform_graph": fn_args.transform_graph_path,
    }
    export_student_model(model, config, num_classes, fn_args.serving_model_dir, info, layer)
