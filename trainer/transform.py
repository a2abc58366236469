"""tensorflow-transform preprocessing of the video-level features, analysed once by the pipeline's Transform
node (on the training folds only) and applied inside every video-level model, in training and in serving.

Outputs of `preprocessing_fn`:
- `mean_rgb_standardized`, `mean_audio_standardized`: each dimension standardised by the training folds'
  mean and standard deviation (what a video-level L1 model with `training.standardize_inputs` reads as its
  mean_rgb / mean_audio; measured to help the logistic model and to hurt MoE, see README);
- `features`: L2-normalised concat(mean_rgb, mean_audio) of the raw features [B, 1152] (what the students
  read);
- `id`, `labels`, `mean_rgb`, `mean_audio`: passed through unchanged.

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
# What the transform layer reads from the parsed records; the standardised outputs of each.
TRANSFORM_INPUTS = (MEAN_RGB, MEAN_AUDIO)
STANDARDIZED = {MEAN_RGB: "mean_rgb_standardized", MEAN_AUDIO: "mean_audio_standardized"}
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
    """tf.Transform: standardised mean_rgb / mean_audio, the students' `features`, the rest as read."""
    standardized = {
        STANDARDIZED[key]: tft.scale_to_z_score(inputs[key], elementwise=True) for key in TRANSFORM_INPUTS
    }
    features = l2_normalized_concat(inputs[MEAN_RGB], inputs[MEAN_AUDIO])
    return {
        **{key: inputs[key] for key in (ID, LABELS, MEAN_RGB, MEAN_AUDIO)},
        **standardized,
        FEATURES: features,
    }


def transform_layer(transform_graph_uri: str) -> tf.keras.Model:
    """The Transform node's graph (its artifact URI) as a layer: parsed features -> transformed features."""
    return tft.TFTransformOutput(transform_graph_uri).transform_features_layer()


def graph_transform(layer, standardize: bool = False) -> FeatureTransform:
    """Parsed features (as the readers return them) -> the same plus `features` from the Transform graph's
    `layer`, and with mean_rgb / mean_audio replaced by their standardised outputs if `standardize`."""

    def transform(parsed: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        transformed = layer({key: parsed[key] for key in TRANSFORM_INPUTS})
        standardized = {key: transformed[STANDARDIZED[key]] for key in TRANSFORM_INPUTS if standardize}
        return {**parsed, FEATURES: transformed[FEATURES], **standardized}

    return transform
