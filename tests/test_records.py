"""Record validation: every malformed record is an InputDataError naming the video and the problem."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests import builders
from trainer.records import (
    InputDataError,
    decode_frame_level,
    decode_video_level,
    decoder_for,
    extend_floats,
    video_id_of,
)


def test_good_records_decode():
    assert decode_video_level(builders.video_proto().SerializeToString(), 10).labels == (1, 4)
    record = decode_frame_level(builders.frame_proto(video_id="abc").SerializeToString(), 10)
    assert record.video_id == "abc" and record.labels == (1, 4)


def test_frame_level_id_read_from_the_context_alone_in_any_wire_order():
    example = builders.frame_proto(video_id="abc")
    serialized = example.SerializeToString()
    context = tf.train.SequenceExample(context=example.context).SerializeToString()
    frames = tf.train.SequenceExample(feature_lists=example.feature_lists).SerializeToString()
    unknown_fields = bytes([0x18, 0x96, 0x01, 0x25, 1, 2, 3, 4, 0x29, *range(8)])  # varint, fixed32, fixed64
    for record in (serialized, frames + context, frames + unknown_fields + context):
        assert tf.train.SequenceExample.FromString(record).context == example.context
        assert video_id_of(record, "frame") == "abc"
    assert video_id_of(builders.video_proto().SerializeToString(), "video") == "vid001"


def test_unlabelled_records_may_lack_labels():
    example = builders.video_proto()
    del example.features.feature["labels"]
    assert decode_video_level(example.SerializeToString(), 10, labelled=False).labels is None
    with pytest.raises(InputDataError, match="video 'vid001': missing feature 'labels'"):
        decode_video_level(example.SerializeToString(), 10, labelled=True)


def _broken_video(change) -> bytes:
    example = builders.video_proto()
    change(example.features.feature)
    return example.SerializeToString()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.pop("mean_rgb"), "missing feature 'mean_rgb'"),
        (
            lambda f: f["mean_rgb"].float_list.value.pop(),
            "'mean_rgb': expected float_list of 1024, got float_list of 1023",
        ),
        (
            lambda f: f["mean_audio"].CopyFrom(f["labels"]),
            "'mean_audio': expected float_list of 128, got int64_list of 2",
        ),
        (lambda f: f["mean_rgb"].float_list.value.__setitem__(3, float("nan")), "NaN"),
        (lambda f: f["labels"].int64_list.value.append(10), r"class id 10 outside \[0, 10\)"),
        (lambda f: f["labels"].int64_list.value.append(-1), r"class id -1 outside \[0, 10\)"),
        (lambda f: f["labels"].int64_list.value.append(1), "repeated class ids"),
        (lambda f: f.pop("id"), "missing feature 'id'"),
    ],
)
def test_broken_video_records(change, message):
    with pytest.raises(InputDataError, match=message):
        decode_video_level(_broken_video(change), 10)


def test_broken_frame_records():
    wrong_size = builders.frame_proto(video_id="f1")
    wrong_size.feature_lists.feature_list["rgb"].feature[1].bytes_list.value[0] = b"\x00" * 1000
    with pytest.raises(
        InputDataError, match="video 'f1': feature_list 'rgb' frame 1: expected 1024 uint8 bytes, got 1000"
    ):
        decode_frame_level(wrong_size.SerializeToString(), 10)
    unequal = builders.frame_proto(video_id="f2")
    del unequal.feature_lists.feature_list["audio"].feature[0]
    with pytest.raises(InputDataError, match="3 rgb frames but 2 audio frames"):
        decode_frame_level(unequal.SerializeToString(), 10)
    no_audio = builders.frame_proto(video_id="f3")
    del no_audio.feature_lists.feature_list["audio"]
    with pytest.raises(InputDataError, match="missing or empty feature_list 'audio'"):
        decode_frame_level(no_audio.SerializeToString(), 10)


def test_garbage_bytes_and_unknown_level():
    with pytest.raises(InputDataError, match="not a tf.train.Example"):
        decode_video_level(b"\xff\xff\xff", 10)
    with pytest.raises(ValueError, match="level must be one of"):
        decoder_for("clip")


@pytest.mark.parametrize("size", [0, 1, 31, 32, 4096, 7724])
def test_extend_floats_equals_extending_the_repeated_field(size):
    values = np.random.default_rng(size).normal(size=size).astype(np.float32)
    fast, slow = tf.train.Example(), tf.train.Example()
    for example in (fast, slow):
        example.features.feature["x"].float_list.value.append(1.5)  # appends after what is there
    extend_floats(fast.features.feature["x"].float_list, values)
    slow.features.feature["x"].float_list.value.extend(values.tolist())
    assert fast == slow and fast.SerializeToString() == slow.SerializeToString()


@pytest.mark.parametrize("layout", ["video", "frame"])
def test_ids_that_are_not_utf8_are_rejected_not_merged(layout):
    """b"\\xff\\xfe" and b"\\xfe\\xff" would both decode to the same replacement characters: one id for two
    videos. Each is an error naming its bytes."""
    for raw in (b"\xff\xfe", b"\xfe\xff"):
        record = builders.video_proto() if layout == "video" else builders.frame_proto()
        features = record.features if layout == "video" else record.context
        features.feature["id"].bytes_list.value[0] = raw
        with pytest.raises(InputDataError) as raised:
            decoder_for(layout)(record.SerializeToString(), 10)
        assert str(raised.value) == f"feature 'id': {raw!r} is not valid UTF-8"
