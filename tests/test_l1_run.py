"""L1 run_fn on tiny data: validation slice, training with GAP early stopping, export == model.predict (for
a video-level model: the export on raw records == the model on the Transform graph's features)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft

from trainer import features as F
from trainer.l1_config import parse_l1_config
from trainer.l1_run import (
    TRAINING_INFO,
    ValidationGap,
    export_model,
    in_validation_slice,
    train_model,
    training_datasets,
)
from trainer.metrics import gap_at_k
from trainer.readers import make_dataset
from trainer.transform import STANDARDIZED, graph_transform, transform_layer

VIDEO_CONFIG = """
name: tiny_resnet
model: resnet_like
params: {rgb_units: 32, audio_units: 8, joint_units: 32}
training:
  {epochs: 3, batch_size: 32, learning_rate: 0.01, mixup_alpha: 0.3, validation_fraction: 0.2, seed: 4,
   standardize_inputs: true}
"""
FRAME_CONFIG = """
name: tiny_attention
model: attention_pool
params: {frame_units: 16, num_heads: 2, key_units: 8, value_units: 8, hidden_units: [32]}
training: {epochs: 2, batch_size: 32, learning_rate: 0.01, max_frames: 6, loss: lsep, seed: 5}
"""


def test_validation_slice_is_stable_and_sized():
    ids = tf.constant([f"video{i}" for i in range(5000)])
    first = in_validation_slice(ids, 0.1, seed=3).numpy()
    assert np.array_equal(first, in_validation_slice(ids, 0.1, seed=3).numpy())
    assert 0.08 < first.mean() < 0.12
    assert not np.array_equal(first, in_validation_slice(ids, 0.1, seed=4).numpy())


def test_train_and_validation_slices_are_disjoint_and_cover_training_data(tiny_data):
    config = parse_l1_config(VIDEO_CONFIG, "inline.yaml")
    patterns = [str(tiny_data / "video" / "train*")]
    train, validation = training_datasets(config, patterns, 30)
    del train  # mixup batches carry no ids; count through the un-mixed datasets instead
    all_ids = np.concatenate([b[F.ID].numpy() for b in make_dataset(patterns, "video", 30, 64)])
    in_slice = in_validation_slice(tf.constant(all_ids), 0.2, 4).numpy()
    validation_count = sum(int(labels.shape[0]) for _, labels in validation)
    assert validation_count == in_slice.sum() > 0


def test_validation_slice_capped_to_its_first_videos(tiny_data):
    patterns = [str(tiny_data / "video" / "train*")]
    whole = training_datasets(parse_l1_config(VIDEO_CONFIG, "inline.yaml"), patterns, 30)[1]
    capped_config = VIDEO_CONFIG.replace("seed: 4,", "seed: 4, max_validation_videos: 7,")
    capped = training_datasets(parse_l1_config(capped_config, "inline.yaml"), patterns, 30)[1]
    first = [np.concatenate([labels.numpy() for _, labels in dataset])[:7] for dataset in (whole, capped)]
    assert first[1].shape[0] == 7 and np.array_equal(first[0], first[1])
    assert sum(int(labels.shape[0]) for _, labels in whole) > 7


def test_validation_gap_is_gap_at_20_of_the_model_on_the_slice(tiny_data):
    config = parse_l1_config(VIDEO_CONFIG.replace("standardize_inputs: true", ""), "inline.yaml")
    _, validation = training_datasets(config, [str(tiny_data / "video" / "train*")], 30)
    model = config.build_model(30)
    callback = ValidationGap(validation)
    callback.set_model(model)
    logs = {}
    callback.on_epoch_end(0, logs)
    scores = np.concatenate([model(inputs, training=False).numpy() for inputs, _ in validation])
    labels = np.concatenate([labels.numpy() for _, labels in validation])
    assert logs["val_gap"] == pytest.approx(gap_at_k(scores, labels, 20), abs=1e-12) and logs["val_gap"] > 0


def _train_export_and_compare(
    tmp_path, tiny_data, config_text: str, layout: str, transform_graph=None
) -> None:
    config = parse_l1_config(config_text, "inline.yaml")
    patterns = [str(tiny_data / layout / "train*")]
    layer = transform_layer(transform_graph) if transform_graph else None
    transform = graph_transform(layer, config.training.standardize_inputs) if layer else None
    model, history = train_model(config, patterns, 30, log_dir=str(tmp_path / "logs"), transform=transform)
    assert "val_gap" in history and all(0.0 <= gap <= 1.0 for gap in history["val_gap"])
    assert tf.io.gfile.glob(str(tmp_path / "logs" / "train" / "*"))  # TensorBoard events written
    export_dir = str(tmp_path / "export")
    export_model(model, config, 30, export_dir, {"fold": 0}, layer)
    with open(os.path.join(export_dir, TRAINING_INFO)) as handle:
        assert json.load(handle) == {"fold": 0}

    records = [r.numpy() for r in tf.data.TFRecordDataset(str(tiny_data / layout / "validate0000.tfrecord"))][
        :40
    ]
    served = tf.saved_model.load(export_dir).signatures["serving_default"](examples=tf.constant(records))
    batch = next(
        iter(
            make_dataset(
                [str(tiny_data / layout / "validate0000.tfrecord")],
                layout,
                30,
                40,
                max_frames=config.training.max_frames or F.MAX_FRAMES,
            )
        )
    )
    if transform_graph:  # the features as tf.Transform itself computes them from the raw ones
        raw = {key: batch[key] for key in (F.ID, F.MEAN_RGB, F.MEAN_AUDIO)}
        output = tft.TFTransformOutput(transform_graph).transform_raw_features(raw, drop_unused_features=True)
        batch = {F.ID: raw[F.ID], **{key: output[STANDARDIZED[key]] for key in (F.MEAN_RGB, F.MEAN_AUDIO)}}
        assert not np.allclose(batch[F.MEAN_RGB].numpy(), raw[F.MEAN_RGB].numpy(), atol=0.1)
    inputs = {name: batch[name] for name in model.input}
    expected = tf.sigmoid(model.predict(inputs, verbose=0)).numpy()
    np.testing.assert_array_equal(served["video_id"].numpy(), batch[F.ID].numpy())
    np.testing.assert_allclose(served["scores"].numpy(), expected, atol=1e-5)


def test_video_model_trains_on_transformed_features_and_serving_raw_records_matches_predict(
    tmp_path, tiny_data, tiny_transform_graph
):
    _train_export_and_compare(tmp_path, tiny_data, VIDEO_CONFIG, "video", tiny_transform_graph)


def test_frame_model_trains_and_serving_matches_predict(tmp_path, tiny_data):
    _train_export_and_compare(tmp_path, tiny_data, FRAME_CONFIG, "frame")
