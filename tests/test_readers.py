"""tf.data readers: official dequantisation, padding/truncation with a mask, multi-hot labels."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from pipeline.synth import frame_example, video_example
from tests import builders
from trainer import features as F
from trainer.readers import dequantize, make_dataset, parse_frame_example, parse_video_examples


def test_dequantize_formula_and_round_trip():
    every_byte = np.arange(256, dtype=np.uint8)
    expected = every_byte.astype(np.float64) * 4.0 / 255.0 + 4.0 / 512.0 - 2.0
    np.testing.assert_allclose(F.dequantize(every_byte), expected, atol=1e-6)
    np.testing.assert_allclose(dequantize(tf.constant(every_byte)).numpy(), expected, atol=1e-6)
    np.testing.assert_array_equal(F.quantize(F.dequantize(every_byte)), every_byte)
    values = np.linspace(-2.5, 2.5, 1001)
    error = np.abs(F.dequantize(F.quantize(values)) - np.clip(values, -2, 2))
    assert error.max() <= 2.0 / 255.0 + 1e-6  # half a step (4/255) at most


def test_video_batch_parse_gives_multi_hot():
    records = [
        video_example(builders.video(video_id=f"v{i}", labels=labels), True)
        for i, labels in enumerate([(0, 3), (2,), (1, 2, 4)])
    ]
    parsed = parse_video_examples(tf.constant(records), num_classes=5)
    np.testing.assert_array_equal(
        parsed[F.LABELS].numpy(), [[1, 0, 0, 1, 0], [0, 0, 1, 0, 0], [0, 1, 1, 0, 1]]
    )
    assert parsed[F.MEAN_RGB].shape == (3, 1024) and parsed[F.MEAN_AUDIO].shape == (3, 128)
    assert [i.decode() for i in parsed[F.ID].numpy()] == ["v0", "v1", "v2"]


def test_frame_parse_pads_and_truncates_with_mask():
    short = builders.video(frames=3, labels=(2,))
    parsed = parse_frame_example(tf.constant(frame_example(short, True)), num_classes=4, max_frames=5)
    np.testing.assert_array_equal(parsed[F.MASK].numpy(), [1, 1, 1, 0, 0])
    np.testing.assert_allclose(
        parsed[F.FRAME_RGB].numpy()[:3], F.dequantize(short.quantized_frames[:, :1024])
    )
    assert not parsed[F.FRAME_AUDIO].numpy()[3:].any()
    np.testing.assert_array_equal(parsed[F.LABELS].numpy(), [0, 0, 1, 0])
    long = builders.video(frames=7)
    parsed = parse_frame_example(tf.constant(frame_example(long, True)), num_classes=5, max_frames=5)
    assert parsed[F.NUM_FRAMES].numpy() == 5 and parsed[F.MASK].numpy().sum() == 5
    np.testing.assert_allclose(parsed[F.FRAME_AUDIO].numpy(), F.dequantize(long.quantized_frames[:5, 1024:]))


def test_unlabelled_frame_record_has_zero_labels():
    parsed = parse_frame_example(
        tf.constant(frame_example(builders.video(), False)), num_classes=6, max_frames=4
    )
    assert parsed[F.LABELS].numpy().sum() == 0


def test_make_dataset_reads_both_layouts_in_the_same_order(tiny_data):
    video = make_dataset([str(tiny_data / "video" / "train*")], "video", 30, 16)
    frame = make_dataset([str(tiny_data / "frame" / "train*")], "frame", 30, 16, max_frames=6)
    video_batch, frame_batch = next(iter(video)), next(iter(frame))
    np.testing.assert_array_equal(video_batch[F.ID].numpy(), frame_batch[F.ID].numpy())
    np.testing.assert_array_equal(video_batch[F.LABELS].numpy(), frame_batch[F.LABELS].numpy())
    assert frame_batch[F.FRAME_RGB].shape == (16, 6, 1024) and frame_batch[F.MASK].shape == (16, 6)
