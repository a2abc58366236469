"""trainer.tfrecord.RecordWriter against TF's own TFRecord writer and reader."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from trainer import tfrecord
from trainer.records import InputDataError
from trainer.tfrecord import RecordWriter, masked_crc32c


def _records() -> list[bytes]:
    rng = np.random.default_rng(0)
    return [b"", b"x", *(rng.bytes(int(n)) for n in rng.integers(1, 5000, 40)), rng.bytes(70_000)]


def test_masked_crc32c_matches_the_tfrecord_spec():
    # CRC32C("123456789") = 0xE3069283 (RFC 3720); masked: rotate right 15, add 0xA282EAD8
    crc = 0xE3069283
    assert masked_crc32c(b"123456789") == (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


@pytest.mark.parametrize("write_bytes", [16 << 20, 1000])  # one file write per batch / many
def test_file_is_byte_for_byte_tfs_and_reads_back(tmp_path, monkeypatch, write_bytes):
    monkeypatch.setattr(tfrecord, "_WRITE_BYTES", write_bytes)
    records = _records()
    ours, theirs = tmp_path / "ours.tfrecord", tmp_path / "theirs.tfrecord"
    with RecordWriter(str(ours)) as writer:
        writer.write(records[:10])
        writer.write(np.array(records[10:], dtype=object))
    with tf.io.TFRecordWriter(str(theirs)) as writer:
        for record in records:
            writer.write(record)
    assert ours.read_bytes() == theirs.read_bytes()
    assert list(tf.compat.v1.io.tf_record_iterator(str(ours))) == records


def test_empty_batch_writes_nothing(tmp_path):
    path = tmp_path / "empty.tfrecord"
    with RecordWriter(str(path)) as writer:
        writer.write([])
    assert path.read_bytes() == b""


def _tf_file(path, records: list[bytes]) -> None:
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)


@pytest.mark.parametrize("batch_bytes", [16 << 20, 5000, 1])  # one batch / several / one frame each
def test_framed_batches_are_tfs_frames_and_copy_into_the_same_file(tmp_path, batch_bytes):
    records = _records()
    source, copy = tmp_path / "source.tfrecord", tmp_path / "copy.tfrecord"
    _tf_file(source, records)
    lengths = np.array([len(record) for record in records], np.int64)
    batches = list(tfrecord.framed_batches(str(source), lengths, batch_bytes))
    frames = [bytes(frame) for batch in batches for frame in batch]
    assert [frame[12:-4] for frame in frames] == records
    assert all(sum(map(len, batch)) <= batch_bytes for batch in batches if len(batch) > 1)
    if batch_bytes == 1:
        assert len(batches) == len(records)
    with RecordWriter(str(copy)) as writer:
        for batch in batches:
            writer.write_framed(batch)
    assert copy.read_bytes() == source.read_bytes()


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda lengths: lengths[:-1], r"holds more than the 42 records"),
        (lambda lengths: np.append(lengths, 7), r"records 0-43 do not have the lengths"),
        (lambda lengths: np.concatenate([[lengths[1], lengths[0]], lengths[2:]]), r"records 0-42 do not"),
    ],
    ids=["a record more", "a record less", "two lengths swapped"],
)
def test_lengths_that_do_not_match_the_file_fail_naming_it(tmp_path, change, error):
    records = _records()
    path = tmp_path / "data.tfrecord"
    _tf_file(path, records)
    lengths = change(np.array([len(record) for record in records], np.int64))
    with pytest.raises(InputDataError, match=f"{path}: {error}"):
        list(tfrecord.framed_batches(str(path), lengths))


@pytest.mark.parametrize("read_bytes", [16 << 20, 5000, 7])  # one read / frames across reads / tiny reads
def test_record_runs_are_tfs_records(tmp_path, read_bytes):
    records = _records()  # one of 70,000 bytes: a frame over several reads of 5,000
    path = tmp_path / "data.tfrecord"
    _tf_file(path, records)
    runs = list(tfrecord.record_runs(str(path), read_bytes))
    assert [record for run in runs for record in run] == records
    assert len(runs) == -(-path.stat().st_size // read_bytes)  # one run per read


def _flip(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0x01]) + data[offset + 1 :]


@pytest.mark.parametrize("read_bytes", [16 << 20, 1000, 5])
@pytest.mark.parametrize(
    ("defect", "error", "tf_reads_it"),  # tf_reads_it: TF's reader takes the cut for the file's end
    [
        (lambda data, third: data[: third + 5], "after record 3: the file ends inside a record", True),
        (lambda data, third: data[: third + 20], "after record 3: the file ends inside a record", False),
        (lambda data, third: _flip(data, third + 2), "after record 3: the length of the next record", False),
        (lambda data, third: _flip(data, third + 12), "after record 3: the next record fails its", False),
        (lambda data, third: _flip(data, third + 112), "after record 3: the next record fails its", False),
    ],
    ids=["cut in a length", "cut in a record", "length flipped", "payload flipped", "payload CRC flipped"],
)
def test_corrupted_or_cut_file_fails_naming_it_and_its_last_good_record(
    tmp_path, read_bytes, defect, error, tf_reads_it
):
    records = [b"", b"x" * 3000, b"y"]  # the fourth record: 100 bytes (its frame starts at `third`)
    path = tmp_path / "data.tfrecord"
    _tf_file(path, [*records, b"z" * 100, b"w" * 3000])
    third = sum(len(record) + 16 for record in records)
    path.write_bytes(defect(path.read_bytes(), third))
    with pytest.raises(InputDataError, match=f"^{path}: corrupted or truncated TFRecord {error}"):
        list(tfrecord.record_runs(str(path), read_bytes))
    if tf_reads_it:
        assert list(tf.compat.v1.io.tf_record_iterator(str(path))) == records
    else:
        with pytest.raises(tf.errors.DataLossError):
            list(tf.compat.v1.io.tf_record_iterator(str(path)))
