"""The one record format of model predictions: tf.train.Example {id, fold, dtype, scores (raw bytes)}.

Scores are stored as float32 ("<f4"): float16 quantises sigmoid outputs near 1 (steps of 0.0005, and 1.0 from
0.99976 up), which ties and reorders the top classes of confident or ranking-loss (LSEP) models and moves
their GAP by far more than 1e-4 (tests/test_predictions.py). Records written before the `dtype` feature
existed hold float16 ("<f2") and are still read.
"""

from __future__ import annotations

import numpy as np
from tensorflow.core.example import example_pb2

AVERAGED = -1  # `fold` of a prediction averaged over all fold models
SCORES_DTYPE = "<f4"
_READABLE_DTYPES = ("<f4", "<f2")
_LEGACY_DTYPE = "<f2"  # records without a `dtype` feature


def encode_prediction(video_id: str | bytes, scores: np.ndarray, fold: int) -> bytes:
    """Serialize one video's class scores, made by the model of `fold` (or AVERAGED)."""
    example = example_pb2.Example()
    features = example.features.feature
    features["id"].bytes_list.value.append(video_id if isinstance(video_id, bytes) else video_id.encode())
    features["fold"].int64_list.value.append(fold)
    features["dtype"].bytes_list.value.append(SCORES_DTYPE.encode())
    features["scores"].bytes_list.value.append(np.asarray(scores, dtype=SCORES_DTYPE).tobytes())
    return example.SerializeToString()


def prediction_video_id(serialized: bytes) -> str:
    """Just the video id of a prediction record (no score decoding), for keying joins."""
    return example_pb2.Example.FromString(serialized).features.feature["id"].bytes_list.value[0].decode()


def decode_prediction(serialized: bytes) -> tuple[str, int, np.ndarray]:
    """(video id, fold, float32 scores) of a prediction record (float32, or float16 from older records)."""
    features = example_pb2.Example.FromString(serialized).features.feature
    video_id = features["id"].bytes_list.value[0].decode()
    dtype = features["dtype"].bytes_list.value[0].decode() if "dtype" in features else _LEGACY_DTYPE
    if dtype not in _READABLE_DTYPES:
        raise ValueError(
            f"prediction record '{video_id}': scores dtype '{dtype}' is not one of {_READABLE_DTYPES}"
        )
    scores = np.frombuffer(features["scores"].bytes_list.value[0], dtype=dtype).astype(np.float32)
    return video_id, features["fold"].int64_list.value[0], scores


def count_problem(predictions: list[bytes]) -> str | None:
    """None when a join found exactly one prediction, else "missing" or "duplicated (N predictions)"."""
    if len(predictions) == 1:
        return None
    return "missing" if not predictions else f"duplicated ({len(predictions)} predictions)"
