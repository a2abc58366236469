"""L1Assemble executor on hand-made fold splits and fold predictions: coverage, provenance, averaging."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
import tensorflow as tf
from tfx.components.util import examples_utils
from tfx.proto import example_gen_pb2
from tfx.types import standard_artifact_utils, standard_artifacts

from components.artifacts import Predictions
from components.l1_assemble.executor import AssemblyError, Executor
from pipeline.synth import frame_example, video_example
from tests import builders
from trainer.predictions import AVERAGED, decode_prediction, encode_prediction
from trainer.readers import read_records
from trainer.records import InputDataError

FOLD_VIDEOS = {"fold_0": ["a", "b"], "fold_1": ["c", "d", "e"], "holdout": ["h"], "test": ["t1", "t2"]}


def _write(directory, records: list[bytes]) -> None:
    os.makedirs(directory, exist_ok=True)
    with tf.io.TFRecordWriter(str(directory / f"part{len(os.listdir(directory))}.gz"), "GZIP") as writer:
        for record in records:
            writer.write(record)


def _examples(root, level: str = "video") -> standard_artifacts.Examples:
    """The fold split, one file per video, of video-level Examples or frame-level SequenceExamples."""
    example, payload_format = {
        "video": (video_example, example_gen_pb2.FORMAT_TF_EXAMPLE),
        "frame": (frame_example, example_gen_pb2.FORMAT_TF_SEQUENCE_EXAMPLE),
    }[level]
    artifact = standard_artifacts.Examples()
    artifact.uri = str(root)
    artifact.split_names = standard_artifact_utils.encode_split_names(list(FOLD_VIDEOS))
    artifact.set_json_value_custom_property("split_counts", {s: len(ids) for s, ids in FOLD_VIDEOS.items()})
    examples_utils.set_payload_format(artifact, payload_format)
    for split, ids in FOLD_VIDEOS.items():
        for video_id in ids:  # one file per video: part0.gz, part1.gz, ...
            _write(root / f"Split-{split}", [example(builders.video(video_id=video_id), split != "test")])
    return artifact


def _scores(video_id: str, fold: int) -> np.ndarray:
    return np.array([fold, len(video_id), 0.5], dtype=np.float32) / 4


def _fold_predictions(root, fold: int, oof_ids=None) -> Predictions:
    artifact = Predictions()
    artifact.uri = str(root / f"pred{fold}")
    artifact.set_int_custom_property("fold", fold)
    artifact.set_int_custom_property("num_classes", 3)
    artifact.set_string_custom_property("model_uri", f"/models/{fold}")
    artifact.set_json_value_custom_property("train_splits", [f"fold_{1 - fold}"])
    oof_ids = FOLD_VIDEOS[f"fold_{fold}"] if oof_ids is None else oof_ids
    artifact.split_names = standard_artifact_utils.encode_split_names([f"fold_{fold}", "holdout", "test"])
    for split, ids in (
        (f"fold_{fold}", oof_ids),
        ("holdout", FOLD_VIDEOS["holdout"]),
        ("test", FOLD_VIDEOS["test"]),
    ):
        _write(
            root / f"pred{fold}" / f"Split-{split}",
            [encode_prediction(i, _scores(i, fold), fold) for i in ids],
        )
    return artifact


ONE_JOIN, TINY_SHARDS = 0.0, 0.005  # MB: 0 -> one join; 5 KB -> the 15 KB of test inputs in 3 shards


def _assemble(
    tmp_path, predictions: list[Predictions], shard_mb: float = ONE_JOIN, examples=None
) -> Predictions:
    output = Predictions()
    output.uri = str(tmp_path / "out")
    inputs = {"examples": [examples or _examples(tmp_path / "examples")]}
    inputs.update({f"predictions_{k}": [p] for k, p in enumerate(predictions)})
    properties = {"num_folds": len(predictions), "config_name": "m", "shard_mb": shard_mb}
    Executor().Do(inputs, {"predictions": [output]}, properties)
    return output


def _read(artifact, split: str) -> dict[str, tuple[int, np.ndarray]]:
    files = tf.io.gfile.glob(os.path.join(artifact.uri, f"Split-{split}", "*"))
    decoded = [decode_prediction(r.numpy()) for r in read_records(files)]
    return {video_id: (fold, scores) for video_id, fold, scores in decoded}


@pytest.mark.parametrize("level", ["video", "frame"])
@pytest.mark.parametrize("shard_mb", [ONE_JOIN, TINY_SHARDS])
def test_assembles_oof_once_per_video_and_averages_holdout_and_test(tmp_path, shard_mb, level):
    predictions = [_fold_predictions(tmp_path, 0), _fold_predictions(tmp_path, 1)]
    output = _assemble(tmp_path, predictions, shard_mb, _examples(tmp_path / "examples", level))
    assert output.get_string_custom_property("level") == level
    assert (output.get_int_custom_property("shards") > 1) == (shard_mb == TINY_SHARDS)
    assert sorted(os.listdir(output.uri)) == ["Split-holdout", "Split-oof", "Split-test"]  # nothing temporary
    oof = _read(output, "oof")
    assert sorted(oof) == ["a", "b", "c", "d", "e"]
    assert {video: fold for video, (fold, _) in oof.items()} == {"a": 0, "b": 0, "c": 1, "d": 1, "e": 1}
    np.testing.assert_allclose(oof["c"][1], _scores("c", 1), atol=1e-3)
    for split in ("holdout", "test"):
        averaged = _read(output, split)
        assert sorted(averaged) == sorted(FOLD_VIDEOS[split])
        for video, (fold, scores) in averaged.items():
            assert fold == AVERAGED
            np.testing.assert_allclose(scores, (_scores(video, 0) + _scores(video, 1)) / 2, atol=1e-3)
    assert output.get_json_value_custom_property("fold_models")["1"]["train_splits"] == ["fold_0"]
    assert standard_artifact_utils.decode_split_names(output.split_names) == ["oof", "holdout", "test"]
    assert output.get_json_value_custom_property("split_counts") == {"oof": 5, "holdout": 1, "test": 2}


@pytest.mark.parametrize("shard_mb", [ONE_JOIN, TINY_SHARDS])
def test_examples_that_lost_a_file_fail_naming_the_artifact_split_and_counts(tmp_path, shard_mb):
    # fold_1 lost the file of video 'e', which its model did not predict either (it predicted what was left):
    # the join alone would assemble 4 of the 5 out-of-fold videos without complaint.
    examples = _examples(tmp_path / "examples")
    os.remove(tmp_path / "examples" / "Split-fold_1" / "part2.gz")
    predictions = [_fold_predictions(tmp_path, 0), _fold_predictions(tmp_path, 1, ["c", "d"])]
    message = f"{examples.uri}: split fold_1 holds 2 videos, its producer recorded 3: files were lost"
    with pytest.raises(InputDataError, match=re.escape(message)):
        _assemble(tmp_path, predictions, shard_mb, examples)


@pytest.mark.parametrize(
    ("oof_ids", "message"),
    [
        (["c", "d"], "out-of-fold prediction of video 'e' is missing"),
        (["c", "d", "e", "e"], r"out-of-fold prediction of video 'e' is duplicated \(2 predictions\)"),
        (["c", "d", "e", "zz"], "prediction for video 'zz' which is in no fold split"),
        (["c", "d", "e", "a"], r"out-of-fold prediction of video 'a' is duplicated"),
    ],
)
@pytest.mark.parametrize("shard_mb", [ONE_JOIN, TINY_SHARDS])
def test_missing_duplicated_or_unknown_ids_fail(tmp_path, oof_ids, message, shard_mb):
    predictions = [_fold_predictions(tmp_path, 0), _fold_predictions(tmp_path, 1, oof_ids)]
    with pytest.raises(AssemblyError, match=message):
        _assemble(tmp_path, predictions, shard_mb)


def test_prediction_from_the_wrong_fold_model_fails(tmp_path):
    wrong = _fold_predictions(tmp_path, 1)
    os.remove(tmp_path / "pred1" / "Split-fold_1" / "part0.gz")
    _write(
        tmp_path / "pred1" / "Split-fold_1", [encode_prediction(i, _scores(i, 0), 0) for i in ["c", "d", "e"]]
    )
    with pytest.raises(AssemblyError, match="video 'c' of fold_1 was predicted by the model of fold 0"):
        _assemble(tmp_path, [_fold_predictions(tmp_path, 0), wrong])
