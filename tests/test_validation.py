"""Batch validation accepts exactly what the per-record decoders accept, and reports their errors."""

from __future__ import annotations

import numpy as np
import pytest

from tests import builders
from trainer.readers import ids_and_labels
from trainer.records import InputDataError, decoder_for
from trainer.validation import check_batch


def _video(change) -> bytes:
    example = builders.video_proto(video_id="bad", labels=(1, 4))
    change(example.features.feature)
    return example.SerializeToString()


def _frame(change) -> bytes:
    example = builders.frame_proto(video_id="bad", labels=(1, 4))
    change(example)
    return example.SerializeToString()


def _set_frame(name: str, index: int, value: bytes):
    def change(example) -> None:
        example.feature_lists.feature_list[name].feature[index].bytes_list.value[0] = value

    return change


def _append_frame_value(example) -> None:
    example.feature_lists.feature_list["rgb"].feature[0].bytes_list.value.append(b"\x00" * 1024)


def _frame_as_ints(example) -> None:
    example.feature_lists.feature_list["audio"].feature[2].int64_list.value.append(3)


VIDEO_CASES = {
    "valid": lambda f: None,
    "extra feature": lambda f: f["other"].float_list.value.append(1.0),
    "no labels, empty feature": lambda f: f["labels"].Clear(),
    "no labels, empty list": lambda f: f["labels"].int64_list.Clear(),
    "labels missing": lambda f: f.pop("labels"),
    "labels as floats": lambda f: f["labels"].float_list.value.append(1.0),
    "label out of range": lambda f: f["labels"].int64_list.value.append(10),
    "negative label": lambda f: f["labels"].int64_list.value.append(-1),
    "repeated label": lambda f: f["labels"].int64_list.value.append(1),
    "rgb missing": lambda f: f.pop("mean_rgb"),
    "rgb short": lambda f: f["mean_rgb"].float_list.value.pop(),
    "audio as ints": lambda f: f["mean_audio"].CopyFrom(f["labels"]),
    "rgb NaN": lambda f: f["mean_rgb"].float_list.value.__setitem__(3, float("nan")),
    "audio infinite": lambda f: f["mean_audio"].float_list.value.__setitem__(0, float("-inf")),
    "id missing": lambda f: f.pop("id"),
    "id empty": lambda f: f["id"].bytes_list.value.__setitem__(0, b""),
    "id twice": lambda f: f["id"].bytes_list.value.append(b"again"),
    "id not UTF-8": lambda f: f["id"].bytes_list.value.__setitem__(0, b"\xff\xfe"),
    "id as int": lambda f: f["id"].CopyFrom(f["labels"]),
}
FRAME_CASES = {
    "valid": lambda e: None,
    "extra feature list": lambda e: (
        e.feature_lists.feature_list["x"].feature.add().float_list.value.append(1)
    ),
    "no labels, empty feature": lambda e: e.context.feature["labels"].Clear(),
    "labels missing": lambda e: e.context.feature.pop("labels"),
    "label out of range": lambda e: e.context.feature["labels"].int64_list.value.append(10),
    "repeated label": lambda e: e.context.feature["labels"].int64_list.value.append(4),
    "id missing": lambda e: e.context.feature.pop("id"),
    "id not UTF-8": lambda e: e.context.feature["id"].bytes_list.value.__setitem__(0, b"\xfe\xff"),
    "rgb frame short": _set_frame("rgb", 1, b"\x00" * 1000),
    "audio frame long": _set_frame("audio", 2, b"\x00" * 129),
    "two values in a frame": _append_frame_value,
    "frame as ints": _frame_as_ints,
    "unequal frame counts": lambda e: e.feature_lists.feature_list["audio"].feature.pop(),
    "audio missing": lambda e: e.feature_lists.feature_list.pop("audio"),
    "rgb empty": lambda e: e.feature_lists.feature_list["rgb"].ClearField("feature"),
}


def _decoder_error(level: str, record: bytes, labelled: bool) -> str | None:
    try:
        decoder_for(level)(record, 10, labelled)
    except InputDataError as error:
        return str(error)
    return None


def _cases():
    for name, change in VIDEO_CASES.items():
        yield pytest.param("video", _video(change), id=f"video: {name}")
    for name, change in FRAME_CASES.items():
        yield pytest.param("frame", _frame(change), id=f"frame: {name}")
    yield pytest.param("video", b"\xff\xff\xff", id="video: not a proto")
    yield pytest.param("frame", b"\x0a\x05abc", id="frame: cut proto")


@pytest.mark.parametrize("labelled", [True, False])
@pytest.mark.parametrize(("level", "record"), list(_cases()))
def test_a_batch_fails_exactly_where_the_decoder_does(level, record, labelled):
    make = builders.video_proto if level == "video" else builders.frame_proto
    good = [make(video_id=f"ok{i}", labels=(i,)).SerializeToString() for i in range(4)]
    batch = np.array([*good[:2], record, *good[2:]], dtype=object)
    expected = _decoder_error(level, record, labelled)
    found = check_batch(batch, level, 10, labelled).invalid
    if expected is None:
        assert found is None
    else:
        assert found is not None and (found[0], str(found[1])) == (2, expected)


def test_the_first_bad_record_of_a_batch_is_reported():
    good = builders.video_proto(video_id="ok").SerializeToString()
    batch = [good, _video(lambda f: f.pop("mean_audio")), good, _video(lambda f: f.pop("id")), good]
    row, error = check_batch(np.array(batch, dtype=object), "video", 10, True).invalid
    assert (row, str(error)) == (1, "video 'bad': missing feature 'mean_audio'")


@pytest.mark.parametrize("level", ["video", "frame"])
def test_a_valid_batch_comes_with_the_ids_and_labels_of_its_records(level):
    make = builders.video_proto if level == "video" else builders.frame_proto
    label_sets = [(3,), (0, 9, 4), (), (7,)]
    batch = np.array(
        [make(video_id=f"v{i}é", labels=labels).SerializeToString() for i, labels in enumerate(label_sets)],
        dtype=object,
    )
    check = check_batch(batch, level, 10, False)
    assert check.invalid is None
    assert check.keys.ids.tolist() == [f"v{i}é".encode() for i in range(4)]
    assert check.keys.labels.tolist() == [3, 0, 9, 4, 7]
    assert check.keys.label_rows.tolist() == [0, 1, 1, 1, 3]
    again = ids_and_labels(batch, level)  # FoldSplit's parse when there is no record index
    assert [again.ids.tolist(), again.labels.tolist(), again.label_rows.tolist()] == [
        check.keys.ids.tolist(),
        check.keys.labels.tolist(),
        check.keys.label_rows.tolist(),
    ]
