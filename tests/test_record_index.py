"""The record index: what the ExampleGen writes is what FoldSplit reads, and its rows slice their keys."""

from __future__ import annotations

import numpy as np
import pytest

from components.record_index import IndexBuilder, index_path, read_index, write_index
from trainer.readers import RecordKeys
from trainer.records import InputDataError


def _keys(ids: list[bytes], labels: list[list[int]]) -> RecordKeys:
    return RecordKeys(
        np.array(ids, dtype=object),
        np.array([label for row in labels for label in row], np.int64),
        np.array([row for row, labels_of in enumerate(labels) for _ in labels_of], np.int64),
    )


def test_the_index_lives_beside_the_split_folders():
    assert index_path("gs://b/ex/7/Split-train/data-00000-of-00002.tfrecord") == (
        "gs://b/ex/7/_record_index/Split-train/data-00000-of-00002.tfrecord.index"
    )


def test_batches_written_and_read_back_give_every_record_its_length_id_and_labels(tmp_path):
    builder = IndexBuilder()
    builder.add(
        np.array([b"abc", b"", b"12345"], dtype=object),
        _keys([b"v1", "vidéo".encode(), b"x"], [[3, 1], [], [0]]),
    )
    builder.add(np.array([b"zz"], dtype=object), _keys([b"\x00a"], [[2, 5, 7]]))
    path = str(tmp_path / "Split-train" / "data.tfrecord")
    write_index(index_path(path), builder.index())
    index = read_index(index_path(path))
    assert index.lengths.tolist() == [3, 0, 5, 2]
    assert index.keys.ids.tolist() == [b"v1", "vidéo".encode(), b"x", b"\x00a"]
    assert index.keys.labels.tolist() == [3, 1, 0, 2, 5, 7]
    assert index.keys.label_rows.tolist() == [0, 0, 2, 3, 3, 3]
    middle = index.rows(1, 3)
    assert middle.ids.tolist() == ["vidéo".encode(), b"x"]
    assert (middle.labels.tolist(), middle.label_rows.tolist()) == ([0], [1])
    last = index.rows(3, 4)
    assert (last.labels.tolist(), last.label_rows.tolist()) == ([2, 5, 7], [0, 0, 0])


def test_examples_without_an_index_read_as_none(tmp_path):
    assert read_index(index_path(str(tmp_path / "Split-train" / "data.tfrecord"))) is None


def test_a_cut_index_fails_naming_it(tmp_path):
    builder = IndexBuilder()
    builder.add(np.array([b"abc"], dtype=object), _keys([b"v1"], [[3]]))
    path = index_path(str(tmp_path / "Split-train" / "data.tfrecord"))
    write_index(path, builder.index())
    with open(path, "rb") as file:
        data = file.read()
    with open(path, "wb") as file:
        file.write(data[: len(data) - 30])
    with pytest.raises(InputDataError, match=f"^{path}: not a record index: "):
        read_index(path)
