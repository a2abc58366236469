"""trainer.tfrecord.RecordWriter against TF's own TFRecord writer and reader."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from trainer import tfrecord
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
