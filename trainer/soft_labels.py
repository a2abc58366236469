"""Soft labels: the L2 out-of-fold probabilities of a video's candidate classes; every other class is 0.

Two record formats: the index record tf.train.Example {id, class_ids int64 list, scores float list}, and the
student's training record, a video-level example with `soft_class_ids` and `soft_scores` added.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorflow.core.example import example_pb2

ID, CLASS_IDS, SCORES = "id", "class_ids", "scores"
SOFT_CLASS_IDS, SOFT_SCORES = "soft_class_ids", "soft_scores"


def encode_soft_labels(video_id: str, class_ids: np.ndarray, scores: np.ndarray) -> bytes:
    example = example_pb2.Example()
    features = example.features.feature
    features[ID].bytes_list.value.append(video_id.encode())
    features[CLASS_IDS].int64_list.value.extend(np.asarray(class_ids, np.int64).tolist())
    features[SCORES].float_list.value.extend(np.asarray(scores, np.float32).tolist())
    return example.SerializeToString()


def with_soft_labels(video_record: bytes, class_ids: np.ndarray, scores: np.ndarray) -> bytes:
    """The video-level record with the video's soft labels added as `soft_class_ids` and `soft_scores`."""
    example = example_pb2.Example.FromString(video_record)
    features = example.features.feature
    features[SOFT_CLASS_IDS].int64_list.value.extend(np.asarray(class_ids, np.int64).tolist())
    features[SOFT_SCORES].float_list.value.extend(np.asarray(scores, np.float32).tolist())
    return example.SerializeToString()


def decode_soft_labels(serialized: bytes) -> tuple[str, np.ndarray, np.ndarray]:
    features = example_pb2.Example.FromString(serialized).features.feature
    return (
        features[ID].bytes_list.value[0].decode(),
        np.asarray(features[CLASS_IDS].int64_list.value, np.int64),
        np.asarray(features[SCORES].float_list.value, np.float32),
    )


SOFT_LABEL_SPEC = {
    SOFT_CLASS_IDS: tf.io.VarLenFeature(tf.int64),
    SOFT_SCORES: tf.io.VarLenFeature(tf.float32),
}


def dense_soft_labels(class_ids: tf.SparseTensor, scores: tf.SparseTensor, num_classes: int) -> tf.Tensor:
    """Parsed sparse class ids and scores [B, ?] -> dense soft targets [B, num_classes] (0 elsewhere)."""
    indices = tf.stack([class_ids.indices[:, 0], class_ids.values], axis=1)
    shape = tf.stack([class_ids.dense_shape[0], tf.constant(num_classes, tf.int64)])
    return tf.sparse.to_dense(tf.sparse.reorder(tf.SparseTensor(indices, scores.values, shape)))


def parse_soft_labels(serialized: tf.Tensor, num_classes: int) -> dict[str, tf.Tensor]:
    """tf.data: a batch of soft-label index records -> id [B] and dense soft targets [B, num_classes]."""
    parsed = tf.io.parse_example(
        serialized,
        {
            ID: tf.io.FixedLenFeature([], tf.string),
            CLASS_IDS: tf.io.VarLenFeature(tf.int64),
            SCORES: tf.io.VarLenFeature(tf.float32),
        },
    )
    return {ID: parsed[ID], SCORES: dense_soft_labels(parsed[CLASS_IDS], parsed[SCORES], num_classes)}
