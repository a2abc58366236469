"""YT8MExampleGen executor on tiny files: imports records unchanged, names file and record on bad input."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import tensorflow as tf
from tfx.components.util import examples_utils
from tfx.proto import example_gen_pb2
from tfx.types import standard_artifact_utils, standard_artifacts
from tfx.utils import proto_utils

from components.example_gen.component import LiteralInputBaseDriver, split_input_config
from components.example_gen.executor import Executor, validated_batches
from components.record_index import index_path, read_index
from pipeline.synth import frame_example, video_example
from tests import builders
from trainer.readers import read_records
from trainer.records import InputDataError, decoder_for


def _records(batches) -> list[bytes]:
    return [record for batch, _ in batches for record in batch]


def _write(path, count: int = 3, layout: str = "video", **kwargs) -> list[bytes]:
    make = video_example if layout == "video" else frame_example
    records = [make(builders.video(video_id=f"v{i}", seed=i, **kwargs), True) for i in range(count)]
    builders.write_tfrecord(path, records)
    return records


def _import(
    data: Path, out: Path, splits: dict[str, str], data_format: int, unlabelled_splits: str
) -> tuple[dict[str, list[bytes]], standard_artifacts.Examples]:
    """Run the executor on `data` with one file pattern per split; the records it wrote, by split (files
    in name order), and its output artifact."""
    examples = standard_artifacts.Examples()
    examples.uri = str(out)
    exec_properties = {
        "input_base": str(data),
        "input_config": proto_utils.proto_to_json(split_input_config(splits)),
        "output_config": proto_utils.proto_to_json(example_gen_pb2.Output()),
        "output_data_format": data_format,
        "output_file_format": example_gen_pb2.FILE_FORMAT_UNSPECIFIED,
        "num_classes": 10,
        "unlabelled_splits": unlabelled_splits,
    }
    Executor().Do({}, {"examples": [examples]}, exec_properties)
    written = {
        split: [
            r.numpy()
            for r in read_records(sorted(tf.io.gfile.glob(os.path.join(out, f"Split-{split}", "*"))))
        ]
        for split in splits
    }
    return written, examples


def test_valid_file_yields_its_records(tmp_path):
    records = _write(tmp_path / "train0000.tfrecord")
    assert _records(validated_batches(str(tmp_path / "train0000.tfrecord"), "video", 10, True)) == records


def test_truncated_file_names_file_and_record(tmp_path):
    path = tmp_path / "train0001.tfrecord"
    _write(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(
        InputDataError, match=r"train0001.tfrecord: corrupted or truncated TFRecord after record 2"
    ) as raised:
        _records(validated_batches(str(path), "video", 10, True))
    assert "{{function_node" not in str(raised.value) and "[Op:" not in str(raised.value)  # TF's wrapping


def test_bad_crc_names_file(tmp_path):
    path = tmp_path / "validate0003.tfrecord"
    _write(path, count=1)
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF  # inside the payload: its CRC no longer matches
    path.write_bytes(bytes(data))
    with pytest.raises(InputDataError, match=r"validate0003.tfrecord: corrupted or truncated TFRecord"):
        _records(validated_batches(str(path), "video", 10, True))


def test_empty_file_is_an_error(tmp_path):
    path = tmp_path / "train0002.tfrecord"
    path.write_bytes(b"")
    with pytest.raises(InputDataError, match="train0002.tfrecord: file holds no records"):
        _records(validated_batches(str(path), "video", 10, True))


def test_bad_record_names_file_record_and_video(tmp_path):
    path = tmp_path / "train0004.tfrecord"
    good = _write(tmp_path / "ok.tfrecord", count=2)
    broken = builders.video_proto(video_id="badvid", labels=(3, 12))
    builders.write_tfrecord(path, [*good, broken.SerializeToString()])
    with pytest.raises(InputDataError, match=r"train0004.tfrecord: record 2: video 'badvid': .*class id 12"):
        _records(validated_batches(str(path), "video", 10, True))


def test_frame_record_with_wrong_frame_size(tmp_path):
    path = tmp_path / "train0000.tfrecord"
    broken = builders.frame_proto(video_id="short")
    broken.feature_lists.feature_list["audio"].feature[0].bytes_list.value[0] = b"\x01" * 64
    builders.write_tfrecord(path, [broken.SerializeToString()])
    with pytest.raises(InputDataError, match=r"record 0: video 'short': feature_list 'audio' frame 0"):
        _records(validated_batches(str(path), "frame", 10, True))


def test_executor_imports_every_split(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    train = _write(data / "train0000.tfrecord", count=4, layout="frame") + _write(
        data / "train0001.tfrecord", count=2, layout="frame", labels=(0,)
    )
    test = _write(data / "test0000.tfrecord", count=3, layout="frame")
    splits = {"train": "train*.tfrecord", "test": "test*.tfrecord"}
    out = tmp_path / "out"
    imported, examples = _import(data, out, splits, example_gen_pb2.FORMAT_TF_SEQUENCE_EXAMPLE, "test")
    assert imported == {"train": train, "test": test}  # in input order, file by file
    assert sorted(os.listdir(out / "Split-train")) == [
        "data-00000-of-00002.tfrecord",
        "data-00001-of-00002.tfrecord",
    ]
    assert examples.get_json_value_custom_property("split_counts") == {"train": 6, "test": 3}
    # Uncompressed inputs are copied byte for byte.
    assert (out / "Split-test" / "data-00000-of-00001.tfrecord").read_bytes() == (
        data / "test0000.tfrecord"
    ).read_bytes()
    assert examples_utils.get_payload_format(examples) == example_gen_pb2.FORMAT_TF_SEQUENCE_EXAMPLE
    assert standard_artifact_utils.decode_split_names(examples.split_names) == ["train", "test"]


def test_gzipped_inputs_are_written_uncompressed_in_order(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    records = [video_example(builders.video(video_id=f"v{i}", seed=i), True) for i in range(5)]
    with tf.io.TFRecordWriter(str(data / "train0000.tfrecord.gz"), "GZIP") as writer:
        for record in records:
            writer.write(record)
    out = tmp_path / "out"
    imported, examples = _import(data, out, {"train": "train*"}, example_gen_pb2.FORMAT_TF_EXAMPLE, "")
    assert imported == {"train": records}
    written = out / "Split-train" / "data-00000-of-00001.tfrecord"
    assert written.read_bytes()[:8] == len(records[0]).to_bytes(8, "little")  # a TFRecord length, not gzip
    assert examples.get_json_value_custom_property("split_counts") == {"train": 5}


@pytest.mark.parametrize(("layout", "suffix"), [("video", ".tfrecord"), ("frame", ".tfrecord.gz")])
def test_every_output_file_gets_a_record_index_of_its_records(tmp_path, layout, suffix):
    data = tmp_path / "data"
    data.mkdir()
    for index, count in enumerate([300, 2]):  # two read batches, then one
        records = [
            (video_example if layout == "video" else frame_example)(
                builders.video(video_id=f"v{index}é{i}", labels=tuple(range(i % 4)), seed=i, frames=2), True
            )
            for i in range(count)
        ]
        options = "GZIP" if suffix.endswith(".gz") else ""
        with tf.io.TFRecordWriter(str(data / f"test{index:04d}{suffix}"), options) as writer:
            for record in records:
                writer.write(record)
    out = tmp_path / "out"
    payload = (
        example_gen_pb2.FORMAT_TF_EXAMPLE if layout == "video" else example_gen_pb2.FORMAT_TF_SEQUENCE_EXAMPLE
    )
    _import(data, out, {"test": "test*"}, payload, "test")
    files = sorted(tf.io.gfile.glob(str(out / "Split-test" / "*")))
    assert [len(read_index(index_path(path)).lengths) for path in files] == [300, 2]
    for path in files:
        records = [r.numpy() for r in read_records([path])]
        videos = [decoder_for(layout)(record, 10, False) for record in records]
        index = read_index(index_path(path))
        assert index.lengths.tolist() == [len(record) for record in records]
        assert [raw.decode() for raw in index.keys.ids] == [video.video_id for video in videos]
        rows = [[] for _ in records]
        for row, label in zip(index.keys.label_rows.tolist(), index.keys.labels.tolist(), strict=True):
            rows[row].append(label)
        assert rows == [list(video.labels or ()) for video in videos]


def test_a_directory_named_with_glob_characters_is_matched_literally(tmp_path):
    """`data[1]` is read, not the `data1` it matches as a pattern, and so is it by the driver's fingerprint of
    the input files (the node's cache key)."""
    data, decoy = tmp_path / "data[1]", tmp_path / "data1"
    data.mkdir()
    decoy.mkdir()
    train = _write(data / "train0000.tfrecord", count=3)
    _write(decoy / "train0000.tfrecord", count=5, labels=(1,))
    splits = {"train": "train*.tfrecord"}
    imported, _ = _import(data, tmp_path / "out", splits, example_gen_pb2.FORMAT_TF_EXAMPLE, "")
    assert imported["train"] == train
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
        _records(validated_batches(str(path), layout, 10, True))
    assert str(raised.value) == f"{path}: record 2: feature 'id': b'\\xff\\xfe' is not valid UTF-8"
