"""Files under artifact URIs, local paths or gs://..., read and written through tf.io.gfile only.

On Kubeflow every artifact URI is `gs://...`: the builtin open fails there and os.makedirs on a URI silently
creates a local `./gs:/...` folder, so executors go through these helpers. An object is written whole when its
handle closes, so a failed write publishes no partial file.
"""

from __future__ import annotations

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


def parquet_batches(path: str, columns: list[str], batch_size: int) -> Iterator[pa.RecordBatch]:
    """The rows of one Parquet file, `batch_size` at a time, streamed from the file (never all in memory);
    a file that is not Parquet fails naming it, as in `read_parquet`."""
    with tf.io.gfile.GFile(path, "rb") as handle:
        try:
            yield from pq.ParquetFile(_SeekableReader(handle)).iter_batches(batch_size, columns=columns)
        except pa.ArrowInvalid as error:
            raise _unreadable(path, error) from None


class _SeekableReader(io.RawIOBase):
    """A GFile as the Python file pyarrow reads parts of (GFile has no `closed` and returns no position
    from `seek`)."""

    def __init__(self, handle: tf.io.gfile.GFile) -> None:
        super().__init__()
        self._handle = handle

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._handle.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._handle.seek(offset, whence)
        return self._handle.tell()

    def tell(self) -> int:
        return self._handle.tell()


def _unreadable(path: str, error: pa.ArrowInvalid) -> InputDataError:
    """A file cut in the middle has no footer: its error names the file, not pyarrow's buffer or handle."""
    reason = re.sub(r"^Could not open Parquet input source '[^']*': ", "", str(error).splitlines()[0])
    return InputDataError(f"{path}: not a readable Parquet file: {reason}")


def read_parquet_dir(directory: str) -> pa.Table:
    """Every `*.parquet` file of `directory`, in file-name order, as one table."""
    files = sorted(tf.io.gfile.glob(os.path.join(directory, f"*{PARQUET_SUFFIX}")))
    if not files:
        raise FileNotFoundError(f"{directory}: no {PARQUET_SUFFIX} files")
    return pa.concat_tables([read_parquet(path) for path in files])
