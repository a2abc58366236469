"""Python-side decoding and validation of YouTube-8M records (used by the Beam components).

The tf.data parsers in `trainer.readers` trust their input; every record is checked here once, at ingestion.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from google.protobuf.message import DecodeError
from tensorflow.core.example import example_pb2, feature_pb2

from trainer import features as F


class InputDataError(ValueError):
    """Input data that does not follow the YouTube-8M format; the message names the file and record."""


@dataclass(frozen=True)
class VideoRecord:
    """What the pipeline needs of any record: its video id and class ids (None when unlabelled)."""

    video_id: str
    labels: tuple[int, ...] | None


def _kind(feature: feature_pb2.Feature) -> str:
    kind = feature.WhichOneof("kind")
    return f"{kind} of {len(getattr(feature, kind).value)}" if kind else "an empty feature"


def utf8_video_id(raw: bytes) -> str:
    """A video id as text; bytes that are not UTF-8 are an error, never replaced: two ids would become one."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputDataError(f"feature '{F.ID}': {raw!r} is not valid UTF-8") from None


def _video_id(features: feature_pb2.Features) -> str:
    feature = features.feature.get(F.ID)
    if feature is None:
        raise InputDataError(f"missing feature '{F.ID}'")
    if feature.WhichOneof("kind") != "bytes_list" or len(feature.bytes_list.value) != 1:
        raise InputDataError(f"feature '{F.ID}': expected bytes_list of 1, got {_kind(feature)}")
    if not feature.bytes_list.value[0]:
        raise InputDataError(f"feature '{F.ID}' is empty")
    return utf8_video_id(feature.bytes_list.value[0])


def _labels(features: feature_pb2.Features, num_classes: int, labelled: bool) -> tuple[int, ...] | None:
    feature = features.feature.get(F.LABELS)
    if feature is None:
        if labelled:
            raise InputDataError(f"missing feature '{F.LABELS}'")
        return None
    if feature.WhichOneof("kind") not in ("int64_list", None):
        raise InputDataError(f"feature '{F.LABELS}': expected int64_list, got {_kind(feature)}")
    labels = tuple(feature.int64_list.value)
    bad = [label for label in labels if not 0 <= label < num_classes]
    if bad:
        raise InputDataError(f"feature '{F.LABELS}': class id {bad[0]} outside [0, {num_classes})")
    if len(set(labels)) != len(labels):
        raise InputDataError(f"feature '{F.LABELS}': repeated class ids {sorted(labels)}")
    return labels


def _check_floats(features: feature_pb2.Features, name: str, size: int) -> None:
    feature = features.feature.get(name)
    if feature is None:
        raise InputDataError(f"missing feature '{name}'")
    if feature.WhichOneof("kind") != "float_list" or len(feature.float_list.value) != size:
        raise InputDataError(f"feature '{name}': expected float_list of {size}, got {_kind(feature)}")
    packed = feature.float_list.SerializeToString()  # field tag and length, then 4 bytes per float
    if not np.isfinite(np.frombuffer(packed, "<f4", count=size, offset=len(packed) - 4 * size)).all():
        raise InputDataError(f"feature '{name}': contains NaN or infinite values")


def _check_frames(feature_lists: example_pb2.feature_pb2.FeatureLists, name: str, size: int) -> int:
    frames = feature_lists.feature_list.get(name)
    if frames is None or not frames.feature:
        raise InputDataError(f"missing or empty feature_list '{name}'")
    for index, frame in enumerate(frames.feature):
        if (
            frame.WhichOneof("kind") != "bytes_list"
            or len(frame.bytes_list.value) != 1
            or len(frame.bytes_list.value[0]) != size
        ):
            got = _kind(frame)
            if frame.WhichOneof("kind") == "bytes_list" and len(frame.bytes_list.value) == 1:
                got = f"{len(frame.bytes_list.value[0])} bytes"
            raise InputDataError(
                f"feature_list '{name}' frame {index}: expected {size} uint8 bytes, got {got}"
            )
    return len(frames.feature)


def decode_video_level(serialized: bytes, num_classes: int, labelled: bool = True) -> VideoRecord:
    """Validate a video-level tf.train.Example and return its id and labels."""
    try:
        example = example_pb2.Example.FromString(serialized)
    except DecodeError as error:
        raise InputDataError(f"not a tf.train.Example ({error})") from None
    features = example.features
    video_id = _video_id(features)
    try:
        _check_floats(features, F.MEAN_RGB, F.RGB_SIZE)
        _check_floats(features, F.MEAN_AUDIO, F.AUDIO_SIZE)
        labels = _labels(features, num_classes, labelled)
    except InputDataError as error:
        raise InputDataError(f"video '{video_id}': {error}") from None
    return VideoRecord(video_id, labels)


def decode_frame_level(serialized: bytes, num_classes: int, labelled: bool = True) -> VideoRecord:
    """Validate a frame-level tf.train.SequenceExample and return its id and labels."""
    try:
        example = example_pb2.SequenceExample.FromString(serialized)
    except DecodeError as error:
        raise InputDataError(f"not a tf.train.SequenceExample ({error})") from None
    video_id = _video_id(example.context)
    try:
        labels = _labels(example.context, num_classes, labelled)
        rgb_frames = _check_frames(example.feature_lists, F.FRAME_RGB, F.RGB_SIZE)
        audio_frames = _check_frames(example.feature_lists, F.FRAME_AUDIO, F.AUDIO_SIZE)
        if rgb_frames != audio_frames:
            raise InputDataError(f"{rgb_frames} rgb frames but {audio_frames} audio frames")
    except InputDataError as error:
        raise InputDataError(f"video '{video_id}': {error}") from None
    return VideoRecord(video_id, labels)


RecordDecoder = Callable[[bytes, int, bool], VideoRecord]


def decoder_for(level: str) -> RecordDecoder:
    """The decoder of a layout: "video" (tf.train.Example) or "frame" (tf.train.SequenceExample)."""
    decoders = {"video": decode_video_level, "frame": decode_frame_level}
    if level not in decoders:
        raise ValueError(f"level must be one of {sorted(decoders)}, got {level!r}")
    return decoders[level]


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def extend_floats(float_list: feature_pb2.FloatList, values: np.ndarray) -> None:
    """Append `values` to a FloatList through its packed wire format: one C-level merge instead of a Python
    float per value (about 20x faster at thousands of values)."""
    payload = np.ascontiguousarray(values, "<f4").tobytes()
    float_list.MergeFromString(b"\x0a" + _varint(len(payload)) + payload)  # field 1 (value), packed


def _read_varint(data: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[position]
        value |= (byte & 0x7F) << shift
        position += 1
        if byte < 0x80:
            return value, position
        shift += 7


def _sequence_context(serialized: bytes) -> feature_pb2.Features:
    """The context of a serialized SequenceExample, its feature_lists (the frames) skipped unparsed: the
    top-level fields are walked on the wire and only field 1 (context) is parsed."""
    context = feature_pb2.Features()
    position = 0
    while position < len(serialized):
        tag, position = _read_varint(serialized, position)
        wire_type = tag & 0x7
        if wire_type == 2:  # length-delimited: context (1), feature_lists (2)
            length, position = _read_varint(serialized, position)
            if tag >> 3 == 1:
                context.MergeFromString(serialized[position : position + length])
            position += length
        elif wire_type == 0:
            position = _read_varint(serialized, position)[1]
        else:  # fixed64 (1) or fixed32 (5)
            position += 8 if wire_type == 1 else 4
    return context


def video_id_of(serialized: bytes, level: str) -> str:
    """Just the video id of an already validated record of `level` (ingestion checked it is UTF-8); of a
    frame-level record only the context is parsed, never its frames."""
    if level == "video":
        features = example_pb2.Example.FromString(serialized).features
    else:
        features = _sequence_context(serialized)
    return features.feature[F.ID].bytes_list.value[0].decode("utf-8")
