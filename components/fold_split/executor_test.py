"""FoldSplit executor on tiny hand-written Examples artifacts."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter
from pathlib import Path

import pytest
import tensorflow as tf
from tfx.components.util import examples_utils
from tfx.proto import example_gen_pb2
from tfx.types import standard_artifact_utils, standard_artifacts

from components.example_gen import executor_test as example_gen_test
from components.fold_split.executor import Executor, assign_splits
from components.record_index import INDEX_DIR
from pipeline.synth import frame_example, video_example
from tests import builders
from trainer.readers import read_records
from trainer.records import InputDataError, video_id_of


def _sha_head(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def assign_split(video_id: str, seed: int, num_folds: int, holdout_fraction: float) -> str:
    """The fold rule, written out one video at a time (the scalar code FoldSplit used before it worked on
    arrays): the position of the video in [0, 1) from SHA-256("<seed>:<id>"), the holdout below
    `holdout_fraction`, the rest cut into `num_folds` equal parts."""
    position = _sha_head(f"{seed}:{video_id}") / 2**64
    if position < holdout_fraction:
        return "holdout"
    fold = int((position - holdout_fraction) / (1.0 - holdout_fraction) * num_folds)
    return f"fold_{min(fold, num_folds - 1)}"


PARAMS = {"num_folds": 3, "holdout_fraction": 0.2, "seed": 11, "num_classes": 10, "unlabelled_splits": "test"}


def _examples(root, splits: dict[str, list[bytes]], payload_format) -> standard_artifacts.Examples:
    artifact = standard_artifacts.Examples()
    artifact.uri = str(root)
    artifact.split_names = standard_artifact_utils.encode_split_names(list(splits))
    examples_utils.set_payload_format(artifact, payload_format)
    artifact.set_json_value_custom_property("split_counts", {split: len(r) for split, r in splits.items()})
    for split, records in splits.items():
        os.makedirs(root / f"Split-{split}")
        with tf.io.TFRecordWriter(str(root / f"Split-{split}" / "data.gz"), "GZIP") as writer:
            for record in records:
                writer.write(record)
    return artifact


def _ids(artifact, split: str) -> list[str]:
    files = tf.io.gfile.glob(os.path.join(artifact.uri, f"Split-{split}", "*"))
    ids = []
    for record in read_records(files):
        video = tf.train.Example.FromString(record.numpy())
        if not video.features.feature:
            video = tf.train.SequenceExample.FromString(record.numpy()).context
        else:
            video = video.features
        ids.append(video.feature["id"].bytes_list.value[0].decode())
    return ids


def _run(tmp_path, name, splits, payload_format=example_gen_pb2.FORMAT_TF_EXAMPLE, reference=None, **params):
    examples = _examples(tmp_path / f"{name}_in", splits, payload_format)
    output = standard_artifacts.Examples()
    output.uri = str(tmp_path / f"{name}_out")
    inputs = {"examples": [examples], **({"fold_reference": [reference]} if reference else {})}
    Executor().Do(inputs, {"split_examples": [output]}, {**PARAMS, **params})
    return output


def _videos(prefix: str, count: int, layout: str, labelled: bool = True) -> list[bytes]:
    make = video_example if layout == "video" else frame_example
    return [
        make(builders.video(video_id=f"{prefix}{i}", labels=(i % 10,), frames=2), labelled)
        for i in range(count)
    ]


def test_folds_cover_every_labelled_video_once_and_agree_across_layouts(tmp_path):
    video = _run(
        tmp_path,
        "video",
        {
            "train": _videos("t", 60, "video"),
            "validate": _videos("v", 30, "video"),
            "test": _videos("x", 10, "video", labelled=False),
        },
    )
    names = standard_artifact_utils.decode_split_names(video.split_names)
    assert names == ["fold_0", "fold_1", "fold_2", "holdout", "test"]
    labelled = {split: _ids(video, split) for split in names if split != "test"}
    every = [vid for ids in labelled.values() for vid in ids]
    assert sorted(every) == sorted([f"t{i}" for i in range(60)] + [f"v{i}" for i in range(30)])
    assert _ids(video, "test") == [f"x{i}" for i in range(10)]
    for split, ids in labelled.items():
        assert all(assign_split(vid, 11, 3, 0.2) == split for vid in ids)
    counts = video.get_json_value_custom_property("split_counts")
    assert {split: counts[split] for split in labelled} == {
        split: len(ids) for split, ids in labelled.items()
    }
    assert counts["test"] == 10
    assert set(video.get_json_value_custom_property("label_coverage")) == set(labelled)
    # The fold-map fingerprint, by hand: SHA-256 heads of "<id>|<split>" summed mod 2^64.
    placed = [(vid, split) for split, ids in labelled.items() for vid in ids] + [
        (f"x{i}", "test") for i in range(10)
    ]
    expected = sum(_sha_head(f"{vid}|{split}") for vid, split in placed) % 2**64
    assert video.get_string_custom_property("fold_map_fingerprint") == f"{expected:016x}"

    frame = _run(
        tmp_path,
        "frame",
        {
            "train": _videos("t", 60, "frame"),
            "validate": _videos("v", 30, "frame"),
            "test": _videos("x", 10, "frame", labelled=False),
        },
        example_gen_pb2.FORMAT_TF_SEQUENCE_EXAMPLE,
        reference=video,
        seed=999,
    )
    assert frame.get_string_custom_property("fold_map_fingerprint") == video.get_string_custom_property(
        "fold_map_fingerprint"
    )
    assert frame.get_int_custom_property("seed") == 11  # taken from the reference, not its own params
    for split in labelled:
        assert sorted(_ids(frame, split)) == sorted(labelled[split])
    assert examples_utils.get_payload_format(frame) == example_gen_pb2.FORMAT_TF_SEQUENCE_EXAMPLE


def test_frame_layout_with_other_videos_is_rejected(tmp_path):
    video = _run(
        tmp_path, "video", {"train": _videos("t", 20, "video"), "test": _videos("x", 2, "video", False)}
    )
    with pytest.raises(InputDataError, match="differs from the reference"):
        _run(
            tmp_path,
            "frame",
            {"train": _videos("t", 19, "frame"), "test": _videos("x", 2, "frame", False)},
            example_gen_pb2.FORMAT_TF_SEQUENCE_EXAMPLE,
            reference=video,
        )


def test_duplicate_video_id_across_splits_is_an_error(tmp_path):
    with pytest.raises(
        Exception, match=r"video id 't3' appears 2 times in the input \(splits: train, validate\)"
    ):
        _run(tmp_path, "dup", {"train": _videos("t", 5, "video"), "validate": _videos("t", 4, "video")[3:]})


def test_no_labelled_split_is_an_error(tmp_path):
    with pytest.raises(InputDataError, match="no labelled split"):
        _run(tmp_path, "none", {"test": _videos("x", 3, "video", labelled=False)})


@pytest.mark.parametrize(("seed", "num_folds", "holdout_fraction"), [(1, 5, 0.05), (11, 3, 0.2), (7, 4, 0.0)])
def test_array_assignment_is_the_scalar_rule(seed, num_folds, holdout_fraction):
    ids = [f"id{i}" for i in range(5000)] + ["vidé", "x" * 40, "0"]
    names = [*(f"fold_{k}" for k in range(num_folds)), "holdout"]
    got = assign_splits([i.encode() for i in ids], seed, num_folds, holdout_fraction)
    assert [names[k] for k in got] == [assign_split(i, seed, num_folds, holdout_fraction) for i in ids]
    assert len(set(got.tolist())) == num_folds + (holdout_fraction > 0)


def test_assignment_is_deterministic_balanced_and_seeded():
    ids = [f"id{i}" for i in range(20000)]
    first = [assign_split(i, 1, 5, 0.05) for i in ids]
    assert first == [assign_split(i, 1, 5, 0.05) for i in ids]
    shares = {split: count / len(ids) for split, count in Counter(first).items()}
    assert abs(shares["holdout"] - 0.05) < 0.01
    assert all(abs(shares[f"fold_{k}"] - 0.19) < 0.015 for k in range(5))
    other_seed = [assign_split(i, 2, 5, 0.05) for i in ids]
    assert sum(a != b for a, b in zip(first, other_seed, strict=True)) > 0.7 * len(ids)


def _records_of(artifact, split: str) -> list[bytes]:
    files = sorted(tf.io.gfile.glob(os.path.join(artifact.uri, f"Split-{split}", "*")))
    return [record.numpy() for record in read_records(files)]


def test_each_split_keeps_input_order_and_is_identical_across_runs(tmp_path):
    """Files are split in parallel, yet every output split holds its records in input order (files in name
    order, records in file order), byte for byte the same on every run."""
    train = _videos("t", 40, "video")
    root = tmp_path / "two_files_in"
    examples = _examples(
        root, {"train": train[:25], "validate": _videos("v", 15, "video")}, example_gen_pb2.FORMAT_TF_EXAMPLE
    )
    with tf.io.TFRecordWriter(str(root / "Split-train" / "data2.gz"), "GZIP") as writer:
        for record in train[25:]:
            writer.write(record)
    examples.set_json_value_custom_property("split_counts", {"train": 40, "validate": 15})
    outputs = []
    for run in range(2):
        output = standard_artifacts.Examples()
        output.uri = str(tmp_path / f"run{run}")
        Executor().Do({"examples": [examples]}, {"split_examples": [output]}, PARAMS)
        outputs.append(output)
    inputs = [*train, *_videos("v", 15, "video")]
    for split in ["fold_0", "fold_1", "fold_2", "holdout"]:
        expected = [r for r in inputs if assign_split(video_id_of(r, "video"), 11, 3, 0.2) == split]
        assert _records_of(outputs[0], split) == expected
        assert _records_of(outputs[1], split) == expected


def test_a_lost_input_file_is_an_error(tmp_path):
    examples = _examples(
        tmp_path / "in", {"train": _videos("t", 20, "video")}, example_gen_pb2.FORMAT_TF_EXAMPLE
    )
    examples.set_json_value_custom_property("split_counts", {"train": 21})
    output = standard_artifacts.Examples()
    output.uri = str(tmp_path / "out")
    with pytest.raises(InputDataError, match="split train holds 20 videos, its producer recorded 21"):
        Executor().Do({"examples": [examples]}, {"split_examples": [output]}, PARAMS)


def test_examples_without_any_file_are_an_error(tmp_path):
    examples = _examples(
        tmp_path / "in", {"train": _videos("t", 20, "video")}, example_gen_pb2.FORMAT_TF_EXAMPLE
    )
    for path in (tmp_path / "in" / "Split-train").iterdir():
        path.unlink()
    output = standard_artifacts.Examples()
    output.uri = str(tmp_path / "out")
    with pytest.raises(InputDataError, match=r"in: no files in any of its splits \['train'\]"):
        Executor().Do({"examples": [examples]}, {"split_examples": [output]}, PARAMS)


def test_duplicate_video_id_within_one_file_is_an_error(tmp_path):
    videos = _videos("t", 6, "video")
    with pytest.raises(
        Exception, match=r"video id 't2' appears 3 times in the input \(splits: train, train, train\)"
    ):
        _run(tmp_path, "dup", {"train": [*videos, videos[2], videos[2]]})


@pytest.mark.parametrize("layout", ["video", "frame"])
def test_split_statistics_count_the_labels_of_the_videos_each_split_got(tmp_path, layout):
    """300 videos in one file (two read batches) with 0-3 labels each: the summary's videos, labels and
    classes with positives, and label_coverage, per split, recounted from the records written there."""
    make = video_example if layout == "video" else frame_example
    label_sets = [tuple(range(i % 4)) if i % 7 else (i % 10,) for i in range(300)]
    records = [
        make(builders.video(video_id=f"t{i}", labels=labels, frames=1), True)
        for i, labels in enumerate(label_sets)
    ]
    labels_of = {f"t{i}": labels for i, labels in enumerate(label_sets)}
    payload = (
        example_gen_pb2.FORMAT_TF_EXAMPLE if layout == "video" else example_gen_pb2.FORMAT_TF_SEQUENCE_EXAMPLE
    )
    output = _run(tmp_path, layout, {"train": records}, payload)
    summary = json.loads((tmp_path / f"{layout}_out" / "fold_summary.json").read_text())["splits"]
    coverage = output.get_json_value_custom_property("label_coverage")
    for split in ["fold_0", "fold_1", "fold_2", "holdout"]:
        got = [labels_of[video_id] for video_id in _ids(output, split)]
        classes = {label for labels in got for label in labels}
        assert summary[split] == {
            "videos": len(got),
            "labels": sum(map(len, got)),
            "classes_with_positives": len(classes),
        }
        assert coverage[split] == len(classes) / PARAMS["num_classes"]


def _fold_split(examples, out) -> standard_artifacts.Examples:
    output = standard_artifacts.Examples()
    output.uri = str(out)
    Executor().Do({"examples": [examples]}, {"split_examples": [output]}, PARAMS)
    return output


def _split_files(artifact) -> dict[str, bytes]:
    root = Path(artifact.uri)
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.glob("Split-*/*"))}


@pytest.mark.parametrize("layout", ["video", "frame"])
def test_dealing_by_the_record_index_writes_what_dealing_by_parsing_does(tmp_path, layout):
    """Examples from the ExampleGen carry a record index; FoldSplit deals by it without parsing, and writes
    the same files, byte for byte, with the same properties, as when it parses the records (no index)."""
    make = video_example if layout == "video" else frame_example
    data = tmp_path / "data"
    data.mkdir()
    for name, count, labelled in [("train0000", 300, True), ("train0001", 7, True), ("test0000", 20, False)]:
        videos = [
            builders.video(video_id=f"{name}é{i}", labels=tuple(range(i % 3 + 1)), frames=2)
            for i in range(count)
        ]
        builders.write_tfrecord(data / f"{name}.tfrecord", [make(video, labelled) for video in videos])
    payload = (
        example_gen_pb2.FORMAT_TF_EXAMPLE if layout == "video" else example_gen_pb2.FORMAT_TF_SEQUENCE_EXAMPLE
    )
    examples = example_gen_test._import(
        data, tmp_path / "examples", {"train": "train*", "test": "test*"}, payload, "test"
    )[1]
    indexed = _fold_split(examples, tmp_path / "indexed")
    shutil.copytree(examples.uri, tmp_path / "plain")
    shutil.rmtree(tmp_path / "plain" / INDEX_DIR)
    examples.uri = str(tmp_path / "plain")
    parsed = _fold_split(examples, tmp_path / "parsed")

    assert _split_files(indexed) == _split_files(parsed)
    assert len(_split_files(indexed)) == 2 * 4 + 1  # each train file feeds 3 folds and the holdout
    for name in ["split_counts", "label_coverage"]:
        assert indexed.get_json_value_custom_property(name) == parsed.get_json_value_custom_property(name)
    assert indexed.get_string_custom_property("fold_map_fingerprint") == parsed.get_string_custom_property(
        "fold_map_fingerprint"
    )
    assert sum(indexed.get_json_value_custom_property("split_counts").values()) == 327


def test_a_record_index_that_does_not_match_its_file_fails_naming_the_file(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for index, count in enumerate([30, 31]):
        builders.write_tfrecord(data / f"train{index:04d}.tfrecord", _videos(f"t{index}_", count, "video"))
    examples = example_gen_test._import(
        data, tmp_path / "examples", {"train": "train*"}, example_gen_pb2.FORMAT_TF_EXAMPLE, ""
    )[1]
    first, second = sorted((tmp_path / "examples" / INDEX_DIR / "Split-train").iterdir())
    shutil.copy(second, first)  # the first file's index now gives 31 records
    with pytest.raises(
        Exception, match=r"data-00000-of-00002.tfrecord: records 0-30 do not have the lengths"
    ):
        _fold_split(examples, tmp_path / "out")


def test_an_unlabelled_file_is_copied_whole_unless_its_index_does_not_match(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    builders.write_tfrecord(data / "train0000.tfrecord", _videos("t", 30, "video"))
    for index, count in enumerate([5, 6]):
        builders.write_tfrecord(
            data / f"test{index:04d}.tfrecord", _videos(f"x{index}_", count, "video", False)
        )
    examples = example_gen_test._import(
        data,
        tmp_path / "examples",
        {"train": "train*", "test": "test*"},
        example_gen_pb2.FORMAT_TF_EXAMPLE,
        "test",
    )[1]
    output = _fold_split(examples, tmp_path / "out")
    for index in range(2):
        copied = tmp_path / "out" / "Split-test" / f"test-{index:05d}.tfrecord"
        assert copied.read_bytes() == (data / f"test{index:04d}.tfrecord").read_bytes()
    assert output.get_json_value_custom_property("split_counts")["test"] == 11

    first, second = sorted((tmp_path / "examples" / INDEX_DIR / "Split-test").iterdir())
    shutil.copy(second, first)  # the first file's index now gives 6 records
    with pytest.raises(
        Exception, match=r"data-00000-of-00002.tfrecord: holds \d+ bytes, not the \d+ its record"
    ):
        _fold_split(examples, tmp_path / "again")
