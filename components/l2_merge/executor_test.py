"""L2Merge on hand-made fold splits and assembled predictions: join by id, coverage and shape errors."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.example import example_pb2
from tfx.components.util import examples_utils
from tfx.proto import example_gen_pb2
from tfx.types import channel, standard_artifact_utils, standard_artifacts

from components.artifacts import MergedPredictions, Predictions
from components.l2_merge.component import MAX_MODELS, L2Merge
from components.l2_merge.executor import Executor, MergeError, decode_merged, encode_merged, merge_video
from pipeline.synth import video_example
from tests import builders
from trainer.predictions import AVERAGED, encode_prediction
from trainer.readers import read_records
from trainer.records import InputDataError

NUM_CLASSES = 3
LABELS = {"a": (0,), "b": (1, 2), "c": (2,), "h": (0, 2), "t": ()}
SPLITS = {"fold_0": ["a", "b"], "fold_1": ["c"], "holdout": ["h"], "test": ["t"]}
OOF = [("a", 0), ("b", 0), ("c", 1)]


def _write(directory, records: list[bytes]) -> None:
    os.makedirs(directory, exist_ok=True)
    with tf.io.TFRecordWriter(str(directory / f"part{len(os.listdir(directory))}.gz"), "GZIP") as writer:
        for record in records:
            writer.write(record)


def _examples(root, counted: bool = True) -> standard_artifacts.Examples:
    artifact = standard_artifacts.Examples()
    artifact.uri = str(root)
    artifact.split_names = standard_artifact_utils.encode_split_names(list(SPLITS))
    artifact.set_int_custom_property("num_folds", 2)
    if counted:
        artifact.set_json_value_custom_property("split_counts", {s: len(ids) for s, ids in SPLITS.items()})
    examples_utils.set_payload_format(artifact, example_gen_pb2.FORMAT_TF_EXAMPLE)
    for split, ids in SPLITS.items():
        for video_id in ids:  # one file per video: part0.gz, part1.gz, ...
            video = builders.video(video_id=video_id, labels=LABELS[video_id])
            _write(root / f"Split-{split}", [video_example(video, split != "test")])
    return artifact


def _scores(model: int, video_id: str) -> np.ndarray:
    """Distinct, float32-exact scores for every (model, video)."""
    return np.array([model / 4, (ord(video_id[0]) % 16) / 16, 0.5], np.float32)


def _model(
    root, model: int, name: str | None = None, num_classes: int = NUM_CLASSES, **splits
) -> Predictions:
    """Assembled predictions of `model`: per split, files of (video id, fold[, scores]) entries."""
    artifact = Predictions()
    artifact.uri = str(root / f"model{model}")
    artifact.set_string_custom_property("config_name", name or f"m{model}")
    artifact.set_int_custom_property("num_classes", num_classes)
    artifact.split_names = standard_artifact_utils.encode_split_names(["oof", "holdout", "test"])
    files = {"oof": [OOF], "holdout": [[("h", AVERAGED)]], "test": [[("t", AVERAGED)]], **splits}
    for split, split_files in files.items():
        os.makedirs(root / f"model{model}" / f"Split-{split}")
        for entries in split_files:
            _write(
                root / f"model{model}" / f"Split-{split}",
                [
                    encode_prediction(v, rest[0] if rest else _scores(model, v), fold)
                    for v, fold, *rest in entries
                ],
            )
    return artifact


def _merge(tmp_path, models: list[Predictions], shard_mb: float = 0, examples=None) -> MergedPredictions:
    output = MergedPredictions()
    output.uri = str(tmp_path / "merged")
    inputs = {"examples": [examples or _examples(tmp_path / "examples")]}
    inputs.update({f"predictions_{m}": [p] for m, p in enumerate(models)})
    Executor().Do(inputs, {"merged": [output]}, {"num_models": len(models), "shard_mb": shard_mb})
    return output


def _read(artifact: MergedPredictions, split: str, num_classes: int = NUM_CLASSES) -> dict:
    files = tf.io.gfile.glob(os.path.join(artifact.uri, f"Split-{split}", "*"))
    records = [r.numpy() for r in read_records(files)]
    return {r.video_id: r for r in (decode_merged(record, num_classes) for record in records)}


def test_joins_by_video_id_not_by_position(tmp_path):
    # Model 1 lists its videos in another order and over two files: a positional join would mix videos up.
    reordered = _model(tmp_path, 1, oof=[[("c", 1)], [("b", 0), ("a", 0)]])
    output = _merge(tmp_path, [_model(tmp_path, 0), reordered])
    oof = _read(output, "oof")
    assert sorted(oof) == ["a", "b", "c"]
    for video_id, record in oof.items():
        np.testing.assert_array_equal(record.scores, [_scores(0, video_id), _scores(1, video_id)])
    assert {v: (r.fold, r.labels) for v, r in oof.items()} == {
        "a": (0, (0,)),
        "b": (0, (1, 2)),
        "c": (1, (2,)),
    }
    holdout, test = _read(output, "holdout")["h"], _read(output, "test")["t"]
    assert (holdout.fold, holdout.labels, test.fold, test.labels) == (AVERAGED, (0, 2), AVERAGED, ())
    np.testing.assert_array_equal(test.scores, [_scores(0, "t"), _scores(1, "t")])
    assert output.get_json_value_custom_property("model_names") == ["m0", "m1"]
    assert output.get_int_custom_property("num_classes") == NUM_CLASSES
    assert output.get_json_value_custom_property("split_counts") == {"oof": 3, "holdout": 1, "test": 1}
    assert standard_artifact_utils.decode_split_names(output.split_names) == ["oof", "holdout", "test"]


def test_sharded_join_writes_the_same_records_as_one_join(tmp_path):
    wide = 150_000  # 600 KB of float32 scores per prediction: 1 MB shards split 2 models x 5 videos
    rng = np.random.default_rng(0)
    scores = {(m, v): rng.random(wide, dtype=np.float32) for m in range(2) for v in LABELS}

    def models(root) -> list[Predictions]:
        return [
            _model(
                root,
                m,
                num_classes=wide,
                oof=[[(v, fold, scores[m, v]) for v, fold in OOF]],
                holdout=[[("h", AVERAGED, scores[m, "h"])]],
                test=[[("t", AVERAGED, scores[m, "t"])]],
            )
            for m in range(2)
        ]

    whole = _merge(tmp_path / "whole", models(tmp_path / "whole"), shard_mb=0)
    sharded = _merge(tmp_path / "sharded", models(tmp_path / "sharded"), shard_mb=1)
    assert whole.get_int_custom_property("shards") == 1
    assert 3 <= sharded.get_int_custom_property("shards") <= 6  # gzip shrinks the scores a little
    # 5 or 6 shards for 5 videos: some shards hold none of a split (the one-video holdout: at least 4)
    assert sorted(os.listdir(sharded.uri)) == [
        "Split-holdout",
        "Split-oof",
        "Split-test",
    ]  # nothing temporary
    for split in ("oof", "holdout", "test"):
        expected, got = _read(whole, split, wide), _read(sharded, split, wide)
        assert sorted(got) == sorted(expected) and len(got) == len(SPLITS.get(split, OOF))
        for video_id, record in got.items():
            assert (record.fold, record.labels) == (expected[video_id].fold, expected[video_id].labels)
            np.testing.assert_array_equal(record.scores, [scores[0, video_id], scores[1, video_id]])
    assert sharded.get_json_value_custom_property("split_counts") == {"oof": 3, "holdout": 1, "test": 1}


TINY_SHARDS = 0.01  # MB: the ~25 KB of test inputs in 3 shards


@pytest.mark.parametrize("shard_mb", [0, TINY_SHARDS])
def test_examples_that_lost_a_file_fail_naming_the_artifact_split_and_counts(tmp_path, shard_mb):
    # fold_0's second file (video 'b') is gone and no model predicted 'b': every prediction has its example,
    # so the join alone would merge 2 of the 3 out-of-fold videos without complaint.
    examples = _examples(tmp_path / "examples")
    os.remove(tmp_path / "examples" / "Split-fold_0" / "part1.gz")
    models = [_model(tmp_path, m, oof=[[("a", 0), ("c", 1)]]) for m in range(2)]
    message = f"{examples.uri}: split fold_0 holds 1 videos, its producer recorded 2: files were lost"
    with pytest.raises(InputDataError, match=re.escape(message)):
        _merge(tmp_path, models, shard_mb, examples)


def test_examples_without_recorded_counts_fail(tmp_path):
    examples = _examples(tmp_path / "examples", counted=False)
    with pytest.raises(InputDataError, match=f"{re.escape(examples.uri)}: records no split_counts"):
        _merge(tmp_path, [_model(tmp_path, 0)], examples=examples)


@pytest.mark.parametrize("shard_mb", [0, TINY_SHARDS])
def test_a_file_cut_in_the_middle_fails_naming_it(tmp_path, shard_mb):
    examples = _examples(tmp_path / "examples")
    cut = tmp_path / "examples" / "Split-fold_0" / "part0.gz"
    builders.truncate(cut)
    with pytest.raises(
        InputDataError, match=f"{re.escape(str(cut))}: corrupted or truncated TFRecord"
    ) as error:
        _merge(tmp_path, [_model(tmp_path, 0)], shard_mb, examples)
    assert "Fewer than" not in str(error.value)


def test_model_order_is_the_order_given(tmp_path):
    output = _merge(tmp_path, [_model(tmp_path, 1, name="second"), _model(tmp_path, 0, name="first")])
    assert output.get_json_value_custom_property("model_names") == ["second", "first"]
    np.testing.assert_array_equal(_read(output, "oof")["a"].scores, [_scores(1, "a"), _scores(0, "a")])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"oof": [[("c", 1), ("a", 0)]]}, "m1: oof prediction of video 'b' is missing"),
        (
            {"test": [[("t", AVERAGED), ("u", AVERAGED)]]},
            "m1: prediction for video 'u' which is not in the test",
        ),
        ({"num_classes": 4}, "m1: num_classes 4, but m0 has 3"),
        ({"name": "m0"}, "m0: config name given by 2 prediction artifacts"),
    ],
)
def test_executor_fails_on_uncovered_videos_and_model_mismatches(tmp_path, changes, message):
    with pytest.raises(MergeError, match=message):
        _merge(tmp_path, [_model(tmp_path, 0), _model(tmp_path, 1, **changes)])


def _joined(video_id: str, fold: int, model_1: list[tuple[int, np.ndarray]], examples=1) -> tuple:
    """What CoGroupByKey hands `merge_video`: the video's (fold, labels) and each model's predictions."""
    grouped = {
        "examples": [(fold, LABELS[video_id])] * examples,
        "model_0": [encode_prediction(video_id, _scores(0, video_id), fold)],
        "model_1": [
            encode_prediction(video_id, scores, predicted_fold) for predicted_fold, scores in model_1
        ],
    }
    return video_id, grouped


@pytest.mark.parametrize(
    ("joined", "split", "message"),
    [
        (
            _joined("b", 0, [(0, _scores(1, "b"))] * 2),
            "oof",
            r"m1: oof prediction of video 'b' is duplicated \(2 predictions\)",
        ),
        (
            _joined("b", 0, [(1, _scores(1, "b"))]),
            "oof",
            "m1: oof prediction of video 'b' has fold 1, expected 0",
        ),
        (_joined("h", AVERAGED, []), "holdout", "m1: holdout prediction of video 'h' is missing"),
        (
            _joined("t", AVERAGED, [(0, _scores(1, "t"))]),
            "test",
            "m1: test prediction of video 't' has fold 0",
        ),
        (
            _joined("c", 1, [(1, np.zeros(4, np.float32))]),
            "oof",
            "m1: prediction of video 'c' has 4 scores, expected 3",
        ),
        (
            _joined("c", 1, [(1, _scores(1, "c"))], examples=0),
            "oof",
            "m0: prediction for video 'c' which is not in the oof examples",
        ),
    ],
)
def test_merge_video_errors_name_model_and_video(joined, split, message):
    with pytest.raises(MergeError, match=message):
        merge_video(joined, ["m0", "m1"], NUM_CLASSES, split)


def test_record_format_is_float32_models_by_classes_row_major():
    scores = np.array([[0.25, 0.5, 1.0], [0.125, 0.0, 0.99995]], np.float32)  # 0.99995 is not a float16
    record = encode_merged("v", 3, (1, 2), scores)
    features = example_pb2.Example.FromString(record).features.feature
    assert features["scores"].bytes_list.value[0] == scores.astype("<f4").tobytes()
    assert list(features["labels"].int64_list.value) == [1, 2]
    decoded = decode_merged(record, 3)
    assert (decoded.video_id, decoded.fold, decoded.labels) == ("v", 3, (1, 2))
    np.testing.assert_array_equal(decoded.scores, scores)


def test_component_takes_1_to_max_models():
    examples = channel.Channel(type=standard_artifacts.Examples)
    merge = L2Merge(examples, [channel.Channel(type=Predictions) for _ in range(3)])
    assert merge.exec_properties["num_models"] == 3
    for count in (0, MAX_MODELS + 1):
        with pytest.raises(ValueError, match="model predictions"):
            L2Merge(examples, [channel.Channel(type=Predictions) for _ in range(count)])
