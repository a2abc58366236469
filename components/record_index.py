"""The record index YT8MExampleGen writes beside every output file: each record's length, video id and class
ids, taken from the parse that validated it.

With it FoldSplit deals a file's records to the folds without reading them through TF or parsing them again:
it routes by the index and copies each record's TFRecord frame as it is. Each record is then parsed once in
the whole pipeline, by the ExampleGen's validation. The index lives outside the split folders
(`<uri>/_record_index/Split-<split>/<file>.index`), so readers of the splits never see it.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from trainer.readers import RecordKeys
from trainer.records import InputDataError

INDEX_DIR = "_record_index"


def index_path(data_path: str) -> str:
    """Where the index of the data file `<uri>/Split-<split>/<name>` is."""
    split_dir, name = os.path.split(data_path)
    uri, split = os.path.split(split_dir)
    return os.path.join(uri, INDEX_DIR, split, f"{name}.index")


@dataclass(frozen=True)
class RecordIndex:
    """One file's records in order: their lengths (bytes, without the TFRecord frame) and keys."""

    lengths: np.ndarray
    keys: RecordKeys

    def __post_init__(self) -> None:
        if len(self.lengths) != len(self.keys.ids):
            raise ValueError(f"{len(self.lengths)} lengths for {len(self.keys.ids)} video ids")

    def rows(self, first: int, last: int) -> RecordKeys:
        """The keys of records first..last-1, their label rows counted from `first`."""
        labels = np.searchsorted(self.keys.label_rows, [first, last])
        return RecordKeys(
            self.keys.ids[first:last],
            self.keys.labels[labels[0] : labels[1]],
            self.keys.label_rows[labels[0] : labels[1]] - first,
        )


class IndexBuilder:
    """Collects one file's index as its batches of records pass."""

    def __init__(self) -> None:
        self._lengths: list[np.ndarray] = []
        self._keys: list[RecordKeys] = []
        self._records = 0

    def add(self, batch: np.ndarray, keys: RecordKeys) -> None:
        """Appends a batch of records and their keys."""
        self._lengths.append(np.fromiter((len(record) for record in batch), np.int64, len(batch)))
        self._keys.append(RecordKeys(keys.ids, keys.labels, keys.label_rows + self._records))
        self._records += len(batch)

    def index(self) -> RecordIndex:
        keys = self._keys
        return RecordIndex(
            np.concatenate(self._lengths),
            RecordKeys(
                np.concatenate([k.ids for k in keys]),
                np.concatenate([k.labels for k in keys]),
                np.concatenate([k.label_rows for k in keys]),
            ),
        )


_ARRAYS = ("lengths", "id_bytes", "id_ends", "labels", "label_rows")  # stored in this order


def write_index(path: str, index: RecordIndex) -> None:
    """Writes `index` to `path` (any tf.io.gfile URI), creating its folder: its arrays as .npy arrays one
    after another (an .npz would hold the time it was written; these bytes depend on the records alone)."""
    ids = index.keys.ids
    arrays = {
        "lengths": index.lengths,
        "id_bytes": np.frombuffer(b"".join(ids), np.uint8),
        "id_ends": np.cumsum([len(video_id) for video_id in ids], dtype=np.int64),
        "labels": index.keys.labels,
        "label_rows": index.keys.label_rows,
    }
    buffer = io.BytesIO()
    for name in _ARRAYS:
        np.save(buffer, arrays[name], allow_pickle=False)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.gfile.GFile(path, "wb") as file:
        file.write(buffer.getvalue())


def read_index(path: str) -> RecordIndex | None:
    """The index at `path`, or None when there is none (Examples from another producer)."""
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path, "rb") as file:
        buffer = io.BytesIO(file.read())
    try:
        stored = {name: np.load(buffer, allow_pickle=False) for name in _ARRAYS}
        blob, ends = stored["id_bytes"].tobytes(), stored["id_ends"].tolist()
        ids = np.array([blob[a:b] for a, b in zip([0, *ends[:-1]], ends, strict=True)], dtype=object)
        return RecordIndex(stored["lengths"], RecordKeys(ids, stored["labels"], stored["label_rows"]))
    except (ValueError, EOFError) as error:
        raise InputDataError(f"{path}: not a record index: {error}") from None
