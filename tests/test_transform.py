"""The Transform node's graph (trainer.transform, run by TFX's Transform executor with the pipeline's splits
config): analysed on the training folds only, per-dimension standardisation, the students' features, ids
and labels passed through."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft

from trainer import features as F
from trainer.readers import VIDEO_FEATURE_SPEC, read_records
from trainer.transform import FEATURES, STANDARDIZED


def _parsed(tiny_data, name: str) -> dict[str, tf.Tensor]:
    records = [
        record.numpy()
        for record in read_records(sorted(str(p) for p in (tiny_data / "video").glob(f"{name}*")))
    ]
    return tf.io.parse_example(tf.constant(records), VIDEO_FEATURE_SPEC)


def _standardised(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    return (values - reference.mean(axis=0)) / reference.std(axis=0)


@pytest.fixture(scope="module")
def transformed(tiny_data, tiny_transform_graph):
    """(raw holdout features, the graph's output on them, training-fold features, holdout features)."""
    holdout = _parsed(tiny_data, "validate")
    output = tft.TFTransformOutput(tiny_transform_graph).transform_raw_features(dict(holdout))
    return holdout, output, _parsed(tiny_data, "train")


@pytest.mark.parametrize("key", [F.MEAN_RGB, F.MEAN_AUDIO])
def test_standardisation_uses_the_training_folds_statistics_only(transformed, key):
    holdout, output, training = transformed
    raw, got = holdout[key].numpy(), output[STANDARDIZED[key]].numpy()
    np.testing.assert_allclose(got, _standardised(raw, training[key].numpy()), atol=2e-4)
    with_holdout = np.concatenate([training[key].numpy(), raw])
    assert np.abs(got - _standardised(raw, with_holdout)).max() > 1e-2


def test_students_features_are_the_l2_normalised_raw_concat(transformed):
    holdout, output, _ = transformed
    x = np.concatenate([holdout[F.MEAN_RGB].numpy(), holdout[F.MEAN_AUDIO].numpy()], axis=1)
    np.testing.assert_allclose(
        output[FEATURES].numpy(), x / np.linalg.norm(x, axis=1, keepdims=True), atol=1e-6
    )


def test_ids_labels_and_raw_features_pass_through(transformed):
    holdout, output, _ = transformed
    for key in (F.ID, F.MEAN_RGB, F.MEAN_AUDIO):
        np.testing.assert_array_equal(output[key].numpy(), holdout[key].numpy())
    np.testing.assert_array_equal(output[F.LABELS].values.numpy(), holdout[F.LABELS].values.numpy())
    np.testing.assert_array_equal(output[F.LABELS].indices.numpy(), holdout[F.LABELS].indices.numpy())
