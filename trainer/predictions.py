"""The one record format of model predictions: tf.train.Example {id, fold, scores (float16 bytes)}."""

from __future__ import annotations

import numpy as np
from tensorflow.core.example import example_pb2

AVERAGED = -1  # `fold` of a prediction averaged over all fold models


def encode_prediction(video_id: str | bytes, scores: np.ndarray, fold: int) -> bytes:
    """Serialize one video's class scores, made by the model of `fold` (or AVERAGED)."""
    example = example_pb2.Example()
    features = example.features.feature
    features["id"].bytes_list.value.append(video_id if isinstance(video_id, bytes) else video_id.encode())
    features["fold"].int64_list.value.append(fold)
    features["scores"].bytes_list.value.append(np.asarray(scores, dtype="<f2").tobytes())
    return example.SerializeToString()


def prediction_video_id(serialized: bytes) -> str:
    """Just the video id of a prediction record (no score decoding), for keying joins."""
    return example_pb2.Example.FromString(serialized).features.feature["id"].bytes_list.value[0].decode()


def decode_prediction(serialized: bytes) -> tuple[str, int, np.ndarray]:
    """(video id, fold, float32 scores) of a prediction record."""
    features = example_pb2.Example.FromString(serialized).features.feature
    scores = np.frombuffer(features["scores"].bytes_list.value[0], dtype="<f2").astype(np.float32)
    return features["id"].bytes_list.value[0].decode(), features["fold"].int64_list.value[0], scores


def count_problem(predictions: list[bytes]) -> str | None:
    """None when a join found exactly one prediction, else "missing" or "duplicated (N predictions)"."""
    if len(predictions) == 1:
        return None
    return "missing" if not predictions else f"duplicated ({len(predictions)} predictions)"
