"""YT8MExampleGen executor on tiny files: imports records unchanged, names file and record on bad input."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import tensorflow as tf
from tfx.proto import example_gen_pb2
from tfx.types import standard_artifacts
from tfx.utils import proto_utils

from components.example_gen.component import LiteralInputBaseDriver, split_input_config
from components.example_gen.executor import Executor, read_validated_records
from pipeline.synth import frame_example, video_example
from tests import builders
from trainer.readers import read_records
from trainer.records import InputDataError


def _write(path, count: int = 3, layout: str = "video", **kwargs) -> list[bytes]:
    make = video_example if layout == "video" else frame_example
    records = [make(builders.video(video_id=f"v{i}", seed=i, **kwargs), True) for i in range(count)]
    builders.write_tfrecord(path, records)
    return records


def _import(
    data: Path, out: Path, splits: dict[str, str], data_format: int, unlabelled_splits: str
) -> dict[str, list[bytes]]:
    """Run the executor on `data` with one file pattern per split; the records it wrote, by split."""
    examples = standard_artifacts.Examples()
    examples.uri = str(out)
    exec_properties = {
        "input_base": str(data),
        "input_config": proto_utils.proto_to_json(split_input_config(splits)),
        "output_config": proto_utils.proto_to_json(example_gen_pb2.Output()),
        "output_data_format": data_format,
        "output_file_format": example_gen_pb2.FORMAT_TFRECORDS_GZIP,
        "num_classes": 10,
        "unlabelled_splits": unlabelled_splits,
    }
    Executor().Do({}, {"examples": [examples]}, exec_properties)
    return {
        split: [r.numpy() for r in read_records(tf.io.gfile.glob(os.path.join(out, f"Split-{split}", "*")))]
        for split in splits
    }


def test_valid_file_yields_its_records(tmp_path):
    records = _write(tmp_path / "train0000.tfrecord")
    assert list(read_validated_records(str(tmp_path / "train0000.tfrecord"), "video", 10, True)) == records


def test_truncated_file_names_file_and_record(tmp_path):
    path = tmp_path / "train0001.tfrecord"
    _write(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(
        InputDataError, match=r"train0001.tfrecord: corrupted or truncated TFRecord after record 0"
    ) as raised:
        list(read_validated_records(str(path), "video", 10, True))
    assert "{{function_node" not in str(raised.value) and "[Op:" not in str(raised.value)  # TF's wrapping


def test_bad_crc_names_file(tmp_path):
    path = tmp_path / "validate0003.tfrecord"
    _write(path, count=1)
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF  # inside the payload: its CRC no longer matches
    path.write_bytes(bytes(data))
    with pytest.raises(InputDataError, match=r"validate0003.tfrecord: corrupted or truncated TFRecord"):
        list(read_validated_records(str(path), "video", 10, True))


def test_empty_file_is_an_error(tmp_path):
    path = tmp_path / "train0002.tfrecord"
    path.write_bytes(b"")
    with pytest.raises(InputDataError, match="train0002.tfrecord: file holds no records"):
        list(read_validated_records(str(path), "video", 10, True))


def test_bad_record_names_file_record_and_video(tmp_path):
    path = tmp_path / "train0004.tfrecord"
    good = _write(tmp_path / "ok.tfrecord", count=2)
    broken = builders.video_proto(video_id="badvid", labels=(3, 12))
    builders.write_tfrecord(path, [*good, broken.SerializeToString()])
    with pytest.raises(InputDataError, match=r"train0004.tfrecord: record 2: video 'badvid': .*class id 12"):
        list(read_validated_records(str(path), "video", 10, True))


def test_frame_record_with_wrong_frame_size(tmp_path):
    path = tmp_path / "train0000.tfrecord"
    broken = builders.frame_proto(video_id="short")
    broken.feature_lists.feature_list["audio"].feature[0].bytes_list.value[0] = b"\x01" * 64
    builders.write_tfrecord(path, [broken.SerializeToString()])
    with pytest.raises(InputDataError, match=r"record 0: video 'short': feature_list 'audio' frame 0"):
        list(read_validated_records(str(path), "frame", 10, True))


def test_executor_imports_every_split(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    train = _write(data / "train0000.tfrecord", count=4, layout="frame") + _write(
        data / "train0001.tfrecord", count=2, layout="frame", labels=(0,)
    )
    test = _write(data / "test0000.tfrecord", count=3, layout="frame")
    splits = {"train": "train*.tfrecord", "test": "test*.tfrecord"}
    imported = _import(data, tmp_path / "out", splits, example_gen_pb2.FORMAT_TF_SEQUENCE_EXAMPLE, "test")
    assert sorted(imported["train"]) == sorted(train)
    assert sorted(imported["test"]) == sorted(test)


def test_a_directory_named_with_glob_characters_is_matched_literally(tmp_path):
    """`data[1]` is read, not the `data1` it matches as a pattern, and so is it by the driver's fingerprint of
    the input files (the node's cache key)."""
    data, decoy = tmp_path / "data[1]", tmp_path / "data1"
    data.mkdir()
    decoy.mkdir()
    train = _write(data / "train0000.tfrecord", count=3)
    _write(decoy / "train0000.tfrecord", count=5, labels=(1,))
    splits = {"train": "train*.tfrecord"}
    imported = _import(data, tmp_path / "out", splits, example_gen_pb2.FORMAT_TF_EXAMPLE, "")
    assert sorted(imported["train"]) == sorted(train)
    input_config = split_input_config(splits)
    processor = LiteralInputBaseDriver(None).get_input_processor(input_config.splits, None, str(data))
    span, version = processor.resolve_span_and_version()
    fingerprint = processor.get_input_fingerprint(span, version)
    size = (data / "train0000.tfrecord").stat().st_size
    assert f"split:train,num_files:1,total_bytes:{size}," in fingerprint


@pytest.mark.parametrize("layout", ["video", "frame"])
def test_id_that_is_not_utf8_names_file_and_record(tmp_path, layout):
    path = tmp_path / "train0005.tfrecord"
    broken = builders.video_proto() if layout == "video" else builders.frame_proto()
    (broken.features if layout == "video" else broken.context).feature["id"].bytes_list.value[0] = b"\xff\xfe"
    good = _write(tmp_path / "ok.tfrecord", count=2, layout=layout)
    builders.write_tfrecord(path, [*good, broken.SerializeToString()])
    with pytest.raises(InputDataError) as raised:
        list(read_validated_records(str(path), layout, 10, True))
    assert str(raised.value) == f"{path}: record 2: feature 'id': b'\\xff\\xfe' is not valid UTF-8"
