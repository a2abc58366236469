"""Files under artifact URIs, local paths or gs://..., read and written through tf.io.gfile only.

On Kubeflow every artifact URI is `gs://...`: the builtin open fails there and os.makedirs on a URI silently
creates a local `./gs:/...` folder, so executors go through these helpers. An object is written whole when its
handle closes, so a failed write publishes no partial file.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import tensorflow as tf

from trainer.records import InputDataError

PARQUET_SUFFIX = ".parquet"


def write_text(path: str, text: str) -> None:
    """`text` as the whole file at `path` (its parent directories are created as needed)."""
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.gfile.GFile(path, "w") as handle:
        handle.write(text)


def read_text(path: str) -> str:
    with tf.io.gfile.GFile(path) as handle:
        return handle.read()


def write_json(path: str, value: Any) -> None:
    write_text(path, json.dumps(value, indent=1))


def read_json(path: str) -> Any:
    return json.loads(read_text(path))


def write_parquet(table: pa.Table, path: str) -> None:
    """One Parquet file at `path` (serialized in memory, then written as one object)."""
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.gfile.GFile(path, "wb") as handle:
        handle.write(buffer.getvalue())


def read_parquet(path: str, columns: list[str] | None = None) -> pa.Table:
    """One Parquet file (`columns` of it, or all); a file that is not Parquet (cut in the middle, say) fails
    naming it."""
    with tf.io.gfile.GFile(path, "rb") as handle:
        data = handle.read()
    try:
        return pq.read_table(pa.BufferReader(data), columns=columns)
    except pa.ArrowInvalid as error:
        raise _unreadable(path, error) from None


def _unreadable(path: str, error: pa.ArrowInvalid) -> InputDataError:
    """A file cut in the middle has no footer: its error names the file, not pyarrow's buffer or handle."""
    reason = re.sub(r"^Could not open Parquet input source '[^']*': ", "", str(error).splitlines()[0])
    return InputDataError(f"{path}: not a readable Parquet file: {reason}")


def parquet_files(directory: str) -> list[str]:
    """Every `*.parquet` file of `directory`, in file-name order."""
    files = sorted(tf.io.gfile.glob(os.path.join(directory, f"*{PARQUET_SUFFIX}")))
    if not files:
        raise FileNotFoundError(f"{directory}: no {PARQUET_SUFFIX} files")
    return files


def read_parquet_dir(directory: str) -> pa.Table:
    """Every `*.parquet` file of `directory`, in file-name order, as one table."""
    return pa.concat_tables([read_parquet(path) for path in parquet_files(directory)])


class _GFileStream(io.RawIOBase):
    """A tf.io.gfile handle as the binary stream pyarrow reads with seeks or writes in order."""

    def __init__(self, handle: tf.io.gfile.GFile, writable: bool) -> None:
        super().__init__()
        self._handle, self._writable = handle, writable

    def readable(self) -> bool:
        return not self._writable

    def writable(self) -> bool:
        return self._writable

    def seekable(self) -> bool:
        return not self._writable

    def readinto(self, buffer) -> int:
        data = self._handle.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def write(self, data) -> int:
        self._handle.write(bytes(data))
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._handle.seek(offset, whence)
        return self._handle.tell()

    def tell(self) -> int:
        return self._handle.tell()


@contextlib.contextmanager
def open_parquet(path: str) -> Iterator[pq.ParquetFile]:
    """One Parquet file opened for reading row groups or batches of it; a file that is not Parquet fails
    naming it."""
    with tf.io.gfile.GFile(path, "rb") as handle:
        try:
            parquet = pq.ParquetFile(_GFileStream(handle, writable=False))
        except pa.ArrowInvalid as error:
            raise _unreadable(path, error) from None
        yield parquet


def parquet_batches(
    path: str, columns: list[str] | None = None, batch_rows: int = 65_536
) -> Iterator[pa.RecordBatch]:
    """The rows of one Parquet file in order, `batch_rows` at a time (`columns` of them, or all)."""
    with open_parquet(path) as parquet:
        yield from parquet.iter_batches(batch_size=batch_rows, columns=columns)


@contextlib.contextmanager
def parquet_writer(path: str, schema: pa.Schema) -> Iterator[pq.ParquetWriter]:
    """A Parquet file at `path` written a table or batch at a time (each its own row groups)."""
    tf.io.gfile.makedirs(os.path.dirname(path))
    with (
        tf.io.gfile.GFile(path, "wb") as handle,
        pq.ParquetWriter(_GFileStream(handle, writable=True), schema) as writer,
    ):
        yield writer


@contextlib.contextmanager
def arrow_stream_writer(path: str, schema: pa.Schema) -> Iterator[pa.ipc.RecordBatchStreamWriter]:
    """An Arrow IPC stream at `path`, written a table or batch at a time with no buffering per column (many
    can be open at once, unlike Parquet writers); for scratch files."""
    tf.io.gfile.makedirs(os.path.dirname(path))
    with (
        tf.io.gfile.GFile(path, "wb") as handle,
        pa.ipc.new_stream(_GFileStream(handle, writable=True), schema) as writer,
    ):
        yield writer


def read_arrow_stream(path: str) -> pa.Table:
    """The whole Arrow IPC stream at `path` as one table."""
    with tf.io.gfile.GFile(path, "rb") as handle:
        return pa.ipc.open_stream(_GFileStream(handle, writable=False)).read_all()
