"""Uncompressed TFRecord files written a batch of records at a time.

A TFRecord frame is `uint64 length | uint32 masked CRC32C(length) | data | uint32 masked CRC32C(data)`,
little-endian. Framing a batch here and writing it in one call costs ~5 us a video-level record, against
~15 us through `tf.io.TFRecordWriter`, which takes one Python call per record; the bytes are the same.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

import google_crc32c
import tensorflow as tf

_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")
_MASK_DELTA = 0xA282EAD8
_WRITE_BYTES = 16 << 20


def masked_crc32c(data: bytes) -> int:
    """TFRecord's checksum: CRC32C rotated right by 15 bits plus a constant."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


class RecordWriter:
    """One uncompressed TFRecord file (local or any tf.io.gfile URI), written a batch of records at a time."""

    def __init__(self, path: str) -> None:
        self._file = tf.io.gfile.GFile(path, "wb")
        self._headers: dict[int, bytes] = {}

    def _header(self, length: int) -> bytes:
        if length not in self._headers:
            size = _LENGTH.pack(length)
            self._headers[length] = size + _CRC.pack(masked_crc32c(size))
        return self._headers[length]

    def write(self, records: Iterable[bytes]) -> None:
        """Appends `records` in order (one file write per ~16 MB)."""
        parts, size = [], 0
        for record in records:
            parts += (self._header(len(record)), record, _CRC.pack(masked_crc32c(record)))
            size += len(record)
            if size >= _WRITE_BYTES:
                self._file.write(b"".join(parts))
                parts, size = [], 0
        self._file.write(b"".join(parts))

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
