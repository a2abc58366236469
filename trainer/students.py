"""The distilled student ("EnsembleModel" of the 2nd-place solution): six towers A..F trained on the soft
labels, an ensemble head trained on the towers' out-of-fold outputs, and one serving graph of all seven.

Every model reads `features` [B, 1152]: L2-normalised concat(mean_rgb, mean_audio), computed by the
pipeline's Transform graph (`trainer.transform`), which the run_fns apply to the parsed records in training
and inside every exported SavedModel. A tower returns class probabilities [B, num_classes]. The head also
reads `tower_outputs` [B, towers * num_classes]: the towers' probabilities concatenated in tower order
(out-of-fold ones for training). The serving graph runs towers and head in inference mode (BatchNorm moving
statistics, no dropout) whatever `training` it is called with. Sizes come from YAML configs.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import keras
import tensorflow as tf
from keras import ops

from trainer import soft_labels
from trainer.config_schema import ConfigError, build, parse_yaml, read_text
from trainer.features import AUDIO_SIZE, ID, LABELS, NUM_CLASSES, RGB_SIZE
from trainer.models import VIDEO_LEVEL, ModelSpec, ParamError
from trainer.readers import VIDEO_FEATURE_SPEC, multi_hot, parse_video_examples
from trainer.transform import FEATURES, FeatureTransform, graph_transform

FEATURES_SIZE = RGB_SIZE + AUDIO_SIZE
TOWER_OUTPUTS = "tower_outputs"
TARGETS = "targets"
TOWERS = ("A", "B", "C", "D", "E", "F")
ENSEMBLE = "ensemble"
StudentModel = Literal["A", "B", "C", "D", "E", "F", "ensemble"]
SIZE_LIMIT_BYTES = 1_000_000_000  # the challenge's 1 GB model limit
FLOAT32_BYTES = 4
TOP_K = 20
# Per BatchNormalization unit: gamma, beta, moving mean, moving variance.
_BATCHNORM_WEIGHTS = 4
_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")

# ---------------------------------------------------------------------------------------------- custom layers


@keras.saving.register_keras_serializable(package="yt8m")
class InferenceMode(keras.layers.Layer):
    """Calls the wrapped model with training=False always, so an outer training=True cannot switch it back."""

    def __init__(self, wrapped: keras.Model, **kwargs):
        super().__init__(**kwargs)
        self.wrapped = wrapped

    def call(self, inputs):
        return self.wrapped(inputs, training=False)

    def compute_output_shape(self, input_shape):
        return self.wrapped.compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(), "wrapped": keras.saving.serialize_keras_object(self.wrapped)}

    @classmethod
    def from_config(cls, config):
        wrapped = keras.saving.deserialize_keras_object(config.pop("wrapped"))
        return cls(wrapped, **config)


@keras.saving.register_keras_serializable(package="yt8m")
class TowerMeanLogit(keras.layers.Layer):
    """tower_outputs [B, towers * classes] (probabilities, tower after tower) -> logit of their mean."""

    def __init__(self, num_classes: int, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes

    def call(self, tower_outputs):
        per_tower = ops.reshape(
            tower_outputs, (-1, tower_outputs.shape[-1] // self.num_classes, self.num_classes)
        )
        mean = ops.clip(ops.mean(per_tower, axis=1), 1e-6, 1.0 - 1e-6)
        return ops.log(mean) - ops.log1p(-mean)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


# -------------------------------------------------------------------------------------------- building blocks


def _inputs() -> dict[str, keras.KerasTensor]:
    return {FEATURES: keras.Input(shape=(FEATURES_SIZE,), name=FEATURES, dtype="float32")}


def _features(inputs: dict[str, keras.KerasTensor]):
    return inputs[FEATURES]


def _stack(x, widths: tuple[int, ...], activation: Callable[[], keras.layers.Layer], dropout: float):
    """Per width: Linear (no bias) -> BatchNorm -> activation -> Dropout (if dropout > 0)."""
    for units in widths:
        x = keras.layers.Dense(units, use_bias=False)(x)
        x = activation()(keras.layers.BatchNormalization()(x))
        if dropout:
            x = keras.layers.Dropout(dropout)(x)
    return x


def _swish() -> keras.layers.Layer:
    return keras.layers.Activation("silu")


def _leaky_relu(slope: float) -> Callable[[], keras.layers.Layer]:
    return lambda: keras.layers.LeakyReLU(negative_slope=slope)


def _model(inputs, x, num_classes: int, name: str) -> keras.Model:
    probabilities = keras.layers.Dense(
        num_classes, activation="sigmoid", name="probabilities", dtype="float32"
    )
    return keras.Model(inputs, probabilities(x), name=name)


def _two_branches(
    x,
    rgb_widths: tuple[int, ...],
    audio_widths: tuple[int, ...],
    widths: tuple[int, ...],
    activation: Callable[[], keras.layers.Layer],
    dropout: float,
):
    """x split back into its rgb and audio parts, one stack each, concatenated, then the joint stack."""
    rgb = _stack(x[:, :RGB_SIZE], rgb_widths, activation, dropout)
    audio = _stack(x[:, RGB_SIZE:], audio_widths, activation, dropout)
    return _stack(keras.layers.Concatenate()([rgb, audio]), widths, activation, dropout)


# --------------------------------------------------------------------------------------------------- towers


def build_tower_a(
    num_classes: int, *, widths: tuple[int, ...] = (1024, 1024), dropout: float = 0.0
) -> keras.Model:
    """A: FC -> BN -> swish stack, sigmoid head."""
    inputs = _inputs()
    return _model(inputs, _stack(_features(inputs), widths, _swish, dropout), num_classes, "tower_a")


def build_tower_b(
    num_classes: int, *, widths: tuple[int, ...] = (1024,), dropout: float = 0.0
) -> keras.Model:
    """B: FC -> BN -> ReLU stack, sigmoid head."""
    inputs = _inputs()
    return _model(
        inputs, _stack(_features(inputs), widths, keras.layers.ReLU, dropout), num_classes, "tower_b"
    )


def build_tower_c(
    num_classes: int,
    *,
    rgb_widths: tuple[int, ...] = (1024,),
    audio_widths: tuple[int, ...] = (256,),
    widths: tuple[int, ...] = (),
    dropout: float = 0.0,
    leaky_relu_slope: float = 0.2,
) -> keras.Model:
    """C: rgb and audio FC -> BN -> leaky-ReLU branches, concatenated, joint FC stack, sigmoid head."""
    inputs = _inputs()
    activation = _leaky_relu(leaky_relu_slope)
    x = _two_branches(_features(inputs), rgb_widths, audio_widths, widths, activation, dropout)
    return _model(inputs, x, num_classes, "tower_c")


def build_tower_d(
    num_classes: int,
    *,
    rgb_widths: tuple[int, ...] = (1024, 1024),
    audio_widths: tuple[int, ...] = (256, 256),
    widths: tuple[int, ...] = (),
    dropout: float = 0.0,
) -> keras.Model:
    """D: separate rgb and audio FC -> BN -> swish branches, concatenated, joint FC stack, sigmoid head."""
    inputs = _inputs()
    x = _two_branches(_features(inputs), rgb_widths, audio_widths, widths, _swish, dropout)
    return _model(inputs, x, num_classes, "tower_d")


def build_tower_e(
    num_classes: int, *, widths: tuple[int, ...] = (4096,) * 4, dropout: float = 0.0
) -> keras.Model:
    """E: wide FC -> BN -> ReLU stack, sigmoid head."""
    inputs = _inputs()
    return _model(
        inputs, _stack(_features(inputs), widths, keras.layers.ReLU, dropout), num_classes, "tower_e"
    )


def build_tower_f(
    num_classes: int,
    *,
    widths: tuple[int, ...] = (2048,) * 5,
    dropout: float = 0.3,
    leaky_relu_slope: float = 0.2,
) -> keras.Model:
    """F: FC -> BN -> leaky-ReLU -> Dropout stack, sigmoid head."""
    inputs = _inputs()
    x = _stack(_features(inputs), widths, _leaky_relu(leaky_relu_slope), dropout)
    return _model(inputs, x, num_classes, "tower_f")


# ----------------------------------------------------------------------------------------- head and serving


def build_ensemble_head(
    num_classes: int,
    tower_output_count: int = len(TOWERS),
    *,
    hidden: tuple[int, ...] = (8192, 6000),
    dropout: float = 0.0,
    tower_mean_prior: bool = False,
) -> keras.Model:
    """concat(tower_outputs [B, tower_output_count * num_classes], x) -> FC -> BN -> ReLU per hidden width
    -> sigmoid head. Inputs: `tower_outputs`, `features`. With tower_mean_prior the head's
    logits (zero-initialised) are a correction added to the logit of the towers' mean probability, so
    training starts from the towers' average instead of from scratch (no extra weights)."""
    inputs = {
        TOWER_OUTPUTS: keras.Input(shape=(tower_output_count * num_classes,), name=TOWER_OUTPUTS),
        **_inputs(),
    }
    x = keras.layers.Concatenate()([inputs[TOWER_OUTPUTS], _features(inputs)])
    x = _stack(x, hidden, keras.layers.ReLU, dropout)
    if not tower_mean_prior:
        return _model(inputs, x, num_classes, "ensemble_head")
    correction = keras.layers.Dense(
        num_classes, kernel_initializer="zeros", name="correction", dtype="float32"
    )(x)
    prior = TowerMeanLogit(num_classes, name="tower_mean_logit", dtype="float32")(inputs[TOWER_OUTPUTS])
    logits = keras.layers.Add(dtype="float32")([prior, correction])
    probabilities = keras.layers.Activation("sigmoid", name="probabilities", dtype="float32")(logits)
    return keras.Model(inputs, probabilities, name="ensemble_head")


def build_serving_ensemble(towers: Sequence[keras.Model], head: keras.Model) -> keras.Model:
    """One model features -> probabilities: the towers feed the head, all in inference mode."""
    num_classes = head.output.shape[-1]
    for tower in towers:
        if tower.output.shape[-1] != num_classes:
            raise ValueError(
                f"tower {tower.name!r} has {tower.output.shape[-1]} outputs, the head {num_classes}"
            )
    if head.input[TOWER_OUTPUTS].shape[-1] != len(towers) * num_classes:
        raise ValueError(
            f"the head reads {head.input[TOWER_OUTPUTS].shape[-1]} tower outputs, "
            f"{len(towers)} towers give {len(towers) * num_classes}"
        )
    inputs = _inputs()
    outputs = [InferenceMode(tower, name=tower.name)(inputs) for tower in towers]
    tower_outputs = keras.layers.Concatenate(name=TOWER_OUTPUTS)(outputs)
    probabilities = InferenceMode(head, name=head.name)({TOWER_OUTPUTS: tower_outputs, **inputs})
    return keras.Model(inputs, probabilities, name="student")


def _probabilities(
    model: keras.Model, examples: tf.Tensor, num_classes: int, transform: FeatureTransform
) -> dict[str, tf.Tensor]:
    parsed = transform(parse_video_examples(examples, num_classes))
    return {"video_id": parsed[ID], "scores": model({FEATURES: parsed[FEATURES]}, training=False)}


def serving_function(model: keras.Model, num_classes: int, transform: FeatureTransform, top_k: int = TOP_K):
    """tf.function: serialized video-level records -> (parse, `transform`) -> video_id, top-k
    `class_indexes`, `predictions`."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve(examples: tf.Tensor) -> dict[str, tf.Tensor]:
        outputs = _probabilities(model, examples, num_classes, transform)
        scores, classes = tf.math.top_k(outputs["scores"], k=min(top_k, num_classes))
        return {
            "video_id": outputs["video_id"],
            "class_indexes": tf.cast(classes, tf.int32),
            "predictions": scores,
        }

    return serve


def scores_function(model: keras.Model, num_classes: int, transform: FeatureTransform):
    """tf.function: serialized video-level records -> (parse, `transform`) -> video_id, `scores` (every
    class's probability)."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def scores(examples: tf.Tensor) -> dict[str, tf.Tensor]:
        return _probabilities(model, examples, num_classes, transform)

    return scores


def export_student(model: keras.Model, path: str, num_classes: int, layer, top_k: int = TOP_K) -> None:
    """One SavedModel with the Transform graph's `layer` inside: `serving_default` maps records to
    video_id, class_indexes, predictions (top-k) and `scores` to video_id, scores (all classes)."""
    transform = graph_transform(layer)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.track(layer)
    archive.add_endpoint("serving_default", serving_function(model, num_classes, transform, top_k))
    archive.add_endpoint("scores", scores_function(model, num_classes, transform))
    archive.write_out(path, verbose=False)


# -------------------------------------------------------------------------------------------------- training


@keras.saving.register_keras_serializable(package="yt8m")
def soft_binary_crossentropy(y_true, y_pred):
    """Binary cross-entropy of probabilities against soft targets in [0, 1], mean over classes."""
    return ops.mean(ops.binary_crossentropy(ops.cast(y_true, y_pred.dtype), y_pred), axis=-1)


def blend_targets(soft: tf.Tensor, hard: tf.Tensor, hard_label_weight: float) -> tf.Tensor:
    """(1 - w) * soft + w * hard."""
    return (1.0 - hard_label_weight) * soft + hard_label_weight * tf.cast(hard, soft.dtype)


def parse_student_examples(
    serialized: tf.Tensor, num_classes: int, hard_label_weight: float, tower_output_size: int = 0
) -> dict[str, tf.Tensor]:
    """A batch of student records (video-level records with soft labels, and `tower_outputs` when
    tower_output_size > 0) -> id, mean_rgb, mean_audio (as read; the Transform graph makes `features`),
    [tower_outputs], multi-hot labels and the blended `targets`. Records without soft labels (holdout,
    test) get soft targets of 0."""
    spec = {**VIDEO_FEATURE_SPEC, **soft_labels.SOFT_LABEL_SPEC}
    if tower_output_size:
        spec[TOWER_OUTPUTS] = tf.io.FixedLenFeature([tower_output_size], tf.float32)
    parsed = tf.io.parse_example(serialized, spec)
    parsed[LABELS] = multi_hot(parsed[LABELS], num_classes)
    soft = soft_labels.dense_soft_labels(
        parsed.pop(soft_labels.SOFT_CLASS_IDS), parsed.pop(soft_labels.SOFT_SCORES), num_classes
    )
    parsed[TARGETS] = blend_targets(soft, parsed[LABELS], hard_label_weight)
    return parsed


def make_optimizer(training: StudentTraining) -> keras.optimizers.Optimizer:
    """Adam, learning rate x decay_rate every decay_examples (staircase), gradients clipped per weight."""
    schedule = keras.optimizers.schedules.ExponentialDecay(
        training.learning_rate,
        decay_steps=max(1, training.decay_examples // training.batch_size),
        decay_rate=training.decay_rate,
        staircase=True,
    )
    return keras.optimizers.Adam(schedule, clipnorm=training.clipnorm)


def compile_student(model: keras.Model, training: StudentTraining) -> keras.Model:
    """`model` compiled with `make_optimizer(training)` and the soft-target cross-entropy."""
    model.compile(optimizer=make_optimizer(training), loss=soft_binary_crossentropy)
    return model


# -------------------------------------------------------------------------------------------------- configs


def _spec(name: str, builder: Callable[..., keras.Model]) -> ModelSpec:
    parameters = inspect.signature(builder).parameters.values()
    defaults = {p.name: p.default for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}
    return ModelSpec(name, VIDEO_LEVEL, builder, MappingProxyType(defaults))


STUDENT_MODELS: Mapping[str, ModelSpec] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            _spec("A", build_tower_a),
            _spec("B", build_tower_b),
            _spec("C", build_tower_c),
            _spec("D", build_tower_d),
            _spec("E", build_tower_e),
            _spec("F", build_tower_f),
            _spec(ENSEMBLE, build_ensemble_head),
        )
    }
)


@dataclass(frozen=True)
class StudentTraining:
    """Adam with exponential (staircase) decay every `decay_examples`, per-weight gradient clipping by norm;
    targets = (1 - hard_label_weight) * soft labels + hard_label_weight * labels. Early stopping watches GAP
    on a validation slice of the training videos (hash of seed and id)."""

    epochs: int = 5
    batch_size: int = 1024
    learning_rate: float = 0.01
    decay_rate: float = 0.95
    decay_examples: int = 4_000_000
    clipnorm: float = 1.0
    hard_label_weight: float = 0.0
    seed: int = 0
    validation_fraction: float = 0.05
    early_stopping_patience: int = 3
    mixed_precision: bool = False  # float16 compute, float32 weights and probabilities (for GPUs)


@dataclass(frozen=True)
class _Document:
    """What a student YAML file holds; validated into a StudentConfig."""

    name: str
    model: StudentModel
    params: dict[str, Any] = field(default_factory=dict)
    training: StudentTraining = field(default_factory=StudentTraining)


@dataclass(frozen=True)
class StudentConfig:
    """One validated student config; `params`: every builder param (the file's values over the defaults)."""

    name: str
    model: StudentModel
    params: dict[str, Any]
    training: StudentTraining
    source: str = field(compare=False)

    @property
    def is_tower(self) -> bool:
        return self.model != ENSEMBLE

    def build_model(self, num_classes: int, tower_output_count: int = len(TOWERS)) -> keras.Model:
        """The untrained Keras model; tower_output_count is for the ensemble head only."""
        builder = STUDENT_MODELS[self.model].builder
        if self.is_tower:
            return builder(num_classes, **self.params)
        return builder(num_classes, tower_output_count, **self.params)


# Per training key: (check, requirement).
_TRAINING_RULES: Mapping[str, tuple[Callable[[Any], bool], str]] = {
    "epochs": (lambda value: value >= 1, ">= 1"),
    "batch_size": (lambda value: value >= 1, ">= 1"),
    "learning_rate": (lambda value: value > 0, "> 0"),
    "decay_rate": (lambda value: 0 < value <= 1, "in (0, 1]"),
    "decay_examples": (lambda value: value >= 1, ">= 1"),
    "clipnorm": (lambda value: value > 0, "> 0"),
    "hard_label_weight": (lambda value: 0 <= value <= 1, "in [0, 1]"),
    "seed": (lambda value: value >= 0, ">= 0"),
    "validation_fraction": (lambda value: 0 < value < 1, "in (0, 1)"),
    "early_stopping_patience": (lambda value: value >= 1, ">= 1"),
}


def _check_params(model: str, params: Mapping[str, Any]) -> None:
    """Ranges the registry's type checks do not cover; raises ParamError."""
    if params["dropout"] >= 1:
        raise ParamError(model, "dropout", f"must be < 1, got {params['dropout']!r}")
    if model in ("C", "D"):
        required: tuple[str, ...] = ("rgb_widths", "audio_widths")
    else:
        required = ("widths",) if model in TOWERS else ()
    for key in required:
        if not params[key]:
            raise ParamError(model, key, "needs at least one width")


def parse_student_config(text: str, source: str) -> StudentConfig:
    """Validates the YAML text of a student config read from `source` (named in every error)."""
    document = build(_Document, parse_yaml(text, source), source)
    if not _NAME_PATTERN.fullmatch(document.name):
        raise ConfigError(f"{source}: name: expected letters, digits, '_', '.' or '-', got {document.name!r}")
    try:
        params = STUDENT_MODELS[document.model].resolve_params(document.params)
        _check_params(document.model, params)
    except ParamError as error:
        raise ConfigError(f"{source}: params.{error.key}: {error.reason}") from None
    for key, (is_valid, requirement) in _TRAINING_RULES.items():
        value = getattr(document.training, key)
        if not is_valid(value):
            raise ConfigError(f"{source}: training.{key}: must be {requirement}, got {value!r}")
    return StudentConfig(document.name, document.model, params, document.training, source)


def load_student_config(path: str | Path) -> StudentConfig:
    """Reads and validates one student config YAML file; raises ConfigError naming the file and key path."""
    return parse_student_config(read_text(path), str(path))


@dataclass(frozen=True)
class StudentSuite:
    """The towers (in A..F order: the order of the head's tower_outputs) and the ensemble head."""

    towers: tuple[StudentConfig, ...]
    head: StudentConfig


def load_student_suite(directory: str | Path) -> StudentSuite:
    """Every `*.yaml` of `directory`: towers with distinct models and exactly one ensemble head."""
    towers: dict[str, StudentConfig] = {}
    heads: list[StudentConfig] = []
    for path in sorted(Path(directory).glob("*.yaml")):
        config = load_student_config(path)
        if not config.is_tower:
            heads.append(config)
        elif config.model in towers:
            raise ConfigError(
                f"{path}: model: tower {config.model} again (also {towers[config.model].source})"
            )
        else:
            towers[config.model] = config
    if len(heads) != 1 or not towers:
        raise ConfigError(
            f"{directory}: needs tower configs and exactly one {ENSEMBLE!r} config, "
            f"got {len(towers)} towers and {len(heads)} heads"
        )
    return StudentSuite(tuple(towers[name] for name in TOWERS if name in towers), heads[0])


# ------------------------------------------------------------------------------------------------------ size


def _stack_size(inputs: int, widths: tuple[int, ...]) -> tuple[int, int]:
    """(parameters, output width) of `_stack` on `inputs` features."""
    parameters = 0
    for units in widths:
        parameters += inputs * units + _BATCHNORM_WEIGHTS * units
        inputs = units
    return parameters, inputs


def count_parameters(
    config: StudentConfig, num_classes: int = NUM_CLASSES, tower_output_count: int = len(TOWERS)
) -> int:
    """Weights of the config's model (BatchNorm moving statistics included), computed without building it."""
    params = config.params
    if config.model in ("C", "D"):
        rgb, rgb_width = _stack_size(RGB_SIZE, params["rgb_widths"])
        audio, audio_width = _stack_size(AUDIO_SIZE, params["audio_widths"])
        joint, width = _stack_size(rgb_width + audio_width, params["widths"])
        parameters = rgb + audio + joint
    elif config.is_tower:
        parameters, width = _stack_size(FEATURES_SIZE, params["widths"])
    else:
        parameters, width = _stack_size(tower_output_count * num_classes + FEATURES_SIZE, params["hidden"])
    return parameters + (width + 1) * num_classes


def serving_parameter_count(suite: StudentSuite, num_classes: int = NUM_CLASSES) -> int:
    """Weights of the serving ensemble: every tower plus the head."""
    towers = sum(count_parameters(tower, num_classes) for tower in suite.towers)
    return towers + count_parameters(suite.head, num_classes, len(suite.towers))


def serving_size_bytes(suite: StudentSuite, num_classes: int = NUM_CLASSES) -> int:
    """The serving ensemble's weights in float32 bytes."""
    return FLOAT32_BYTES * serving_parameter_count(suite, num_classes)


def check_serving_size(suite: StudentSuite, num_classes: int, limit_bytes: int = SIZE_LIMIT_BYTES) -> None:
    """ValueError if the serving ensemble's float32 weights exceed `limit_bytes` (default: 1 GB)."""
    size = serving_size_bytes(suite, num_classes)
    if size > limit_bytes:
        raise ValueError(
            f"student of {suite.head.source}: {size:,} bytes of float32 weights for {num_classes} classes "
            f"exceed the limit of {limit_bytes:,}"
        )
