"""components.sharded_join on hand-made TFRecord inputs: the partition pass, the grouping, the counts, and a
Beam graph whose size does not grow with the number of inputs."""

from __future__ import annotations

import os

import apache_beam as beam
import pytest
import tensorflow as tf
from apache_beam.testing.util import assert_that, equal_to
from tfx.types import standard_artifact_utils, standard_artifacts

from components import sharded_join
from components.sharded_join import GroupByVideo, JoinInput, records_of, run_sharded, shard_of
from components.splits import tfrecord_records, write_split


def _artifact(root, files: dict[str, list[list[str]]], name: str) -> standard_artifacts.Examples:
    """An artifact whose split files hold records "<video id>|<name>" (the id is the text before '|')."""
    artifact = standard_artifacts.Examples()
    artifact.uri = str(root / name)
    artifact.split_names = standard_artifact_utils.encode_split_names(list(files))
    counts = {}
    for split, split_files in files.items():
        os.makedirs(root / name / f"Split-{split}")
        for index, ids in enumerate(split_files):
            with tf.io.TFRecordWriter(
                str(root / name / f"Split-{split}" / f"part-{index}.tfrecord")
            ) as writer:
                for video_id in ids:
                    writer.write(f"{video_id}|{name}".encode())
        counts[split] = sum(len(ids) for ids in split_files)
    artifact.set_json_value_custom_property("split_counts", counts)
    return artifact


def _video_id(record: bytes) -> str:
    return record.decode().split("|")[0]


VIDEOS = [f"v{i:02d}" for i in range(12)]


def _inputs(root, extra_models: int = 0) -> list[JoinInput]:
    """A 'left' input in two files and split 'a', 'right' ones (one per model) in split 'b', and a copied
    input that is in no join."""
    left = _artifact(root, {"a": [VIDEOS[:7], VIDEOS[7:]]}, "left")
    copied = _artifact(root, {"c": [["c0", "c1", "c2"]]}, "copied")
    inputs = [JoinInput("left", left, "a", _video_id, role="left", counted=True)]
    for model in range(1 + extra_models):
        right = _artifact(root, {"b": [VIDEOS[::-1]]}, f"right{model}")
        inputs.append(JoinInput(f"right{model}", right, "b", _video_id, role=f"right{model}"))
    return [*inputs, JoinInput("copied", copied, "c", _video_id, counted=True)]


def _build(inputs: list[JoinInput], output_root) -> sharded_join.JoinBuilder:
    """A join writing "<video id>:<roles and their records>" per video, and the copied input unchanged."""
    output = standard_artifacts.Examples()
    output.uri = str(output_root)

    def describe(item) -> bytes:
        _, video_id, grouped = item
        parts = [
            f"{role}={','.join(sorted(r.decode() for _, r in grouped[role]))}" for role in sorted(grouped)
        ]
        return f"{video_id}:{';'.join(parts)}".encode()

    def build(pipeline, tagged, suffix):
        joined = tagged | "Join" >> GroupByVideo(inputs[:-1]) | "Describe" >> beam.Map(describe)
        copied = records_of(tagged, "copied")
        _ = joined | "WriteJoined" >> write_split(output, "joined", f"part{suffix}")
        _ = copied | "WriteCopied" >> write_split(output, "copied", f"part{suffix}")
        return {"joined": joined, "copied": copied}

    return build


def _output(root, split: str) -> list[str]:
    return sorted(
        record.decode()
        for path in tf.io.gfile.glob(str(root / f"Split-{split}" / "*"))
        for record in tfrecord_records(path)
    )


@pytest.mark.parametrize("shards", [1, 3])
def test_every_video_is_grouped_by_role_once_whatever_the_shards(tmp_path, shards):
    inputs = _inputs(tmp_path, extra_models=1)
    written = run_sharded(
        beam.Pipeline, inputs, shards, str(tmp_path / "scratch"), _build(inputs, tmp_path / "out")
    )
    expected = [f"{v}:left={v}|left;right0={v}|right0;right1={v}|right1" for v in VIDEOS]
    assert _output(tmp_path / "out", "joined") == expected
    assert _output(tmp_path / "out", "copied") == ["c0|copied", "c1|copied", "c2|copied"]
    assert written == {"joined": 12, "copied": 3}
    assert not os.path.exists(tmp_path / "scratch")  # parts and counts removed


def test_a_role_without_records_of_a_video_is_empty(tmp_path):
    inputs = _inputs(tmp_path)
    with beam.Pipeline() as pipeline:
        grouped = (
            pipeline
            | beam.Create([("left", b"v1|left"), ("right0", b"v2|right0"), ("copied", b"c0|copied")])
            | GroupByVideo(inputs[:-1])
        )
        assert_that(
            grouped,
            equal_to(
                [
                    ("", "v1", {"left": [("a", b"v1|left")], "right0": []}),
                    ("", "v2", {"left": [], "right0": [("b", b"v2|right0")]}),
                ]
            ),
        )


def test_partition_copies_each_file_once_into_the_shard_of_each_video(tmp_path):
    inputs = _inputs(tmp_path)
    counts = tmp_path / "counts"
    sharded_join._partition(beam.Pipeline, inputs, 3, str(tmp_path / "parts"), str(counts))
    # One part per (input file, shard it feeds), named by the file's index among all input files.
    left_parts = {
        (shard, name)
        for shard in range(3)
        for name in os.listdir(tmp_path / "parts" / f"shard-{shard}" / "left")
    }
    assert {name for _, name in left_parts} == {"part-00000.tfrecord", "part-00001.tfrecord"}
    for shard in range(3):
        for tag, ids in (("left", VIDEOS), ("right0", VIDEOS[::-1]), ("copied", ["c0", "c1", "c2"])):
            directory = tmp_path / "parts" / f"shard-{shard}" / tag
            paths = sorted(tf.io.gfile.glob(str(directory / "*")))
            got = [_video_id(r) for path in paths for r in tfrecord_records(path)]
            assert got == [v for v in ids if shard_of(v, 3) == shard]  # input order kept within a file
    assert sharded_join.collect_counts(str(counts)) == {"left": 12, "right0": 12, "copied": 3}


def test_a_counted_input_that_lost_records_fails_before_any_join(tmp_path):
    inputs = _inputs(tmp_path)
    os.remove(tmp_path / "left" / "Split-a" / "part-1.tfrecord")
    with pytest.raises(ValueError, match=r"split a holds 7 videos, its producer recorded 12"):
        run_sharded(beam.Pipeline, inputs, 3, str(tmp_path / "scratch"), _build(inputs, tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out")


def _transforms(tmp_path, extra_models: int, shards: int) -> list[int]:
    """Transforms of every pipeline `run_sharded` builds for the inputs."""
    root = tmp_path / f"{extra_models}_{shards}"
    inputs = _inputs(root, extra_models)
    pipelines = []

    def make_pipeline() -> beam.Pipeline:
        pipelines.append(beam.Pipeline())
        return pipelines[-1]

    run_sharded(make_pipeline, inputs, shards, str(root / "scratch"), _build(inputs, root / "out"))
    return [len(p.to_runner_api().components.transforms) for p in pipelines]


@pytest.mark.parametrize("shards", [1, 2])
def test_the_beam_graph_does_not_grow_with_the_number_of_inputs(tmp_path, shards):
    assert _transforms(tmp_path, 1, shards) == _transforms(tmp_path, 9, shards)
