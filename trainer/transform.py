"""tensorflow-transform preprocessing of the video-level features, analysed once by the pipeline's Transform
node (on the training folds only) and applied inside every video-level model, in training and in serving.

Outputs of `preprocessing_fn`:
- `mean_rgb`, `mean_audio`: each dimension standardised by the training folds' mean and standard deviation
  (what the video-level L1 models read);
- `features`: L2-normalised concat(mean_rgb, mean_audio) of the raw features [B, 1152] (what the students
  read);
- `id`, `labels`: passed through unchanged.

The models parse records with `trainer.readers` and hand the parsed `mean_rgb` / `mean_audio` to the
transform graph (`transform_layer`), so the exported SavedModels keep taking raw serialized records.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf
import tensorflow_transform as tft
from tensorflow_metadata.proto.v0 import schema_pb2
from tensorflow_transform.tf_metadata import schema_utils

from trainer.features import ID, LABELS, MEAN_AUDIO, MEAN_RGB
from trainer.readers import VIDEO_FEATURE_SPEC

FEATURES = "features"
PREPROCESSING_FN = "trainer.transform.preprocessing_fn"
# What the transform layer reads from the parsed records, and what it replaces or adds.
TRANSFORM_INPUTS = (MEAN_RGB, MEAN_AUDIO)
TRANSFORM_OUTPUTS = (MEAN_RGB, MEAN_AUDIO, FEATURES)
# Parsed features -> the features a model reads.
FeatureTransform = Callable[[dict[str, tf.Tensor]], dict[str, tf.Tensor]]


def video_schema() -> schema_pb2.Schema:
    """The schema the Transform node decodes the video-level records with: the readers' feature spec."""
    return schema_utils.schema_from_feature_spec(VIDEO_FEATURE_SPEC)


def l2_normalized_concat(rgb: tf.Tensor, audio: tf.Tensor) -> tf.Tensor:
    """concat(rgb, audio) [B, 1152] divided by its L2 norm (at least 1e-6)."""
    x = tf.concat([rgb, audio], axis=-1)
    return x * tf.math.rsqrt(tf.maximum(tf.reduce_sum(tf.square(x), axis=-1, keepdims=True), 1e-12))


def preprocessing_fn(inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """tf.Transform: standardised mean_rgb / mean_audio, the students' `features`, id and labels as read."""
    return {
        ID: inputs[ID],
        LABELS: inputs[LABELS],
        MEAN_RGB: tft.scale_to_z_score(inputs[MEAN_RGB], elementwise=True),
        MEAN_AUDIO: tft.scale_to_z_score(inputs[MEAN_AUDIO], elementwise=True),
        FEATURES: l2_normalized_concat(inputs[MEAN_RGB], inputs[MEAN_AUDIO]),
    }


def transform_layer(transform_graph_uri: str) -> tf.keras.Model:
    """The Transform node's graph (its artifact URI) as a layer: parsed features -> transformed features."""
    return tft.TFTransformOutput(transform_graph_uri).transform_features_layer()


def graph_transform(layer) -> FeatureTransform:
    """Parsed features (as the readers return them) -> the same with mean_rgb, mean_audio and features
    from the Transform graph's `layer`."""

    def transform(parsed: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        transformed = layer({key: parsed[key] for key in TRANSFORM_INPUTS})
        return {**parsed, **{key: transformed[key] for key in TRANSFORM_OUTPUTS}}

    return transform
