"""The soft-label record format: tf.train.Example {id, class_ids int64 list, scores float list}.

A video's soft labels are the L2 out-of-fold probabilities of its candidate classes; every other class is 0.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorflow.core.example import example_pb2

ID, CLASS_IDS, SCORES = "id", "class_ids", "scores"


def encode_soft_labels(video_id: str, class_ids: np.ndarray, scores: np.ndarray) -> bytes:
    example = example_pb2.Example()
    features = example.features.feature
    features[ID].bytes_list.value.append(video_id.encode())
    features[CLASS_IDS].int64_list.value.extend(np.asarray(class_ids, np.int64).tolist())
    features[SCORES].float_list.value.extend(np.asarray(scores, np.float32).tolist())
    return example.SerializeToString()


def decode_soft_labels(serialized: bytes) -> tuple[str, np.ndarray, np.ndarray]:
    features = example_pb2.Example.FromString(serialized).features.feature
    return (
        features[ID].bytes_list.value[0].decode(),
        np.asarray(features[CLASS_IDS].int64_list.value, np.int64),
        np.asarray(features[SCORES].float_list.value, np.float32),
    )


def parse_soft_labels(serialized: tf.Tensor, num_classes: int) -> dict[str, tf.Tensor]:
    """tf.data: a batch of soft-label records -> id [B] and dense soft targets [B, num_classes]."""
    parsed = tf.io.parse_example(
        serialized,
        {
            ID: tf.io.FixedLenFeature([], tf.string),
            CLASS_IDS: tf.io.VarLenFeature(tf.int64),
            SCORES: tf.io.VarLenFeature(tf.float32),
        },
    )
    ids, scores = parsed[CLASS_IDS], parsed[SCORES]
    indices = tf.stack([ids.indices[:, 0], ids.values], axis=1)
    shape = tf.stack([tf.shape(serialized, out_type=tf.int64)[0], tf.constant(num_classes, tf.int64)])
    dense = tf.sparse.to_dense(tf.sparse.reorder(tf.SparseTensor(indices, scores.values, shape)))
    return {ID: parsed[ID], SCORES: dense}
