"""L2Merge on hand-made fold splits and assembled predictions: join by id, candidates, record size, coverage
and shape errors."""

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
from components.l2_merge.executor import (
    Executor,
    MergedRecord,
    MergeError,
    candidate_record,
    class_ranks,
    decode_fold_and_labels,
    decode_merged,
    encode_merged,
    merge_video,
)
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


def _merge(
    tmp_path, models: list[Predictions], shard_mb: float = 0, examples=None, top_k: int = NUM_CLASSES
) -> MergedPredictions:
    """L2Merge's output; the default top_k keeps every class a candidate (the records hold dense scores)."""
    output = MergedPredictions()
    output.uri = str(tmp_path / "merged")
    inputs = {"examples": [examples or _examples(tmp_path / "examples")]}
    inputs.update({f"predictions_{m}": [p] for m, p in enumerate(models)})
    properties = {"num_models": len(models), "top_k": top_k, "shard_mb": shard_mb}
    Executor().Do(inputs, {"merged": [output]}, properties)
    return output


def _read(artifact: MergedPredictions, split: str) -> dict:
    files = tf.io.gfile.glob(os.path.join(artifact.uri, f"Split-{split}", "*"))
    records = [r.numpy() for r in read_records(files)]
    return {r.video_id: r for r in (decode_merged(record) for record in records)}


def test_joins_by_video_id_not_by_position(tmp_path):
    # Model 1 lists its videos in another order and over two files: a positional join would mix videos up.
    reordered = _model(tmp_path, 1, oof=[[("c", 1)], [("b", 0), ("a", 0)]])
    output = _merge(tmp_path, [_model(tmp_path, 0), reordered])
    oof = _read(output, "oof")
    assert sorted(oof) == ["a", "b", "c"]
    for video_id, record in oof.items():
        np.testing.assert_array_equal(record.classes, range(NUM_CLASSES))
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
    assert output.get_int_custom_property("top_k") == NUM_CLASSES
    assert output.get_json_value_custom_property("split_counts") == {"oof": 3, "holdout": 1, "test": 1}
    assert standard_artifact_utils.decode_split_names(output.split_names) == ["oof", "holdout", "test"]


def test_records_keep_the_union_of_every_models_top_k_with_full_ranks(tmp_path):
    # top_k = 1. _scores: m0 = [0, s, 0.5], m1 = [0.25, s, 0.5], s = (ord(id) % 16) / 16.
    # a, b, c, t: s < 0.5 -> both models' top 1 is class 2. h: s = 0.5 ties class 2 -> class 1 ranks first.
    output = _merge(tmp_path, [_model(tmp_path, 0), _model(tmp_path, 1)], top_k=1)
    records = {**_read(output, "oof"), **_read(output, "holdout"), **_read(output, "test")}
    assert {v: r.classes.tolist() for v, r in records.items()} == {v: [2] for v in "abct"} | {"h": [1]}
    np.testing.assert_array_equal(records["a"].scores, [[0.5], [0.5]])
    np.testing.assert_array_equal(records["a"].ranks, [[1], [1]])  # m0: 0.5 > 1/16 > 0; m1: 0.5 > 0.25 > 1/16
    np.testing.assert_array_equal(records["b"].ranks, [[1], [1]])
    np.testing.assert_array_equal(records["h"].scores, [[0.5], [0.5]])
    np.testing.assert_array_equal(records["h"].ranks, [[1], [1]])
    assert (records["h"].classes.dtype, records["h"].scores.dtype, records["h"].ranks.dtype) == (
        np.int32,
        np.float32,
        np.int32,
    )
    assert output.get_int_custom_property("top_k") == 1


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

    whole = _merge(tmp_path / "whole", models(tmp_path / "whole"), shard_mb=0, top_k=20)
    sharded = _merge(tmp_path / "sharded", models(tmp_path / "sharded"), shard_mb=1, top_k=20)
    assert whole.get_int_custom_property("shards") == 1
    assert 3 <= sharded.get_int_custom_property("shards") <= 6  # gzip shrinks the scores a little
    # 5 or 6 shards for 5 videos: some shards hold none of a split (the one-video holdout: at least 4)
    assert sorted(os.listdir(sharded.uri)) == [
        "Split-holdout",
        "Split-oof",
        "Split-test",
    ]  # nothing temporary
    for split in ("oof", "holdout", "test"):
        expected, got = _read(whole, split), _read(sharded, split)
        assert sorted(got) == sorted(expected) and len(got) == len(SPLITS.get(split, OOF))
        for video_id, record in got.items():
            assert (record.fold, record.labels) == (expected[video_id].fold, expected[video_id].labels)
            dense = np.stack([scores[0, video_id], scores[1, video_id]])
            ranks = class_ranks(dense)
            assert 20 <= record.classes.size <= 40
            np.testing.assert_array_equal(record.classes, np.flatnonzero((ranks <= 20).any(axis=0)))
            np.testing.assert_array_equal(record.scores, dense[:, record.classes])
            np.testing.assert_array_equal(record.ranks, ranks[:, record.classes])
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
    np.testing.assert_array_equal(_read(output, "oof")["a"].ranks, [[2, 3, 1], [3, 2, 1]])


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


def _example_of(video_id: str, fold: int, labels: tuple[int, ...]) -> tuple[str, bytes]:
    """(source split, record) of a video's example, as the join groups it."""
    split = f"fold_{fold}" if fold != AVERAGED else "holdout"
    return split, video_example(builders.video(video_id=video_id, labels=labels), with_labels=True)


def _joined(video_id: str, fold: int, model_1: list[tuple[int, np.ndarray]], examples=1) -> tuple:
    """What the join hands `merge_video`: the video's example and each model's predictions."""
    grouped = {
        "examples": [_example_of(video_id, fold, LABELS[video_id])] * examples,
        "model_0": [("oof", encode_prediction(video_id, _scores(0, video_id), fold))],
        "model_1": [
            ("oof", encode_prediction(video_id, scores, predicted_fold)) for predicted_fold, scores in model_1
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
        merge_video(split, *joined, ["m0", "m1"], NUM_CLASSES, 2)


def test_record_format_is_int32_classes_and_float32_scores_and_int32_ranks_models_by_candidates():
    scores = np.array([[0.25, 0.5, 1.0], [0.125, 0.0, 0.99995]], np.float32)  # 0.99995 is not a float16
    ranks = np.array([[7, 3, 1], [40, 3862, 2]], np.int32)
    record = encode_merged(MergedRecord("v", 3, (1, 2), np.array([4, 9, 3861], np.int32), scores, ranks))
    features = example_pb2.Example.FromString(record).features.feature
    assert features["classes"].bytes_list.value[0] == np.array([4, 9, 3861], "<i4").tobytes()
    assert features["scores"].bytes_list.value[0] == scores.astype("<f4").tobytes()
    assert features["ranks"].bytes_list.value[0] == ranks.astype("<i4").tobytes()
    assert list(features["labels"].int64_list.value) == [1, 2]
    decoded = decode_merged(record)
    assert (decoded.video_id, decoded.fold, decoded.labels) == ("v", 3, (1, 2))
    np.testing.assert_array_equal(decoded.classes, [4, 9, 3861])
    np.testing.assert_array_equal(decoded.scores, scores)
    np.testing.assert_array_equal(decoded.ranks, ranks)
    assert decode_fold_and_labels(record) == (3, (1, 2))


def _predictions_of(video_id: str, fold: int, scores: np.ndarray) -> tuple:
    """What the join hands `merge_video` for a video with one prediction per row of `scores`."""
    grouped = {"examples": [_example_of(video_id, fold, (0, 7, 42))]}
    grouped.update(
        {f"model_{m}": [("oof", encode_prediction(video_id, row, fold))] for m, row in enumerate(scores)}
    )
    return video_id, grouped


def test_record_size_depends_on_models_and_top_k_not_on_num_classes():
    num_models, k = 3, 5
    names = [f"m{m}" for m in range(num_models)]
    rng = np.random.default_rng(3)
    few = rng.random((num_models, 50), dtype=np.float32)
    # The same 50 scores among 3862 classes, every other class below them: the same candidates and ranks.
    many = np.concatenate([few, rng.random((num_models, 3812), dtype=np.float32) - 2], axis=1)
    small = merge_video("oof", *_predictions_of("v", 1, few), names, 50, k)
    large = merge_video("oof", *_predictions_of("v", 1, many), names, 3862, k)
    assert len(small) == len(large)
    assert small == large
    # Random scores over all 3862 classes: K between k and models x k; 8 x M x K + 4 x K bytes + ~100
    # (the id, fold, labels, feature names and framing).
    for seed in range(5):
        scores = np.random.default_rng(seed).random((num_models, 3862), dtype=np.float32)
        record = merge_video("oof", *_predictions_of("v", 1, scores), names, 3862, k)
        candidates = decode_merged(record).classes.size
        assert k <= candidates <= num_models * k
        assert 8 * num_models * candidates + 4 * candidates < len(record)
        assert len(record) <= 8 * num_models * candidates + 4 * candidates + 128
        assert len(record) < 4 * num_models * 3862 / 20  # the dense float32 record was 20x larger


def test_candidate_record_ranks_among_all_classes():
    scores = np.array([[0.1, 0.9, 0.3, 0.9, 0.2], [0.5, 0.0, 0.4, 0.1, 0.6]], np.float32)
    record = candidate_record("v", 0, (3,), scores, top_k=2)
    # m0: 1 and 3 tie at 0.9 (rank by class); m1: 4, then 0.
    np.testing.assert_array_equal(record.classes, [0, 1, 3, 4])
    np.testing.assert_array_equal(record.scores, scores[:, [0, 1, 3, 4]])
    np.testing.assert_array_equal(record.ranks, [[5, 1, 2, 4], [2, 5, 4, 1]])


def test_component_takes_1_to_max_models():
    examples = channel.Channel(type=standard_artifacts.Examples)
    merge = L2Merge(examples, [channel.Channel(type=Predictions) for _ in range(3)])
    assert merge.exec_properties["num_models"] == 3
    for count in (0, MAX_MODELS + 1):
        with pytest.raises(ValueError, match="model predictions"):
            L2Merge(examples, [channel.Channel(type=Predictions) for _ in range(count)])


def test_component_rejects_top_k_below_1():
    examples = channel.Channel(type=standard_artifacts.Examples)
    assert L2Merge(examples, [channel.Channel(type=Predictions)], top_k=7).exec_properties["top_k"] == 7
    with pytest.raises(ValueError, match="top_k"):
        L2Merge(examples, [channel.Channel(type=Predictions)], top_k=0)
