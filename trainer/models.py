"""Level-1 model zoo: Keras functional builders for video- and frame-level YouTube-8M models, chosen by name.

Video-level models read `mean_rgb` [B, 1024] and `mean_audio` [B, 128]; frame-level models read `rgb`
[B, T, 1024], `audio` [B, T, 128] and `mask` [B, T] (1 = real frame, 0 = padding). Every model returns
float32 logits [B, num_classes] from a layer named "logits". A builder's keyword-only arguments are the
model's params; their defaults are the registry's defaults and fix each param's type.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import keras
from keras import ops

from trainer.config_schema import finite_float
from trainer.features import AUDIO_SIZE, FRAME_AUDIO, FRAME_RGB, MASK, MEAN_AUDIO, MEAN_RGB, RGB_SIZE

Level = Literal["video", "frame"]
VIDEO_LEVEL: Level = "video"
FRAME_LEVEL: Level = "frame"
INPUT_KEYS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {VIDEO_LEVEL: (MEAN_RGB, MEAN_AUDIO), FRAME_LEVEL: (FRAME_RGB, FRAME_AUDIO, MASK)}
)

# Added to the attention scores of padding frames: exp() of it underflows to exactly 0.
_MASKED_SCORE = -1e9


class ParamError(ValueError):
    """An unknown or ill-typed model param; `key` names it and `reason` says what is wrong."""

    def __init__(self, model: str, key: str, reason: str):
        super().__init__(f"model {model!r}: param {key!r}: {reason}")
        self.model = model
        self.key = key
        self.reason = reason


def coerce_value(value: object, expected: type) -> object:
    """`value` checked against `expected` (bool, int, float, str or tuple of ints); ints pass as floats and
    lists as tuples. Raises TypeError with a message like "expected int, got str 'ten'"."""
    if expected is float and isinstance(value, int | float) and not isinstance(value, bool):
        return finite_float(value)
    if expected is tuple and isinstance(value, list | tuple):
        if all(isinstance(item, int) and not isinstance(item, bool) for item in value):
            return tuple(value)
        raise TypeError(f"expected a list of ints, got {value!r}")
    if isinstance(value, expected) and not (expected is int and isinstance(value, bool)):
        return value
    wanted = "a list of ints" if expected is tuple else expected.__name__
    hint = ""
    if expected is float and isinstance(value, str):
        hint = " (YAML reads 1e-3 as a string: write 1.0e-3)"
    raise TypeError(f"expected {wanted}, got {type(value).__name__} {value!r}{hint}")


@dataclass(frozen=True)
class ModelSpec:
    """A registry entry: input level, builder, allowed params with defaults, choices of string params."""

    name: str
    level: Level
    builder: Callable[..., keras.Model]
    defaults: Mapping[str, Any]
    choices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def resolve_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The defaults overridden by `params`, each checked against its default's type; raises ParamError."""
        resolved = dict(self.defaults)
        for key, value in params.items():
            if key not in self.defaults:
                raise ParamError(self.name, key, f"unknown param; valid params: {', '.join(self.defaults)}")
            try:
                resolved[key] = coerce_value(value, type(self.defaults[key]))
            except TypeError as error:
                raise ParamError(self.name, key, str(error)) from None
            self._check_range(key, resolved[key])
        return resolved

    def _check_range(self, key: str, value: Any) -> None:
        if key in self.choices and value not in self.choices[key]:
            raise ParamError(self.name, key, f"expected one of {', '.join(self.choices[key])}, got {value!r}")
        if isinstance(value, int | float) and value < 0:
            raise ParamError(self.name, key, f"must be >= 0, got {value!r}")
        if isinstance(value, tuple) and any(units < 1 for units in value):
            raise ParamError(self.name, key, f"every entry must be >= 1, got {list(value)!r}")


# ---------------------------------------------------------------------------------------------- custom layers


@keras.saving.register_keras_serializable(package="yt8m")
class RealFrames(keras.layers.Layer):
    """The float frame mask [B, T] as the boolean mask that Keras RNN layers take."""

    def call(self, mask):
        return ops.greater(mask, 0.5)


@keras.saving.register_keras_serializable(package="yt8m")
class MaskedMeanMaxPooling(keras.layers.Layer):
    """Mean and max over the real frames: ([B, T, D], mask [B, T]) -> [B, 2D]; zeros if there are none."""

    def call(self, inputs):
        frames, mask = inputs
        real = ops.expand_dims(ops.greater(mask, 0.5), -1)
        frames = ops.where(real, frames, 0.0)
        num_real = ops.sum(ops.cast(real, frames.dtype), axis=1)
        mean = ops.sum(frames, axis=1) / ops.maximum(num_real, 1.0)
        maximum = ops.max(ops.where(real, frames, float("-inf")), axis=1)
        maximum = ops.where(num_real > 0, maximum, 0.0)
        return ops.concatenate([mean, maximum], axis=-1)

    def compute_output_shape(self, input_shape):
        frames_shape, _ = input_shape
        return (frames_shape[0], 2 * frames_shape[-1])


@keras.saving.register_keras_serializable(package="yt8m")
class MaskedAttentionPooling(keras.layers.Layer):
    """Multi-head attention pooling with learned queries over the real frames.

    ([B, T, D], mask [B, T]) -> [B, num_queries * num_heads * value_units]; padding frames get weight 0.
    """

    def __init__(self, num_heads: int, num_queries: int, key_units: int, value_units: int, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.num_queries = num_queries
        self.key_units = key_units
        self.value_units = value_units

    def build(self, input_shape):
        frame_units = input_shape[0][-1]
        self.queries = self.add_weight(
            name="queries",
            shape=(self.num_queries, self.num_heads, self.key_units),
            initializer="glorot_uniform",
        )
        self.key_kernel = self.add_weight(
            name="key_kernel",
            shape=(frame_units, self.num_heads, self.key_units),
            initializer="glorot_uniform",
        )
        self.value_kernel = self.add_weight(
            name="value_kernel",
            shape=(frame_units, self.num_heads, self.value_units),
            initializer="glorot_uniform",
        )

    def call(self, inputs):
        frames, mask = inputs
        real = ops.greater(mask, 0.5)
        frames = ops.where(ops.expand_dims(real, -1), frames, 0.0)
        keys = ops.einsum("btd,dhk->bthk", frames, self.key_kernel)
        values = ops.einsum("btd,dhv->bthv", frames, self.value_kernel)
        scores = ops.einsum("qhk,bthk->bqht", self.queries, keys) / math.sqrt(self.key_units)
        real = real[:, None, None, :]
        weights = ops.softmax(ops.where(real, scores, _MASKED_SCORE), axis=-1)
        weights = ops.where(real, weights, 0.0)
        pooled = ops.einsum("bqht,bthv->bqhv", weights, values)
        return ops.reshape(pooled, (-1, self.num_queries * self.num_heads * self.value_units))

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], self.num_queries * self.num_heads * self.value_units)

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "num_queries": self.num_queries,
            "key_units": self.key_units,
            "value_units": self.value_units,
        }


def _l2_normalize(values, axis: int):
    return values * ops.rsqrt(ops.maximum(ops.sum(ops.square(values), axis=axis, keepdims=True), 1e-12))


@keras.saving.register_keras_serializable(package="yt8m")
class NetVLAD(keras.layers.Layer):
    """NetVLAD pooling over the real frames: soft-assign each frame to learned clusters and sum its residuals.

    ([B, T, D], mask [B, T]) -> [B, num_clusters * D], intra-normalised per cluster, then L2-normalised.
    """

    def __init__(self, num_clusters: int, **kwargs):
        super().__init__(**kwargs)
        self.num_clusters = num_clusters

    def build(self, input_shape):
        frame_units = input_shape[0][-1]
        self.assignment_kernel = self.add_weight(
            name="assignment_kernel", shape=(frame_units, self.num_clusters), initializer="glorot_uniform"
        )
        self.assignment_bias = self.add_weight(
            name="assignment_bias", shape=(self.num_clusters,), initializer="zeros"
        )
        self.centers = self.add_weight(
            name="centers", shape=(self.num_clusters, frame_units), initializer="glorot_uniform"
        )

    def call(self, inputs):
        frames, mask = inputs
        real = ops.expand_dims(ops.greater(mask, 0.5), -1)
        frames = ops.where(real, frames, 0.0)
        assignment = ops.softmax(ops.matmul(frames, self.assignment_kernel) + self.assignment_bias, axis=-1)
        assignment = ops.where(real, assignment, 0.0)
        vlad = ops.einsum("btk,btd->bkd", assignment, frames)
        vlad = vlad - ops.expand_dims(ops.sum(assignment, axis=1), -1) * self.centers
        vlad = _l2_normalize(vlad, axis=-1)
        return _l2_normalize(ops.reshape(vlad, (-1, self.num_clusters * frames.shape[-1])), axis=-1)

    def compute_output_shape(self, input_shape):
        frames_shape, _ = input_shape
        return (frames_shape[0], self.num_clusters * frames_shape[-1])

    def get_config(self):
        return {**super().get_config(), "num_clusters": self.num_clusters}


@keras.saving.register_keras_serializable(package="yt8m")
class MixtureOfExpertsLogits(keras.layers.Layer):
    """Log-odds of a mixture of logistic experts, as youtube-8m's MoeModel, computed in log space.

    ([B, C * (M + 1)] gate logits, [B, C * M] expert logits) -> [B, C]. The extra gate per class is a
    "dummy" expert that always says 0. p = sum_m g_m sigmoid(e_m); logits = log p - log(1 - p), clipped.
    """

    def __init__(self, num_classes: int, num_mixtures: int, logit_clip: float, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.num_mixtures = num_mixtures
        self.logit_clip = logit_clip

    def call(self, inputs):
        gate_logits, expert_logits = inputs
        log_gates = ops.log_softmax(
            ops.reshape(gate_logits, (-1, self.num_classes, self.num_mixtures + 1)), axis=-1
        )
        expert_logits = ops.reshape(expert_logits, (-1, self.num_classes, self.num_mixtures))
        expert_gates = log_gates[..., : self.num_mixtures]
        log_positive = ops.logsumexp(expert_gates + ops.log_sigmoid(expert_logits), axis=-1)
        log_negative = ops.logsumexp(
            ops.concatenate(
                [expert_gates + ops.log_sigmoid(-expert_logits), log_gates[..., self.num_mixtures :]], axis=-1
            ),
            axis=-1,
        )
        return ops.clip(log_positive - log_negative, -self.logit_clip, self.logit_clip)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], self.num_classes)

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "num_mixtures": self.num_mixtures,
            "logit_clip": self.logit_clip,
        }


# -------------------------------------------------------------------------------------------- building blocks


def _video_inputs() -> dict[str, keras.KerasTensor]:
    return {
        MEAN_RGB: keras.Input(shape=(RGB_SIZE,), name=MEAN_RGB, dtype="float32"),
        MEAN_AUDIO: keras.Input(shape=(AUDIO_SIZE,), name=MEAN_AUDIO, dtype="float32"),
    }


def _frame_inputs(max_frames: int) -> dict[str, keras.KerasTensor]:
    return {
        FRAME_RGB: keras.Input(shape=(max_frames, RGB_SIZE), name=FRAME_RGB, dtype="float32"),
        FRAME_AUDIO: keras.Input(shape=(max_frames, AUDIO_SIZE), name=FRAME_AUDIO, dtype="float32"),
        MASK: keras.Input(shape=(max_frames,), name=MASK, dtype="float32"),
    }


def _logits(x, num_classes: int):
    return keras.layers.Dense(num_classes, name="logits", dtype="float32")(x)


def _fc_block(x, units: int, dropout: float, leaky_relu_slope: float):
    """Linear -> BatchNorm -> LeakyReLU -> Dropout."""
    x = keras.layers.Dense(units, use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.LeakyReLU(negative_slope=leaky_relu_slope)(x)
    return keras.layers.Dropout(dropout)(x)


def _residual_block(x, dropout: float, leaky_relu_slope: float):
    """x + two FC blocks of x's width."""
    units = x.shape[-1]
    branch = _fc_block(x, units, dropout, leaky_relu_slope)
    branch = _fc_block(branch, units, dropout, leaky_relu_slope)
    return keras.layers.Add()([x, branch])


def _mlp(x, hidden_units: tuple[int, ...], dropout: float, leaky_relu_slope: float):
    for units in hidden_units:
        x = _fc_block(x, units, dropout, leaky_relu_slope)
    return x


def _context_gating(x):
    """x * sigmoid(Linear(x)): each unit gated by the whole vector."""
    gates = keras.layers.Dense(x.shape[-1], activation="sigmoid")(x)
    return keras.layers.Multiply()([x, gates])


def _resnet_trunk(
    rgb,
    audio,
    *,
    rgb_units: int,
    rgb_blocks: int,
    audio_units: int,
    audio_blocks: int,
    joint_units: int,
    joint_blocks: int,
    dropout: float,
    leaky_relu_slope: float,
    context_gating: bool,
    input_batchnorm: bool,
):
    """Separate rgb and audio branches of FC + residual blocks, concatenated, more residual blocks, gating."""

    def branch(x, units: int, blocks: int):
        if input_batchnorm:
            x = keras.layers.BatchNormalization()(x)
        x = _fc_block(x, units, dropout, leaky_relu_slope)
        for _ in range(blocks):
            x = _residual_block(x, dropout, leaky_relu_slope)
        return x

    x = keras.layers.Concatenate()(
        [branch(rgb, rgb_units, rgb_blocks), branch(audio, audio_units, audio_blocks)]
    )
    x = _fc_block(x, joint_units, dropout, leaky_relu_slope)
    for _ in range(joint_blocks):
        x = _residual_block(x, dropout, leaky_relu_slope)
    return _context_gating(x) if context_gating else x


def _concat_inputs(inputs: dict[str, keras.KerasTensor], rgb_key: str, audio_key: str, batchnorm: bool):
    x = keras.layers.Concatenate()([inputs[rgb_key], inputs[audio_key]])
    return keras.layers.BatchNormalization()(x) if batchnorm else x


# ----------------------------------------------------------------------------------------- video-level models


def build_resnet_like(
    num_classes: int,
    *,
    rgb_units: int = 1024,
    rgb_blocks: int = 1,
    audio_units: int = 256,
    audio_blocks: int = 1,
    joint_units: int = 1024,
    joint_blocks: int = 1,
    dropout: float = 0.3,
    leaky_relu_slope: float = 0.2,
    context_gating: bool = True,
    input_batchnorm: bool = True,
) -> keras.Model:
    """ResNetLike: rgb and audio residual branches, concatenated, residual trunk, context gating, logits."""
    inputs = _video_inputs()
    x = _resnet_trunk(
        inputs[MEAN_RGB],
        inputs[MEAN_AUDIO],
        rgb_units=rgb_units,
        rgb_blocks=rgb_blocks,
        audio_units=audio_units,
        audio_blocks=audio_blocks,
        joint_units=joint_units,
        joint_blocks=joint_blocks,
        dropout=dropout,
        leaky_relu_slope=leaky_relu_slope,
        context_gating=context_gating,
        input_batchnorm=input_batchnorm,
    )
    return keras.Model(inputs, _logits(x, num_classes), name="resnet_like")


def build_gated_mlp(
    num_classes: int,
    *,
    hidden_units: tuple[int, ...] = (1024, 1024),
    dropout: float = 0.3,
    input_batchnorm: bool = True,
) -> keras.Model:
    """Self-gated MLP on concat(rgb, audio): each layer is ReLU(BN(Linear(x))) * sigmoid(Linear(x))."""
    inputs = _video_inputs()
    x = _concat_inputs(inputs, MEAN_RGB, MEAN_AUDIO, input_batchnorm)
    for units in hidden_units:
        hidden = keras.layers.Dense(units, use_bias=False)(x)
        hidden = keras.layers.ReLU()(keras.layers.BatchNormalization()(hidden))
        gates = keras.layers.Dense(units, activation="sigmoid")(x)
        x = keras.layers.Dropout(dropout)(keras.layers.Multiply()([hidden, gates]))
    return keras.Model(inputs, _logits(x, num_classes), name="gated_mlp")


def build_mlp(
    num_classes: int,
    *,
    hidden_units: tuple[int, ...] = (2048, 512, 2048),
    dropout: float = 0.3,
    leaky_relu_slope: float = 0.2,
    input_batchnorm: bool = True,
) -> keras.Model:
    """Early-concat MLP of FC blocks on concat(rgb, audio); a narrow middle layer makes a bottleneck MLP."""
    inputs = _video_inputs()
    x = _concat_inputs(inputs, MEAN_RGB, MEAN_AUDIO, input_batchnorm)
    x = _mlp(x, hidden_units, dropout, leaky_relu_slope)
    return keras.Model(inputs, _logits(x, num_classes), name="mlp")


def build_moe(
    num_classes: int,
    *,
    num_mixtures: int = 2,
    l2: float = 1e-6,
    logit_clip: float = 20.0,
    input_batchnorm: bool = False,
) -> keras.Model:
    """Mixture of logistic experts per class on concat(rgb, audio), returned as clipped log-odds."""
    inputs = _video_inputs()
    x = _concat_inputs(inputs, MEAN_RGB, MEAN_AUDIO, input_batchnorm)
    regularizer = keras.regularizers.L2(l2) if l2 > 0 else None
    gate_logits = keras.layers.Dense(num_classes * (num_mixtures + 1), kernel_regularizer=regularizer)(x)
    expert_logits = keras.layers.Dense(num_classes * num_mixtures, kernel_regularizer=regularizer)(x)
    logits = MixtureOfExpertsLogits(num_classes, num_mixtures, logit_clip, name="logits", dtype="float32")(
        [gate_logits, expert_logits]
    )
    return keras.Model(inputs, logits, name="moe")


def build_logistic(num_classes: int, *, l2: float = 1e-8) -> keras.Model:
    """Logistic regression on concat(rgb, audio)."""
    inputs = _video_inputs()
    x = _concat_inputs(inputs, MEAN_RGB, MEAN_AUDIO, batchnorm=False)
    regularizer = keras.regularizers.L2(l2) if l2 > 0 else None
    logits = keras.layers.Dense(num_classes, kernel_regularizer=regularizer, name="logits", dtype="float32")(
        x
    )
    return keras.Model(inputs, logits, name="logistic")


# ----------------------------------------------------------------------------------------- frame-level models


def _frame_features(inputs: dict[str, keras.KerasTensor], frame_units: int):
    """concat(rgb, audio) per frame, optionally projected by a per-frame Linear -> ReLU to frame_units."""
    x = keras.layers.Concatenate()([inputs[FRAME_RGB], inputs[FRAME_AUDIO]])
    return keras.layers.Dense(frame_units, activation="relu")(x) if frame_units else x


def build_pooling_mlp(
    num_classes: int,
    max_frames: int,
    *,
    frame_units: int = 512,
    hidden_units: tuple[int, ...] = (1024,),
    dropout: float = 0.3,
    leaky_relu_slope: float = 0.2,
) -> keras.Model:
    """Masked mean + max pooling of the (projected) frames, then an MLP. frame_units 0 = no projection."""
    inputs = _frame_inputs(max_frames)
    x = MaskedMeanMaxPooling()([_frame_features(inputs, frame_units), inputs[MASK]])
    x = _mlp(x, hidden_units, dropout, leaky_relu_slope)
    return keras.Model(inputs, _logits(x, num_classes), name="pooling_mlp")


def build_rnn(
    num_classes: int,
    max_frames: int,
    *,
    cell: str = "gru",
    rnn_units: int = 512,
    num_layers: int = 1,
    bidirectional: bool = False,
    hidden_units: tuple[int, ...] = (1024,),
    dropout: float = 0.3,
    leaky_relu_slope: float = 0.2,
) -> keras.Model:
    """Stacked GRU/LSTM over the real frames (padding skipped); the final state goes through an MLP."""
    inputs = _frame_inputs(max_frames)
    real = RealFrames()(inputs[MASK])
    x = keras.layers.Concatenate()([inputs[FRAME_RGB], inputs[FRAME_AUDIO]])
    recurrent_layer = {"gru": keras.layers.GRU, "lstm": keras.layers.LSTM}[cell]
    for layer_index in range(num_layers):
        layer = recurrent_layer(rnn_units, return_sequences=layer_index < num_layers - 1)
        x = (keras.layers.Bidirectional(layer) if bidirectional else layer)(x, mask=real)
    x = _mlp(x, hidden_units, dropout, leaky_relu_slope)
    return keras.Model(inputs, _logits(x, num_classes), name="rnn")


def build_attention_pool(
    num_classes: int,
    max_frames: int,
    *,
    frame_units: int = 512,
    num_heads: int = 4,
    num_queries: int = 2,
    key_units: int = 64,
    value_units: int = 128,
    hidden_units: tuple[int, ...] = (1024,),
    dropout: float = 0.3,
    leaky_relu_slope: float = 0.2,
) -> keras.Model:
    """Multi-head attention pooling with learned queries over the (projected) real frames, then an MLP."""
    inputs = _frame_inputs(max_frames)
    x = MaskedAttentionPooling(num_heads, num_queries, key_units, value_units)(
        [_frame_features(inputs, frame_units), inputs[MASK]]
    )
    x = _mlp(x, hidden_units, dropout, leaky_relu_slope)
    return keras.Model(inputs, _logits(x, num_classes), name="attention_pool")


def build_netvlad(
    num_classes: int,
    max_frames: int,
    *,
    rgb_projection_units: int = 256,
    rgb_clusters: int = 32,
    audio_projection_units: int = 64,
    audio_clusters: int = 8,
    rgb_units: int = 1024,
    rgb_blocks: int = 1,
    audio_units: int = 256,
    audio_blocks: int = 1,
    joint_units: int = 1024,
    joint_blocks: int = 1,
    dropout: float = 0.3,
    leaky_relu_slope: float = 0.2,
    context_gating: bool = True,
    input_batchnorm: bool = True,
) -> keras.Model:
    """NetVLAD pooling of rgb and of audio frames (each optionally linearly projected first; 0 = no
    projection), fed to a ResNetLike head as its rgb and audio inputs."""
    inputs = _frame_inputs(max_frames)

    def pooled(frames, projection_units: int, clusters: int):
        if projection_units:
            frames = keras.layers.Dense(projection_units, use_bias=False)(frames)
        return NetVLAD(clusters)([frames, inputs[MASK]])

    x = _resnet_trunk(
        pooled(inputs[FRAME_RGB], rgb_projection_units, rgb_clusters),
        pooled(inputs[FRAME_AUDIO], audio_projection_units, audio_clusters),
        rgb_units=rgb_units,
        rgb_blocks=rgb_blocks,
        audio_units=audio_units,
        audio_blocks=audio_blocks,
        joint_units=joint_units,
        joint_blocks=joint_blocks,
        dropout=dropout,
        leaky_relu_slope=leaky_relu_slope,
        context_gating=context_gating,
        input_batchnorm=input_batchnorm,
    )
    return keras.Model(inputs, _logits(x, num_classes), name="netvlad")


# ----------------------------------------------------------------------------------------------- the registry


def _spec(
    name: str, level: Level, builder: Callable[..., keras.Model], **choices: tuple[str, ...]
) -> ModelSpec:
    parameters = inspect.signature(builder).parameters.values()
    defaults = {p.name: p.default for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}
    return ModelSpec(name, level, builder, MappingProxyType(defaults), MappingProxyType(choices))


MODEL_BUILDERS: Mapping[str, ModelSpec] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            _spec("resnet_like", VIDEO_LEVEL, build_resnet_like),
            _spec("gated_mlp", VIDEO_LEVEL, build_gated_mlp),
            _spec("mlp", VIDEO_LEVEL, build_mlp),
            _spec("moe", VIDEO_LEVEL, build_moe),
            _spec("logistic", VIDEO_LEVEL, build_logistic),
            _spec("pooling_mlp", FRAME_LEVEL, build_pooling_mlp),
            _spec("rnn", FRAME_LEVEL, build_rnn, cell=("gru", "lstm")),
            _spec("attention_pool", FRAME_LEVEL, build_attention_pool),
            _spec("netvlad", FRAME_LEVEL, build_netvlad),
        )
    }
)


def get_model_spec(name: str) -> ModelSpec:
    """The registry entry of `name`; ValueError listing the valid names if there is none."""
    if name not in MODEL_BUILDERS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(MODEL_BUILDERS)}")
    return MODEL_BUILDERS[name]


def build_model(
    name: str, params: Mapping[str, Any], num_classes: int, max_frames: int | None = None
) -> keras.Model:
    """Builds registry model `name` with `params` over its defaults. Frame-level models need max_frames
    (the fixed T of their inputs); video-level models take none."""
    spec = get_model_spec(name)
    resolved = spec.resolve_params(params)
    if spec.level == FRAME_LEVEL:
        if max_frames is None or max_frames < 1:
            raise ValueError(f"frame-level model {name!r} needs max_frames >= 1, got {max_frames!r}")
        return spec.builder(num_classes, max_frames, **resolved)
    if max_frames is not None:
        raise ValueError(f"video-level model {name!r} takes no max_frames, got {max_frames!r}")
    return spec.builder(num_classes, **resolved)
