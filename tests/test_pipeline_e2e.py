"""End-to-end runs of the pipeline on tiny data, asserted through ML Metadata."""

from __future__ import annotations

import os
import shutil

import pytest
import tensorflow as tf
import yaml

from pipeline import cli
from pipeline.metadata import latest_executions, node_executions, open_store, property_value
from pipeline.runner import run_pipeline
from tests import builders
from tests.conftest import tiny_pipeline_config

NODES = {
    "VideoExampleGen",
    "FrameExampleGen",
    "StatisticsGen",
    "SchemaGen",
    "VideoFoldSplit",
    "FrameFoldSplit",
}
pytestmark = pytest.mark.slow


def _split_ids(artifact, split: str) -> list[str]:
    files = tf.io.gfile.glob(os.path.join(artifact.uri, f"Split-{split}", "*"))
    ids = []
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        example = tf.train.Example.FromString(record.numpy())
        feature = (
            example.features.feature or tf.train.SequenceExample.FromString(record.numpy()).context.feature
        )
        ids.append(feature["id"].bytes_list.value[0].decode())
    return sorted(ids)


def test_pipeline_run_publishes_fold_splits_and_reruns_from_cache(tiny_data, tmp_path):
    config = tiny_pipeline_config(tiny_data, tmp_path / "home")
    run_pipeline(config)
    store = open_store(config.metadata_path)
    executions = latest_executions(store, config.pipeline_name)
    assert set(executions) == NODES
    assert {e.state for e in executions.values()} == {"COMPLETE"}

    video, frame = (executions[n].outputs["split_examples"][0] for n in ("VideoFoldSplit", "FrameFoldSplit"))
    splits = ["fold_0", "fold_1", "fold_2", "fold_3", "fold_4", "holdout"]
    video_ids = {split: _split_ids(video, split) for split in [*splits, "test"]}
    frame_ids = {split: _split_ids(frame, split) for split in [*splits, "test"]}
    assert video_ids == frame_ids  # frame-level shares the fold map
    labelled = [vid for split in splits for vid in video_ids[split]]
    assert len(labelled) == len(set(labelled)) == 204  # train + validate of the 240 tiny videos, once each
    assert len(video_ids["test"]) == 36
    assert all(video_ids[split] for split in splits)
    assert video.custom_properties["fold_map_fingerprint"] == frame.custom_properties["fold_map_fingerprint"]
    counts = property_value(video, "split_counts")
    assert counts == {split: len(ids) for split, ids in video_ids.items()}
    coverage = property_value(video, "label_coverage")
    assert set(coverage) == set(splits) and all(0 < share <= 1 for share in coverage.values())
    assert property_value(frame, "seed") == 7 and property_value(frame, "num_folds") == 5

    run_pipeline(config)
    reruns = node_executions(open_store(config.metadata_path), config.pipeline_name)[len(NODES) :]
    assert {e.node_id for e in reruns} == NODES
    assert {e.state for e in reruns} == {"CACHED"}


def _write_config(tmp_path, data_dir, frame: bool = False) -> str:
    config = {
        "pipeline_name": "yt8m-bad",
        "home": str(tmp_path / "home"),
        "data": {
            "video_dir": str(data_dir / "video"),
            "frame_dir": str(data_dir / "frame") if frame else None,
            "num_classes": 30,
        },
        "folds": {"num_folds": 3, "holdout_fraction": 0.1, "seed": 1},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def _failed_node(tmp_path, node_id: str):
    executions = node_executions(open_store(str(tmp_path / "home" / "metadata.sqlite")), "yt8m-bad")
    failed = [e for e in executions if e.node_id == node_id]
    assert [e.state for e in failed] == ["FAILED"]
    assert failed[0].outputs == {}  # nothing published
    return executions


def test_corrupted_tfrecord_fails_ingestion_naming_the_file(tiny_data, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(tiny_data / "video", data / "video")
    victim = data / "video" / "validate0000.tfrecord"
    victim.write_bytes(victim.read_bytes()[:-50])
    assert cli.main(["run", "--config", _write_config(tmp_path, data)]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert (
        error.startswith("yt8m: error: ")
        and "validate0000.tfrecord: corrupted or truncated TFRecord" in error
    )
    executions = _failed_node(tmp_path, "VideoExampleGen")
    assert {e.node_id for e in executions} == {"VideoExampleGen"}


def test_duplicate_video_id_fails_fold_split_with_local_runner(tiny_data, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(tiny_data / "video", data / "video")
    first_train = next(iter(tf.data.TFRecordDataset(str(data / "video" / "train0000.tfrecord")))).numpy()
    builders.write_tfrecord(data / "video" / "validate0009.tfrecord", [first_train])
    duplicate = tf.train.Example.FromString(first_train).features.feature["id"].bytes_list.value[0].decode()
    assert cli.main(["run", "--config", _write_config(tmp_path, data), "--runner", "local"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"video id '{duplicate}' appears 2 times in the input (splits: train, validate)" in error
    executions = _failed_node(tmp_path, "VideoFoldSplit")
    assert {e.node_id: e.state for e in executions}["VideoExampleGen"] == "COMPLETE"
