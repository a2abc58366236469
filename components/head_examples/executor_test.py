"""HeadExamples executor: tower outputs joined by id in tower order; only own-fold (OOF) predictions pass."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tensorflow as tf
from tfx.types import standard_artifacts

from components.artifacts import Predictions
from components.head_examples.executor import Executor, HeadExamplesError, towers_key
from tests import builders
from trainer.predictions import AVERAGED, encode_prediction
from trainer.records import InputDataError

SPLITS = {"fold_0": ["a", "b"], "fold_1": ["c"], "holdout": ["h"]}
FOLD_OF = {"a": 0, "b": 0, "c": 1, "h": AVERAGED}
ONE_JOIN, TINY_SHARDS = 0.0, 0.008  # MB: 0 -> one join; 8 KB -> the ~19 KB of test inputs in 3 shards


def _scores(tower: int, video_id: str) -> np.ndarray:
    return np.array([tower, ord(video_id) / 256, 0.5], np.float32)


def _tower(root, tower: int, fold_of: dict[str, int], lost=()) -> Predictions:
    def records(ids):
        return [encode_prediction(v, _scores(tower, v), fold_of[v]) for v in ids if v not in lost]

    predictions = builders.split_artifact(
        Predictions(), root, {"oof": records(["a", "b", "c"]), "holdout": records(["h"])}
    )
    predictions.set_string_custom_property("config_name", f"tower_{tower}")
    predictions.set_json_value_custom_property("fold_models", {"0": {"train_splits": ["fold_1"]}})
    return predictions


def _run(tmp_path, fold_of=FOLD_OF, shard_mb: float = ONE_JOIN, lost=()) -> standard_artifacts.Examples:
    """HeadExamples on the examples and two towers' predictions of them, all but the `lost` videos'."""
    examples = builders.per_video_examples(tmp_path / "examples", SPLITS, lost)
    towers = {towers_key(t): [_tower(tmp_path / f"tower{t}", t, fold_of, lost)] for t in range(2)}
    output = standard_artifacts.Examples()
    output.uri = str(tmp_path / "out")
    properties = {"num_towers": 2, "shard_mb": shard_mb}
    Executor().Do({"examples": [examples], **towers}, {"head_examples": [output]}, properties)
    return output


@pytest.mark.parametrize("shard_mb", [ONE_JOIN, TINY_SHARDS])
def test_tower_outputs_are_concatenated_in_tower_order_per_video(tmp_path, shard_mb):
    output = _run(tmp_path, shard_mb=shard_mb)
    assert (output.get_int_custom_property("shards") > 1) == (shard_mb == TINY_SHARDS)
    assert output.get_json_value_custom_property("tower_names") == ["tower_0", "tower_1"]
    assert output.get_json_value_custom_property("tower_fold_models")["tower_1"]["0"]["train_splits"] == [
        "fold_1"
    ]
    for split, ids in SPLITS.items():
        records = [tf.train.Example.FromString(r) for r in builders.read_split(output.uri, split)]
        features = {
            r.features.feature["id"].bytes_list.value[0].decode(): r.features.feature for r in records
        }
        assert sorted(features) == ids
        for video_id, feature in features.items():
            expected = np.concatenate([_scores(0, video_id), _scores(1, video_id)])
            np.testing.assert_allclose(feature["tower_outputs"].float_list.value, expected, atol=1e-3)
            assert len(feature["mean_rgb"].float_list.value) == 1024
    assert output.get_json_value_custom_property("split_counts") == {"fold_0": 2, "fold_1": 1, "holdout": 1}


@pytest.mark.parametrize("shard_mb", [ONE_JOIN, TINY_SHARDS])
def test_examples_that_lost_a_file_fail_naming_the_artifact_split_and_counts(tmp_path, shard_mb):
    # Video 'b' lost its file, and the towers (run on what was left) did not predict it: the join alone
    # would write 1 of the 2 fold_0 videos without complaint.
    message = (
        f"{tmp_path / 'examples'}: split fold_0 holds 1 videos, its producer recorded 2: files were lost"
    )
    with pytest.raises(InputDataError, match=re.escape(message)):
        _run(tmp_path, shard_mb=shard_mb, lost=["b"])


@pytest.mark.parametrize("shard_mb", [ONE_JOIN, TINY_SHARDS])
def test_a_prediction_by_a_model_that_saw_the_video_fails(tmp_path, shard_mb):
    with pytest.raises(HeadExamplesError, match="video 'c' of fold_1 was predicted by the model of fold 0"):
        _run(tmp_path, {**FOLD_OF, "c": 0}, shard_mb)


def test_a_holdout_prediction_of_one_fold_model_fails(tmp_path):
    with pytest.raises(HeadExamplesError, match="video 'h' of holdout was predicted by the model of fold 1"):
        _run(tmp_path, {**FOLD_OF, "h": 1})
