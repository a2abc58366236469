"""Tests of trainer.predictions: the float32 record format, reading older float16 records, and why float32."""

from __future__ import annotations

import numpy as np
import pytest
from tensorflow.core.example import example_pb2

from trainer.metrics import gap_at_k
from trainer.predictions import AVERAGED, decode_prediction, encode_prediction


def test_round_trip_is_exact_float32():
    scores = np.random.default_rng(0).random(3862, dtype=np.float32)
    record = encode_prediction("vid", scores, AVERAGED)
    features = example_pb2.Example.FromString(record).features.feature
    assert features["dtype"].bytes_list.value == [b"<f4"]
    assert features["scores"].bytes_list.value[0] == scores.astype("<f4").tobytes()
    video_id, fold, decoded = decode_prediction(record)
    assert (video_id, fold, decoded.dtype) == ("vid", AVERAGED, np.float32)
    np.testing.assert_array_equal(decoded, scores)


def _record(scores_bytes: bytes, dtype: bytes | None) -> bytes:
    example = example_pb2.Example()
    features = example.features.feature
    features["id"].bytes_list.value.append(b"old")
    features["fold"].int64_list.value.append(2)
    if dtype is not None:
        features["dtype"].bytes_list.value.append(dtype)
    features["scores"].bytes_list.value.append(scores_bytes)
    return example.SerializeToString()


def test_reads_float16_records_written_before_the_dtype_feature():
    scores = np.array([0.5, 0.25, 0.9995, 1.0], dtype="<f2")
    video_id, fold, decoded = decode_prediction(_record(scores.tobytes(), None))
    assert (video_id, fold, decoded.dtype) == ("old", 2, np.float32)
    np.testing.assert_array_equal(decoded, scores.astype(np.float32))


def test_unknown_dtype_is_an_error_naming_the_record():
    with pytest.raises(ValueError, match="prediction record 'old': scores dtype '<f8'"):
        decode_prediction(_record(np.zeros(2).tobytes(), b"<f8"))


def test_stored_scores_keep_the_gap_of_saturated_predictions():
    # Sigmoid outputs of shifted logits, as a ranking loss (LSEP) may leave them: many top scores above
    # 0.99976, which float16 rounds to 1.0, so float16 storage would lose the order of the top classes.
    rng = np.random.default_rng(3)
    labels = rng.random((2000, 100)) < 0.03
    scores = (1 / (1 + np.exp(-(rng.normal(3.0, 2.0, labels.shape) + 6.0 * labels)))).astype(np.float32)
    stored = np.stack(
        [decode_prediction(encode_prediction(str(v), row, 0))[2] for v, row in enumerate(scores)]
    )
    assert gap_at_k(stored, labels) == gap_at_k(scores, labels)
    assert gap_at_k(scores, labels) - gap_at_k(scores.astype(np.float16), labels) > 1e-2
