"""Uncompressed TFRecord files written a batch of records at a time.

A TFRecord frame is `uint64 length | uint32 masked CRC32C(length) | data | uint32 masked CRC32C(data)`,
little-endian. Framing a batch here and writing it in one call costs ~5 us a video-level record, against
~15 us through `tf.io.TFRecordWriter`, which takes one Python call per record (frame-level records: ~180 us
of CPU against ~230 us); the bytes are the same. A file whose record lengths are known can also be read as
its frames, to be copied as they are. Reading a file a chunk of frames at a time, checksums verified, costs
~3 us a video-level record against ~5 us through `tf.compat.v1.io.tf_record_iterator` (one Python call per
record), and keeps the raw frames for a byte-for-byte copy.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import google_crc32c
import numpy as np
import tensorflow as tf

from trainer.records import InputDataError

_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")
_HEADER = struct.Struct("<QI")
_MASK_DELTA = 0xA282EAD8
_FRAME_OVERHEAD = _LENGTH.size + 2 * _CRC.size  # bytes a frame adds to its record
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

    def write_framed(self, frames: Iterable[bytes | memoryview]) -> None:
        """Appends records already framed (e.g. from `framed_batches`), in order, in one file write."""
        self._file.write(b"".join(frames))

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@dataclass(frozen=True)
class FramedChunk:
    """Whole TFRecord frames read one after another: their bytes as they are in the file, and the records
    they frame."""

    frames: bytes
    records: list[bytes]


def framed_chunks(path: str, chunk_bytes: int = _WRITE_BYTES) -> Iterator[FramedChunk]:
    """An uncompressed TFRecord file read ~`chunk_bytes` at a time as chunks of whole frames, every length
    and checksum verified; a corrupted or cut file fails naming it and its last good record."""
    records_before, pending = 0, b""
    with tf.io.gfile.GFile(path, "rb") as file:
        while block := file.read(chunk_bytes):
            data = pending + block if pending else block
            records, end = _whole_frames(data)
            if isinstance(end, str):
                raise _corrupted(path, records_before + len(records), end)
            pending = data[end:]
            if records:
                yield FramedChunk(data[:end] if pending else data, records)
                records_before += len(records)
    if pending:
        raise _corrupted(path, records_before, f"the file ends inside a record ({len(pending)} bytes)")


def _whole_frames(data: bytes) -> tuple[list[bytes], int | str]:
    """The records of the whole frames at the start of `data` and where they end, or the records before a
    frame whose checksum fails and what fails."""
    records, start, size = [], 0, len(data)
    while start + _HEADER.size <= size:
        length, length_crc = _HEADER.unpack_from(data, start)
        if length_crc != masked_crc32c(data[start : start + _LENGTH.size]):
            return records, "the length of the next record fails its checksum"
        first, end = start + _HEADER.size, start + _FRAME_OVERHEAD + length
        if end > size:
            break
        record = data[first : first + length]
        if _CRC.unpack_from(data, end - _CRC.size)[0] != masked_crc32c(record):
            return records, "the next record fails its checksum"
        records.append(record)
        start = end
    return records, start


def _corrupted(path: str, records: int, what: str) -> InputDataError:
    return InputDataError(f"{path}: corrupted or truncated TFRecord after record {records}: {what}")


def framed_batches(
    path: str, lengths: np.ndarray, batch_bytes: int = _WRITE_BYTES
) -> Iterator[list[memoryview]]:
    """The frames of an uncompressed TFRecord file whose records have `lengths`, in order, in batches of
    about `batch_bytes` (one file read each). Checksums are not verified, only that every frame's length
    field and the file's size agree with `lengths`; a mismatch fails naming the file and record."""
    ends = np.cumsum(lengths.astype(np.int64) + _FRAME_OVERHEAD)
    first, start = 0, 0
    with tf.io.gfile.GFile(path, "rb") as file:
        while first < len(ends):
            last = max(first + 1, int(np.searchsorted(ends, start + batch_bytes, side="right")))
            chunk = file.read(int(ends[last - 1]) - start)
            bounds = ends[first:last] - start
            starts = np.concatenate([[0], bounds[:-1]])
            if len(chunk) != bounds[-1] or not _lengths_match(chunk, starts, lengths[first:last]):
                raise InputDataError(
                    f"{path}: records {first}-{last - 1} do not have the lengths its record index gives"
                )
            view = memoryview(chunk)
            yield [view[a:b] for a, b in zip(starts.tolist(), bounds.tolist(), strict=True)]
            first, start = last, int(ends[last - 1])
        if file.read(1):
            raise InputDataError(f"{path}: holds more than the {len(ends)} records its record index gives")


def _lengths_match(chunk: bytes, starts: np.ndarray, lengths: np.ndarray) -> bool:
    """Whether the length fields of the frames that start at `starts` in `chunk` read `lengths`."""
    header = np.frombuffer(chunk, np.uint8)[starts[:, None] + np.arange(_LENGTH.size)]
    return bool(np.array_equal(header.copy().view("<u8")[:, 0], lengths))
