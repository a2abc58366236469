"""Uncompressed TFRecord files written a batch of records at a time.

A TFRecord frame is `uint64 length | uint32 masked CRC32C(length) | data | uint32 masked CRC32C(data)`,
little-endian. Framing a batch here and writing it in one call costs ~5 us a video-level record, against
~15 us through `tf.io.TFRecordWriter`, which takes one Python call per record (frame-level records: ~180 us
of CPU against ~230 us); the bytes are the same.
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
_LARGE_RECORD_BYTES = 64 << 10


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
        """Appends `records` in order: small ones joined into one file write per ~16 MB, a large one (a
        frame-level video) written as it is, as joining it would only copy it once more."""
        parts, size = [], 0
        for record in records:
            framed = (self._header(len(record)), record, _CRC.pack(masked_crc32c(record)))
            if len(record) >= _LARGE_RECORD_BYTES:
                self._file.write(b"".join(parts))
                parts, size = [], 0
                for part in framed:
                    self._file.write(part)
                continue
            parts += framed
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
