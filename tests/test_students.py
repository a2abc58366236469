"""Student towers A..F, ensemble head, serving ensemble: training on soft targets, inference-mode BatchNorm,
one SavedModel, parameter counts (analytic == Keras; full size under 1 GB), strict configs."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from trainer.config_schema import ConfigError
from trainer.features import AUDIO_SIZE, MEAN_AUDIO, MEAN_RGB, NUM_CLASSES, RGB_SIZE
from trainer.l1_run import precision_policy
from trainer.soft_labels import with_soft_labels
from trainer.students import (
    FEATURES,
    SIZE_LIMIT_BYTES,
    TOWER_OUTPUTS,
    TOWERS,
    StudentSuite,
    build_serving_ensemble,
    check_serving_size,
    compile_student,
    count_parameters,
    export_student,
    load_student_config,
    load_student_suite,
    parse_student_config,
    parse_student_examples,
    serving_function,
    serving_parameter_count,
    serving_size_bytes,
    soft_binary_crossentropy,
)
from trainer.transform import graph_transform, transform_layer

CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"
CLASSES = 8
TINY_PARAMS = {
    "A": "{widths: [16, 16]}",
    "B": "{widths: [16]}",
    "C": "{rgb_widths: [16], audio_widths: [8], leaky_relu_slope: 0.1}",
    "D": "{rgb_widths: [16, 16], audio_widths: [8, 8], widths: [16]}",
    "E": "{widths: [32, 32]}",
    "F": "{widths: [16, 16], dropout: 0.3}",
    "ensemble": "{hidden: [32, 16]}",
}
TRAINING = "{epochs: 3, batch_size: 32, learning_rate: 0.01, decay_examples: 256, seed: 3}"


def _tiny(model: str):
    return parse_student_config(
        f"name: tiny_{model}\nmodel: {model}\nparams: {TINY_PARAMS[model]}\ntraining: {TRAINING}\n",
        "inline.yaml",
    )


def _raw(count: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        MEAN_RGB: rng.normal(size=(count, RGB_SIZE)).astype("float32"),
        MEAN_AUDIO: rng.normal(size=(count, AUDIO_SIZE)).astype("float32"),
    }


def _features(raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The students' input as the Transform graph computes it: L2-normalised concat(mean_rgb, mean_audio)."""
    x = np.concatenate([raw[MEAN_RGB], raw[MEAN_AUDIO]], axis=1)
    return {FEATURES: x / np.linalg.norm(x, axis=1, keepdims=True)}


def _data(count: int = 256, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Random features; soft targets a fixed smooth function of them (learnable)."""
    inputs = _features(_raw(count, seed))
    weights = np.random.default_rng(99).normal(size=(inputs[FEATURES].shape[1], CLASSES)) * 3.0
    return inputs, (1.0 / (1.0 + np.exp(-(inputs[FEATURES] @ weights - 1.0)))).astype("float32")


def _fit_losses(model: keras.Model, config, inputs, targets) -> list[float]:
    keras.utils.set_random_seed(config.training.seed)
    compile_student(model, config.training)
    history = model.fit(
        inputs, targets, epochs=config.training.epochs, batch_size=config.training.batch_size, verbose=0
    )
    return history.history["loss"]


@pytest.mark.parametrize("model", TOWERS)
def test_tower_learns_soft_targets(model):
    config = _tiny(model)
    tower = config.build_model(CLASSES)
    assert tower.output.shape == (None, CLASSES)
    losses = _fit_losses(tower, config, *_data())
    assert losses[-1] < 0.9 * losses[0], losses
    probabilities = tower.predict(_data(4, seed=1)[0], verbose=0)
    assert ((probabilities > 0) & (probabilities < 1)).all()


def test_ensemble_head_learns_from_its_tower_outputs():
    """The head fits the targets better from informative tower outputs than from the same outputs shuffled
    across videos (a head that ignored them would fit both alike). That the pipeline feeds it the
    towers' out-of-fold outputs is asserted end to end (tests/test_pipeline_e2e.py, tower_fold_models)."""
    config = _tiny("ensemble")
    inputs, targets = _data()
    rng = np.random.default_rng(5)
    # Six noisy tower predictions of the targets.
    tower_outputs = np.clip(np.tile(targets, 6) + rng.normal(scale=0.2, size=(256, 6 * CLASSES)), 0, 1)
    final_loss = {}
    for name, outputs in (("informative", tower_outputs), ("shuffled", rng.permutation(tower_outputs))):
        head = config.build_model(CLASSES, tower_output_count=6)
        losses = _fit_losses(head, config, {TOWER_OUTPUTS: outputs.astype("float32"), **inputs}, targets)
        final_loss[name] = losses[-1]
    assert final_loss["informative"] < 0.9 * final_loss["shuffled"], final_loss


def _randomized(model: keras.Model, rng: np.random.Generator) -> keras.Model:
    """Random weights, BatchNorm moving statistics included (positive variances)."""
    model.set_weights(
        [
            rng.uniform(0.5, 2.0, w.shape) if "variance" in w.path else rng.normal(scale=0.3, size=w.shape)
            for w in model.weights
        ]
    )
    return model


def _video_record(video_id: str, rgb: np.ndarray, audio: np.ndarray, labels=()) -> bytes:
    feature = {
        "id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[video_id.encode()])),
        MEAN_RGB: tf.train.Feature(float_list=tf.train.FloatList(value=rgb)),
        MEAN_AUDIO: tf.train.Feature(float_list=tf.train.FloatList(value=audio)),
    }
    if labels:
        feature["labels"] = tf.train.Feature(int64_list=tf.train.Int64List(value=list(labels)))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def test_serving_ensemble_is_towers_then_head_in_inference_mode_and_exports(tmp_path, tiny_transform_graph):
    rng = np.random.default_rng(0)
    towers = [_randomized(_tiny(name).build_model(CLASSES), rng) for name in TOWERS]
    head = _randomized(_tiny("ensemble").build_model(CLASSES, len(towers)), rng)
    serving = build_serving_ensemble(towers, head)
    assert isinstance(serving, keras.Model) and serving.count_params() == sum(
        model.count_params() for model in [*towers, head]
    )
    raw = _raw(16, seed=2)
    inputs = _features(raw)

    tower_outputs = np.concatenate([tower(inputs, training=False) for tower in towers], axis=1)
    by_hand = head({TOWER_OUTPUTS: tower_outputs, **inputs}, training=False).numpy()
    np.testing.assert_allclose(serving(inputs).numpy(), by_hand, atol=1e-6)

    # BatchNorm in inference mode: a sample's output does not depend on the rest of its batch, even when the
    # ensemble is called with training=True (the towers alone do depend on it then).
    first = {key: values[:3] for key, values in inputs.items()}
    np.testing.assert_allclose(serving(first, training=True).numpy(), by_hand[:3], atol=1e-6)
    assert not np.allclose(towers[0](first, training=True), towers[0](inputs, training=True)[:3], atol=1e-3)

    keras_path = str(tmp_path / "student.keras")
    serving.save(keras_path)
    np.testing.assert_array_equal(
        keras.saving.load_model(keras_path)(inputs).numpy(), serving(inputs).numpy()
    )

    records = tf.constant(
        [
            _video_record(f"v{i}", raw[MEAN_RGB][i], raw[MEAN_AUDIO][i], labels=(1,) if i % 2 else ())
            for i in range(16)
        ]
    )
    layer = transform_layer(tiny_transform_graph)
    before = serving_function(serving, CLASSES, graph_transform(layer), top_k=5)(records)
    export_dir = str(tmp_path / "student")
    export_student(serving, export_dir, CLASSES, layer, top_k=5)
    exported = tf.saved_model.load(export_dir)
    # The signature users call is what it was before the Transform graph went inside: records in.
    serving_default = exported.signatures["serving_default"]
    assert serving_default.structured_input_signature == (
        (),
        {"examples": tf.TensorSpec([None], tf.string, name="examples")},
    )
    assert {
        key: (spec.dtype, spec.shape.as_list()) for key, spec in serving_default.structured_outputs.items()
    } == {
        "video_id": (tf.string, [None]),
        "class_indexes": (tf.int32, [None, 5]),
        "predictions": (tf.float32, [None, 5]),
    }
    after = serving_default(examples=records)
    assert after["class_indexes"].dtype == tf.int32 and after["predictions"].dtype == tf.float32
    assert [v.decode() for v in after["video_id"].numpy()] == [f"v{i}" for i in range(16)]
    for key in ("class_indexes", "predictions"):
        np.testing.assert_array_equal(after[key].numpy(), before[key].numpy())
    scores = exported.signatures["scores"](examples=records)["scores"].numpy()
    np.testing.assert_allclose(scores, by_hand, atol=1e-5)
    expected_classes = np.argsort(-by_hand, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(after["class_indexes"].numpy(), expected_classes)
    np.testing.assert_allclose(
        after["predictions"].numpy(), np.take_along_axis(by_hand, expected_classes, axis=1), atol=1e-5
    )


def test_serving_ensemble_rejects_mismatched_head():
    towers = [_tiny(name).build_model(CLASSES) for name in ("A", "B")]
    with pytest.raises(ValueError, match="the head reads 48 tower outputs, 2 towers give 16"):
        build_serving_ensemble(towers, _tiny("ensemble").build_model(CLASSES, 6))


def test_soft_binary_crossentropy_is_mean_over_classes():
    targets = np.array([[0.0, 0.3, 1.0], [0.9, 0.5, 0.1]], "float32")
    probabilities = np.array([[0.1, 0.2, 0.7], [0.6, 0.5, 0.4]], "float32")
    expected = -(targets * np.log(probabilities) + (1 - targets) * np.log(1 - probabilities)).mean(axis=1)
    np.testing.assert_allclose(soft_binary_crossentropy(targets, probabilities), expected, rtol=1e-5)


def test_student_examples_blend_soft_and_hard_targets():
    rgb, audio = np.zeros(RGB_SIZE, "float32"), np.ones(AUDIO_SIZE, "float32")
    soft = with_soft_labels(
        _video_record("a", rgb, audio, labels=(0,)), np.array([0, 2]), np.array([0.5, 0.8])
    )
    holdout = _video_record("b", rgb, audio, labels=(1,))  # no soft labels: soft targets 0
    parsed = parse_student_examples(tf.constant([soft, holdout]), 3, hard_label_weight=0.25)
    np.testing.assert_allclose(parsed["targets"].numpy(), [[0.625, 0.0, 0.6], [0.0, 0.25, 0.0]])
    np.testing.assert_array_equal(parsed["labels"].numpy(), [[1, 0, 0], [0, 1, 0]])
    assert [v.decode() for v in parsed["id"].numpy()] == ["a", "b"] and parsed[MEAN_AUDIO].shape == (
        2,
        AUDIO_SIZE,
    )
    assert TOWER_OUTPUTS not in parsed


def test_analytic_parameter_count_equals_keras():
    configs = [_tiny(name) for name in (*TOWERS, "ensemble")] + list(
        map(load_student_config, sorted((CONFIGS_DIR / "students").glob("*.yaml")))
    )
    for config in configs:
        for num_classes in (CLASSES, 100):
            keras_count = config.build_model(num_classes, tower_output_count=5).count_params()
            assert count_parameters(config, num_classes, tower_output_count=5) == keras_count, config.name


def test_full_size_student_fits_one_gigabyte():
    suite = load_student_suite(CONFIGS_DIR / "students_full")
    count = serving_parameter_count(suite, NUM_CLASSES)
    size = serving_size_bytes(suite, NUM_CLASSES)
    print(f"full-size student: {count:,} parameters, {size / 1e9:.3f} GB in float32")
    # The original's EnsembleModel: ~247M parameters, ~0.99 GB.
    assert 240_000_000 < count < 250_000_000 and size == 4 * count < SIZE_LIMIT_BYTES
    check_serving_size(suite, NUM_CLASSES)
    original_head = dataclasses.replace(suite.head, params={**suite.head.params, "hidden": (8192, 6000)})
    with pytest.raises(ValueError, match="exceed the limit of 1,000,000,000"):
        check_serving_size(StudentSuite(suite.towers, original_head), NUM_CLASSES)


@pytest.mark.parametrize("directory", ["students", "students_full"])
def test_shipped_configs_load(directory):
    suite = load_student_suite(CONFIGS_DIR / directory)
    assert [tower.model for tower in suite.towers] == list(TOWERS)
    assert len({config.name for config in (*suite.towers, suite.head)}) == 7
    check_serving_size(suite, 100 if directory == "students" else NUM_CLASSES)


VALID = """
name: tower
model: A
params: {widths: [4]}
training: {epochs: 1}
"""


@pytest.mark.parametrize(
    ("change", "key", "reason"),
    [
        (("training: {epochs: 1}", "training: {epochs: 1}\noptimizer: sgd"), "optimizer", "unknown key"),
        (("model: A", "model: G"), "model", "expected one of"),
        (("{widths: [4]}", "{widths: [4], rgb_widths: [4]}"), "params.rgb_widths", "unknown param"),
        (("{widths: [4]}", "{widths: wide}"), "params.widths", "expected a list of ints"),
        (("{widths: [4]}", "{widths: []}"), "params.widths", "needs at least one width"),
        (("{widths: [4]}", "{widths: [4], dropout: 1.0}"), "params.dropout", "must be < 1"),
        (("{epochs: 1}", "{epochs: ten}"), "training.epochs", "expected int"),
        (("{epochs: 1}", "{momentum: 0.9}"), "training.momentum", "unknown key"),
        (("{epochs: 1}", "{hard_label_weight: 1.5}"), "training.hard_label_weight", "must be in [0, 1]"),
        (("{epochs: 1}", "{clipnorm: 0}"), "training.clipnorm", "must be > 0"),
        (("name: tower\n", ""), "name", "required key is missing"),
    ],
)
def test_config_errors_name_file_and_key(tmp_path, change, key, reason):
    path = tmp_path / "bad.yaml"
    path.write_text(textwrap.dedent(VALID).replace(*change))
    with pytest.raises(ConfigError) as error:
        load_student_config(path)
    assert str(error.value).startswith(f"{path}: {key}: ") and reason in str(error.value)


def test_suite_errors_name_file(tmp_path):
    for name in ("one", "two"):
        (tmp_path / f"{name}.yaml").write_text(VALID.replace("name: tower", f"name: {name}"))
    with pytest.raises(ConfigError, match=f"{tmp_path / 'two.yaml'}: model: tower A again"):
        load_student_suite(tmp_path)
    (tmp_path / "two.yaml").unlink()
    with pytest.raises(ConfigError, match="exactly one 'ensemble' config, got 1 towers and 0 heads"):
        load_student_suite(tmp_path)


def test_mixed_precision_builds_float16_compute_with_float32_probabilities_and_restores_the_policy():
    config = dataclasses.replace(
        _tiny("A"), training=dataclasses.replace(_tiny("A").training, mixed_precision=True)
    )
    with precision_policy(config.training.mixed_precision):
        tower = compile_student(config.build_model(CLASSES), config.training)
        assert {layer.compute_dtype for layer in tower.layers if isinstance(layer, keras.layers.Dense)} == {
            "float16",
            "float32",  # the probabilities layer
        }
        assert all(weight.dtype == "float32" for weight in tower.weights)
        losses = _fit_losses(tower, config, *_data())
    assert keras.config.dtype_policy().name == "float32"
    assert tower.output.dtype == "float32" and np.isfinite(losses).all() and losses[-1] < losses[0]
    assert parse_student_config(
        "name: t\nmodel: A\nparams: {widths: [4]}\ntraining: {mixed_precision: true}", "t.yaml"
    ).training.mixed_precision


def test_tower_mean_prior_head_starts_at_the_towers_mean_and_learns_a_correction():
    config = parse_student_config(
        f"name: h\nmodel: ensemble\nparams: {{hidden: [16], tower_mean_prior: true}}\ntraining: {TRAINING}",
        "h",
    )
    head = config.build_model(CLASSES, 2)
    assert head.count_params() == count_parameters(config, CLASSES, 2)
    inputs, targets = _data(64, seed=4)
    rng = np.random.default_rng(5)
    towers = rng.uniform(0.05, 0.95, size=(64, 2 * CLASSES)).astype("float32")
    mean = (towers[:, :CLASSES] + towers[:, CLASSES:]) / 2
    np.testing.assert_allclose(head({TOWER_OUTPUTS: towers, **inputs}).numpy(), mean, atol=1e-5)
    losses = _fit_losses(head, config, {TOWER_OUTPUTS: towers, **inputs}, targets)
    assert losses[-1] < losses[0]
    assert not np.allclose(head({TOWER_OUTPUTS: towers, **inputs}).numpy(), mean, atol=1e-3)
