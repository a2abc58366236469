"""Model zoo, losses and mixup: every family trains, frame models ignore padding, export and clone agree."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from trainer.features import AUDIO_SIZE, FRAME_AUDIO, FRAME_RGB, MASK, MEAN_AUDIO, MEAN_RGB, RGB_SIZE
from trainer.losses import bce_with_logits, get_loss, lsep, mixup
from trainer.models import FRAME_LEVEL, INPUT_KEYS, MODEL_BUILDERS, build_model

NUM_CLASSES = 6
MAX_FRAMES = 6
BATCH_SIZE = 32

TINY_PARAMS: dict[str, dict] = {
    "resnet_like": {"rgb_units": 16, "audio_units": 8, "joint_units": 16, "dropout": 0.0},
    "gated_mlp": {"hidden_units": [16, 16], "dropout": 0.0},
    "mlp": {"hidden_units": [16, 4, 16], "dropout": 0.0},
    "moe": {"num_mixtures": 2},
    "logistic": {},
    "pooling_mlp": {"frame_units": 16, "hidden_units": [16], "dropout": 0.0},
    "rnn": {"cell": "gru", "rnn_units": 8, "hidden_units": [16], "dropout": 0.0},
    "attention_pool": {
        "frame_units": 16,
        "num_heads": 2,
        "num_queries": 2,
        "key_units": 4,
        "value_units": 4,
        "hidden_units": [16],
        "dropout": 0.0,
    },
    "netvlad": {
        "rgb_projection_units": 8,
        "rgb_clusters": 4,
        "audio_projection_units": 4,
        "audio_clusters": 2,
        "rgb_units": 16,
        "rgb_blocks": 0,
        "audio_blocks": 0,
        "audio_units": 8,
        "joint_units": 16,
        "dropout": 0.0,
    },
}
FRAME_MODELS = [name for name, spec in MODEL_BUILDERS.items() if spec.level == FRAME_LEVEL]


def _build(name: str, max_frames: int = MAX_FRAMES, params: dict | None = None) -> keras.Model:
    frame_level = MODEL_BUILDERS[name].level == FRAME_LEVEL
    return build_model(
        name,
        TINY_PARAMS[name] if params is None else params,
        NUM_CLASSES,
        max_frames if frame_level else None,
    )


def _frames(rng: np.random.Generator, batch_size: int, lengths: np.ndarray, max_frames: int) -> dict:
    """Random frames with `lengths` real frames each, zero padding up to max_frames."""
    mask = (np.arange(max_frames)[None, :] < lengths[:, None]).astype(np.float32)
    rgb = rng.normal(size=(batch_size, max_frames, RGB_SIZE)).astype(np.float32) * mask[..., None]
    audio = rng.normal(size=(batch_size, max_frames, AUDIO_SIZE)).astype(np.float32) * mask[..., None]
    return {FRAME_RGB: rgb, FRAME_AUDIO: audio, MASK: mask}


def _learnable_batch(level: str, rng: np.random.Generator) -> tuple[dict, np.ndarray]:
    """Random inputs whose labels are a fixed linear function of the (pooled) features, thresholded."""
    if level == FRAME_LEVEL:
        inputs = _frames(rng, BATCH_SIZE, rng.integers(1, MAX_FRAMES + 1, BATCH_SIZE), MAX_FRAMES)
        mean_rgb = inputs[FRAME_RGB].sum(1) / inputs[MASK].sum(1, keepdims=True)
        mean_audio = inputs[FRAME_AUDIO].sum(1) / inputs[MASK].sum(1, keepdims=True)
    else:
        mean_rgb = rng.normal(size=(BATCH_SIZE, RGB_SIZE)).astype(np.float32)
        mean_audio = rng.normal(size=(BATCH_SIZE, AUDIO_SIZE)).astype(np.float32)
        inputs = {MEAN_RGB: mean_rgb, MEAN_AUDIO: mean_audio}
    projection = rng.normal(size=(RGB_SIZE + AUDIO_SIZE, NUM_CLASSES))
    scores = np.concatenate([mean_rgb, mean_audio], axis=1) @ projection
    labels = (scores > np.median(scores, axis=0)).astype(np.float32)
    return inputs, labels


def test_registry_lists_families_and_tiny_params_cover_them():
    assert set(TINY_PARAMS) == set(MODEL_BUILDERS)
    assert {"resnet_like", "gated_mlp", "moe", "logistic"} <= {
        name for name, spec in MODEL_BUILDERS.items() if spec.level == "video"
    }
    assert {"pooling_mlp", "rnn", "attention_pool", "netvlad"} <= set(FRAME_MODELS)


class _StepLosses(keras.callbacks.Callback):
    """The loss of every training step, recovered from the running epoch mean Keras logs after each batch."""

    def __init__(self):
        super().__init__()
        self.running_means: list[float] = []

    def on_train_batch_end(self, batch, logs=None):
        self.running_means.append(float(logs["loss"]))

    @property
    def losses(self) -> np.ndarray:
        totals = np.asarray(self.running_means) * np.arange(1, len(self.running_means) + 1)
        return np.diff(totals, prepend=0.0)


@pytest.mark.parametrize("name", list(MODEL_BUILDERS))
def test_model_builds_and_trains(name: str):
    keras.utils.set_random_seed(0)
    level = MODEL_BUILDERS[name].level
    model = _build(name)
    assert set(model.input) == set(INPUT_KEYS[level])
    assert model.get_layer("logits") is model.layers[-1]
    inputs, labels = _learnable_batch(level, np.random.default_rng(0))
    # SGD: its train step traces several times faster than Adam's, and these tests only check learning.
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss=bce_with_logits)
    step_losses = _StepLosses()
    model.fit(
        tf.data.Dataset.from_tensors((inputs, labels)).repeat(20),
        callbacks=[step_losses],
        shuffle=False,
        verbose=0,
    )
    losses = step_losses.losses
    assert len(losses) == 20 and np.mean(losses[-5:]) < np.mean(losses[:5]), losses
    logits = model(inputs, training=False)
    assert logits.shape == (BATCH_SIZE, NUM_CLASSES) and logits.dtype == "float32"


def test_rnn_lstm_bidirectional_stack_builds():
    params = {**TINY_PARAMS["rnn"], "cell": "lstm", "num_layers": 2, "bidirectional": True}
    model = _build("rnn", params=params)
    inputs = _frames(np.random.default_rng(0), 3, np.array([1, 3, MAX_FRAMES]), MAX_FRAMES)
    assert model(inputs, training=False).shape == (3, NUM_CLASSES)


@pytest.mark.parametrize("name", FRAME_MODELS)
def test_frame_model_ignores_padding(name: str):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(1)
    lengths = np.array([1, 2, 4, 5])
    short = _build(name, max_frames=MAX_FRAMES)
    inputs = _frames(rng, len(lengths), lengths, MAX_FRAMES)
    reference = np.asarray(short(inputs, training=False))

    def with_garbage_padding(max_frames: int) -> dict:
        padded = {}
        for key in (FRAME_RGB, FRAME_AUDIO):
            values = rng.normal(scale=100.0, size=(len(lengths), max_frames, inputs[key].shape[-1]))
            values[:, :MAX_FRAMES] = np.where(
                inputs[MASK][..., None] > 0, inputs[key], values[:, :MAX_FRAMES]
            )
            padded[key] = values.astype(np.float32)
        padded[MASK] = np.pad(inputs[MASK], ((0, 0), (0, max_frames - MAX_FRAMES)))
        return padded

    np.testing.assert_allclose(short(with_garbage_padding(MAX_FRAMES), training=False), reference, atol=1e-5)
    longer = _build(name, max_frames=MAX_FRAMES + 5)
    longer.set_weights(short.get_weights())
    np.testing.assert_allclose(
        longer(with_garbage_padding(MAX_FRAMES + 5), training=False), reference, atol=1e-5
    )


def _inputs_for(name: str, batch_size: int = 3) -> dict:
    rng = np.random.default_rng(2)
    if MODEL_BUILDERS[name].level == FRAME_LEVEL:
        return _frames(rng, batch_size, rng.integers(1, MAX_FRAMES + 1, batch_size), MAX_FRAMES)
    return {
        MEAN_RGB: rng.normal(size=(batch_size, RGB_SIZE)).astype(np.float32),
        MEAN_AUDIO: rng.normal(size=(batch_size, AUDIO_SIZE)).astype(np.float32),
    }


@pytest.mark.parametrize("name", ["resnet_like", "moe", "rnn", "netvlad"])
def test_exported_savedmodel_serves_same_logits(name: str, tmp_path):
    model = _build(name)
    inputs = _inputs_for(name)
    model.export(str(tmp_path / name), verbose=False)
    reloaded = tf.saved_model.load(str(tmp_path / name))
    served = reloaded.serve({key: tf.constant(value) for key, value in inputs.items()})
    np.testing.assert_allclose(served, model(inputs, training=False), atol=1e-5)


@pytest.mark.parametrize("name", list(MODEL_BUILDERS))
def test_clone_model_keeps_outputs(name: str):
    model = _build(name)
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    inputs = _inputs_for(name)
    np.testing.assert_allclose(clone(inputs, training=False), model(inputs, training=False), atol=1e-6)


def test_build_model_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown model 'resnet'.*resnet_like.*netvlad"):
        build_model("resnet", {}, NUM_CLASSES)
    with pytest.raises(ValueError, match="param 'width'.*valid params: rgb_units, rgb_blocks"):
        build_model("resnet_like", {"width": 3}, NUM_CLASSES)
    with pytest.raises(ValueError, match="param 'rgb_units': expected int, got str 'ten'"):
        build_model("resnet_like", {"rgb_units": "ten"}, NUM_CLASSES)
    with pytest.raises(ValueError, match="param 'cell': expected one of gru, lstm"):
        build_model("rnn", {"cell": "rnn"}, NUM_CLASSES, MAX_FRAMES)
    with pytest.raises(ValueError, match="needs max_frames"):
        build_model("rnn", {}, NUM_CLASSES)
    with pytest.raises(ValueError, match="takes no max_frames"):
        build_model("logistic", {}, NUM_CLASSES, MAX_FRAMES)


def test_moe_logits_are_the_log_odds_of_the_mixture():
    model = _build("moe", params={"num_mixtures": 2, "logit_clip": 50.0})
    inputs = _inputs_for("moe")
    gate_layer, expert_layer = (layer for layer in model.layers if isinstance(layer, keras.layers.Dense))
    concat = np.concatenate([inputs[MEAN_RGB], inputs[MEAN_AUDIO]], axis=1).astype(np.float64)
    gates = (concat @ gate_layer.kernel.numpy() + gate_layer.bias.numpy()).reshape(-1, NUM_CLASSES, 3)
    gates = np.exp(gates - gates.max(-1, keepdims=True))
    gates /= gates.sum(-1, keepdims=True)
    experts = concat @ expert_layer.kernel.numpy() + expert_layer.bias.numpy()
    experts = 1 / (1 + np.exp(-experts.reshape(-1, NUM_CLASSES, 2)))
    probability = (gates[..., :2] * experts).sum(-1)
    expected = np.log(probability) - np.log1p(-probability)
    np.testing.assert_allclose(model(inputs, training=False), expected, atol=1e-4)


# ------------------------------------------------------------------------------------------------- losses


def _numpy_lsep(labels: np.ndarray, logits: np.ndarray) -> float:
    """LSEP by its definition, pair by pair."""
    per_video = []
    for row_labels, row_logits in zip(labels, logits, strict=True):
        pairs = [
            np.exp(row_logits[j] - row_logits[i])
            for i in np.flatnonzero(row_labels == 1)
            for j in np.flatnonzero(row_labels == 0)
        ]
        per_video.append(np.log1p(np.sum(pairs)))
    return float(np.mean(per_video))


def test_bce_matches_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=(4, 5)).astype(np.float32)
    labels = (rng.random((4, 5)) < 0.4).astype(np.float32)
    probability = 1 / (1 + np.exp(-logits.astype(np.float64)))
    expected = -np.mean(labels * np.log(probability) + (1 - labels) * np.log(1 - probability))
    np.testing.assert_allclose(bce_with_logits(labels, logits), expected, rtol=1e-5)
    assert get_loss("bce") is bce_with_logits


def test_lsep_matches_numpy_on_a_hand_case():
    logits = np.array([[2.0, -1.0, 0.5, 0.0], [0.3, 1.2, -0.7, 2.5]], dtype=np.float32)
    labels = np.array([[1, 0, 1, 0], [0, 1, 0, 0]], dtype=np.float32)
    # Row 1 by hand: log(1 + e^(-1-2) + e^(0-2) + e^(-1-0.5) + e^(0-0.5)).
    assert _numpy_lsep(labels[:1], logits[:1]) == pytest.approx(
        np.log1p(np.exp(-3) + np.exp(-2) + np.exp(-1.5) + np.exp(-0.5))
    )
    np.testing.assert_allclose(lsep(labels, logits), _numpy_lsep(labels, logits), rtol=1e-5)
    assert get_loss("lsep") is lsep


def test_lsep_is_finite_without_pairs_and_for_huge_logits():
    logits = tf.constant([[1.0, -2.0, 3.0], [0.5, 0.1, -4.0], [900.0, -900.0, 0.0]])
    labels = tf.constant([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.0]])
    with tf.GradientTape() as tape:
        tape.watch(logits)
        loss = lsep(labels, logits)
    gradient = tape.gradient(loss, logits)
    # Rows 1 and 2 have no pairs (loss 0, no gradient); row 3 is log(1 + e^1800 + e^900) ~ 1800.
    np.testing.assert_allclose(loss, 1800.0 / 3, rtol=1e-5)
    assert np.all(np.isfinite(gradient)) and np.all(gradient[:2] == 0)


def test_get_loss_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown loss 'focal'; valid losses: bce, lsep"):
        get_loss("focal")


# -------------------------------------------------------------------------------------------------- mixup


def test_mixup_mixes_inputs_and_labels_with_one_convex_weight_per_sample():
    rng = np.random.default_rng(0)
    batch_size = 16
    identity = np.eye(batch_size, dtype=np.float32)  # a mixed row shows who was mixed with whom, how much
    audio = rng.normal(size=(batch_size, 3)).astype(np.float32)
    labels = (rng.random((batch_size, 5)) < 0.3).astype(np.float32)
    features = {
        MEAN_RGB: identity,
        MEAN_AUDIO: audio,
        "id": tf.constant([b"v%d" % i for i in range(batch_size)]),
    }
    mixed, mixed_labels = mixup(features, labels, alpha=0.3, seed=7)
    mixing = mixed[MEAN_RGB].numpy()
    assert np.all(mixing >= 0) and np.allclose(mixing.sum(1), 1.0, atol=1e-6)
    assert np.all((mixing > 0).sum(1) <= 2) and not np.allclose(mixing, identity)
    np.testing.assert_allclose(mixed_labels, mixing @ labels, atol=1e-6)
    np.testing.assert_allclose(mixed[MEAN_AUDIO], mixing @ audio, atol=1e-5)
    assert mixed_labels.shape == labels.shape and mixed[MEAN_AUDIO].shape == audio.shape
    assert list(mixed["id"].numpy()) == list(features["id"].numpy())


def test_mixup_takes_the_max_of_frame_masks():
    rng = np.random.default_rng(1)
    batch_size = 8
    inputs = _frames(rng, batch_size, rng.integers(1, MAX_FRAMES + 1, batch_size), MAX_FRAMES)
    inputs["tag"] = np.eye(batch_size, dtype=np.float32)
    mixed, _ = mixup(inputs, np.zeros((batch_size, 3), np.float32), alpha=1.0, seed=3)
    for row, mixing in enumerate(mixed["tag"].numpy()):
        partner = next((index for index in np.flatnonzero(mixing > 0) if index != row), row)
        np.testing.assert_array_equal(mixed[MASK][row], np.maximum(inputs[MASK][row], inputs[MASK][partner]))
    assert mixed[FRAME_RGB].shape == inputs[FRAME_RGB].shape


def test_mixup_is_deterministic_for_a_seed_and_off_for_alpha_zero():
    features = {MEAN_RGB: np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)}
    labels = np.eye(8, dtype=np.float32)
    first = mixup(features, labels, alpha=0.3, seed=11)
    np.testing.assert_array_equal(first[1], mixup(features, labels, alpha=0.3, seed=11)[1])
    assert not np.allclose(first[1], mixup(features, labels, alpha=0.3, seed=12)[1])
    unchanged_features, unchanged_labels = mixup(features, labels, alpha=0.0, seed=11)
    assert unchanged_features[MEAN_RGB] is features[MEAN_RGB] and unchanged_labels is labels


def test_mixup_runs_inside_tf_data():
    features = {MEAN_RGB: np.random.default_rng(0).normal(size=(12, 4)).astype(np.float32)}
    labels = np.eye(12, 3, dtype=np.float32)
    dataset = tf.data.Dataset.from_tensor_slices((features, labels)).batch(4).enumerate()
    dataset = dataset.map(
        lambda index, batch: mixup(batch[0], batch[1], alpha=0.3, seed=tf.stack([5, index]))
    )
    batches = list(dataset.as_numpy_iterator())
    assert len(batches) == 3 and batches[0][0][MEAN_RGB].shape == (4, 4) and batches[0][1].shape == (4, 3)
