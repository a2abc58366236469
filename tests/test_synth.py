"""The generator writes real YouTube-8M-format records, deterministic and learnable-looking."""

from __future__ import annotations

import csv
import json
import re
from collections import Counter

import numpy as np
import pytest
import tensorflow as tf

from pipeline.synth import SynthConfig, generate_videos, video_id, write_dataset
from tests.conftest import TINY
from trainer import features as F

VIDEO_SPEC = {
    "id": tf.io.FixedLenFeature([], tf.string),
    "labels": tf.io.VarLenFeature(tf.int64),
    "mean_rgb": tf.io.FixedLenFeature([1024], tf.float32),
    "mean_audio": tf.io.FixedLenFeature([128], tf.float32),
}


def _records(path) -> list[bytes]:
    return [r.numpy() for r in tf.data.TFRecordDataset(str(path))]


def test_layout_and_names(tiny_data):
    names = sorted(p.name for p in (tiny_data / "video").iterdir())
    assert names == sorted(p.name for p in (tiny_data / "frame").iterdir())
    assert {re.fullmatch(r"(train|validate|test)\d{4}\.tfrecord", n).group(1) for n in names} == {
        "train",
        "validate",
        "test",
    }
    summary = json.loads((tiny_data / "synth.json").read_text())
    assert sum(summary["split_videos"].values()) == TINY.videos


def test_video_level_parses_with_official_feature_names(tiny_data):
    parsed = tf.io.parse_single_example(_records(tiny_data / "video" / "train0000.tfrecord")[0], VIDEO_SPEC)
    assert parsed["mean_rgb"].shape == (1024,) and parsed["mean_audio"].shape == (128,)
    labels = tf.sparse.to_dense(parsed["labels"]).numpy()
    assert labels.size >= 1 and labels.min() >= 0 and labels.max() < TINY.classes


def test_frame_level_parses_and_means_match_video_level(tiny_data):
    video_records = _records(tiny_data / "video" / "validate0000.tfrecord")
    frame_records = _records(tiny_data / "frame" / "validate0000.tfrecord")
    assert len(video_records) == len(frame_records)
    for video_bytes, frame_bytes in zip(video_records[:10], frame_records[:10], strict=True):
        video = tf.io.parse_single_example(video_bytes, VIDEO_SPEC)
        context, frames = tf.io.parse_single_sequence_example(
            frame_bytes,
            context_features={
                "id": tf.io.FixedLenFeature([], tf.string),
                "labels": tf.io.VarLenFeature(tf.int64),
            },
            sequence_features={
                "rgb": tf.io.FixedLenSequenceFeature([], tf.string),
                "audio": tf.io.FixedLenSequenceFeature([], tf.string),
            },
        )
        assert context["id"].numpy() == video["id"].numpy()
        np.testing.assert_array_equal(
            tf.sparse.to_dense(context["labels"]).numpy(), tf.sparse.to_dense(video["labels"]).numpy()
        )
        rgb = tf.io.decode_raw(frames["rgb"], tf.uint8).numpy()
        audio = tf.io.decode_raw(frames["audio"], tf.uint8).numpy()
        assert rgb.shape[1] == 1024 and audio.shape[1] == 128 and 1 <= rgb.shape[0] <= TINY.frames
        np.testing.assert_allclose(F.dequantize(rgb).mean(0), video["mean_rgb"].numpy(), atol=1e-5)
        np.testing.assert_allclose(F.dequantize(audio).mean(0), video["mean_audio"].numpy(), atol=1e-5)


def test_test_split_has_no_labels_and_truth_is_written(tiny_data):
    ids = []
    for layout in ("video", "frame"):
        for record in _records(tiny_data / layout / "test0000.tfrecord"):
            if layout == "video":
                example = tf.train.Example.FromString(record)
                assert "labels" not in example.features.feature
                ids.append(example.features.feature["id"].bytes_list.value[0].decode())
            else:
                assert "labels" not in tf.train.SequenceExample.FromString(record).context.feature
    with open(tiny_data / "test_truth.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["VideoId"] for row in rows] == ids
    assert all(row["Labels"].split() for row in rows)


def test_deterministic_for_a_seed_and_independent_of_sharding(tmp_path):
    config = SynthConfig(videos=30, classes=12, frames=4, seed=5, videos_per_shard=7, layouts=("video",))
    write_dataset(config, tmp_path / "a")
    write_dataset(SynthConfig(**{**config.__dict__, "videos_per_shard": 100}), tmp_path / "b")
    write_dataset(SynthConfig(**{**config.__dict__, "seed": 6}), tmp_path / "c")
    first = [r for p in sorted((tmp_path / "a" / "video").glob("train*")) for r in _records(p)]
    second = _records(tmp_path / "b" / "video" / "train0000.tfrecord")
    other = _records(tmp_path / "c" / "video" / "train0000.tfrecord")
    assert first == second
    assert first != other


def test_label_statistics_are_realistic():
    config = SynthConfig(videos=3000, classes=100, frames=2, seed=1)
    counts = Counter()
    per_video = []
    for video in generate_videos(config, 0, config.videos):
        counts.update(video.labels.tolist())
        per_video.append(video.labels.size)
    assert 2.5 <= np.mean(per_video) <= 3.5  # ~3 labels per video
    frequencies = np.array(sorted(counts.values(), reverse=True))
    assert frequencies[0] > 10 * np.median(frequencies)  # Zipf-like head
    assert len(counts) > 90  # the tail still appears


def test_video_ids_are_unique_and_youtube8m_like():
    ids = [video_id(i) for i in range(100_000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 6 and i.isalnum() for i in ids[:100])


def test_many_classes_supported():
    config = SynthConfig(videos=4, classes=3862, frames=2, seed=0)
    labels = np.concatenate([v.labels for v in generate_videos(config, 0, 4)])
    assert labels.max() < 3862


@pytest.mark.parametrize(
    "changes",
    [{"videos": 0}, {"frames": 301}, {"validate_fraction": 0.6, "test_fraction": 0.5}, {"layouts": ("x",)}],
)
def test_bad_settings_are_rejected(changes):
    with pytest.raises(ValueError, match="synth"):
        SynthConfig(**changes)
