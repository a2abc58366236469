"""SoftLabels executor: every fold video gets its OOF candidate scores; records round-trip into tf.data."""

from __future__ import annotations

import os
import re

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from tfx.types import standard_artifact_utils, standard_artifacts

from components.artifacts import CandidateScores, SoftLabelIndex
from components.soft_labels.executor import Executor, SoftLabelError, decode_score_rows, score_records
from tests import builders
from trainer.readers import read_records
from trainer.records import InputDataError
from trainer.soft_labels import decode_soft_labels, parse_soft_labels
from trainer.students import parse_student_examples

FOLDS = {"fold_0": ["a", "b"], "fold_1": ["c"]}
SPLITS = {**FOLDS, "holdout": ["h"]}
ONE_JOIN, TINY_SHARDS = 0.0, 0.012  # MB: 0 -> one join; 12 KB -> the ~22 KB of test inputs in 2 shards
BOTH_JOINS = pytest.mark.parametrize("shard_mb", [ONE_JOIN, TINY_SHARDS])


def _scores(root, rows: list[tuple[str, int, float, int]], files: int = 1) -> CandidateScores:
    """The L2 scores `rows`, dealt round-robin into `files` Parquet files (a video's rows in several)."""
    scores = CandidateScores()
    scores.uri = str(root)
    os.makedirs(root / "Split-oof")
    for file in range(files):
        frame = pd.DataFrame(rows[file::files], columns=["video_id", "class_id", "score", "scored_by"])
        frame = frame.astype({"class_id": "int32", "score": "float32", "scored_by": "int32"})
        frame.to_parquet(root / "Split-oof" / f"scores-{file}.parquet", index=False)
    scores.split_names = standard_artifact_utils.encode_split_names(["oof"])
    scores.set_json_value_custom_property("fold_models", {"0": {}, "1": {}})
    return scores


def _run(
    tmp_path, rows, shard_mb: float, lost=(), splits=SPLITS, files: int = 1
) -> tuple[SoftLabelIndex, standard_artifacts.Examples]:
    output, student = SoftLabelIndex(), standard_artifacts.Examples()
    output.uri, student.uri = str(tmp_path / "out"), str(tmp_path / "student")
    examples = builders.per_video_examples(tmp_path / "examples", splits, lost)
    Executor().Do(
        {"scores": [_scores(tmp_path / "scores", rows, files)], "examples": [examples]},
        {"soft_labels": [output], "student_examples": [student]},
        {"shard_mb": shard_mb},
    )
    return output, student


def _split_records(uri: str, split: str) -> list[bytes]:
    files = tf.io.gfile.glob(os.path.join(uri, f"Split-{split}", "*"))
    return [r.numpy() for r in read_records(files)]


ROWS = [("b", 7, 0.25, 0), ("a", 3, 0.875, 0), ("c", 1, 0.5, 1), ("a", 1, 0.125, 0), ("b", 2, 0.75, 0)]


@BOTH_JOINS
def test_every_fold_video_gets_its_candidate_scores(tmp_path, shard_mb):
    output, student = _run(tmp_path, ROWS, shard_mb)
    assert (student.get_int_custom_property("shards") > 1) == (shard_mb == TINY_SHARDS)
    records = _split_records(output.uri, "train")
    decoded = {
        video_id: (ids.tolist(), scores.tolist())
        for video_id, ids, scores in map(decode_soft_labels, records)
    }
    assert decoded == {"a": ([1, 3], [0.125, 0.875]), "b": ([2, 7], [0.75, 0.25]), "c": ([1], [0.5])}
    dense = parse_soft_labels(tf.constant(records), num_classes=8)
    row = [i.decode() for i in dense["id"].numpy()].index("b")
    np.testing.assert_allclose(dense["scores"].numpy()[row], [0, 0, 0.75, 0, 0, 0, 0, 0.25])


@BOTH_JOINS
def test_student_examples_are_the_fold_records_with_soft_labels_and_holdout_unchanged(tmp_path, shard_mb):
    _, student = _run(tmp_path, ROWS, shard_mb)
    assert student.get_json_value_custom_property("split_counts") == {"fold_0": 2, "fold_1": 1, "holdout": 1}
    for split, ids in SPLITS.items():
        parsed = parse_student_examples(
            tf.constant(_split_records(student.uri, split)), 8, hard_label_weight=0.0
        )
        assert sorted(v.decode() for v in parsed["id"].numpy()) == ids
        assert parsed["mean_rgb"].shape == (len(ids), 1024)
        if split == "fold_0":
            row = [v.decode() for v in parsed["id"].numpy()].index("b")
            np.testing.assert_allclose(parsed["targets"].numpy()[row], [0, 0, 0.75, 0, 0, 0, 0, 0.25])
    assert _split_records(student.uri, "holdout") == _split_records(str(tmp_path / "examples"), "holdout")


def test_a_scores_file_is_read_as_one_record_per_video_and_batch(tmp_path):
    _scores(tmp_path / "scores", ROWS)
    records = list(score_records(str(tmp_path / "scores" / "Split-oof" / "scores-0.parquet")))
    decoded = {
        video_id: (ids.tolist(), scores.tolist(), folds)
        for video_id, ids, scores, folds in map(decode_score_rows, records)
    }
    assert len(records) == 3 and decoded == {
        "a": ([3, 1], [0.875, 0.125], [0]),
        "b": ([7, 2], [0.25, 0.75], [0]),
        "c": ([1], [0.5], [1]),
    }


@BOTH_JOINS
def test_a_scores_file_cut_in_the_middle_fails_naming_it(tmp_path, shard_mb):
    scores = _scores(tmp_path / "scores", ROWS)
    builders.truncate(tmp_path / "scores" / "Split-oof" / "scores-0.parquet")
    output, student = SoftLabelIndex(), standard_artifacts.Examples()
    output.uri, student.uri = str(tmp_path / "out"), str(tmp_path / "student")
    with pytest.raises(InputDataError, match="Split-oof/scores-0.parquet: not a readable Parquet file"):
        Executor().Do(
            {"scores": [scores], "examples": [builders.per_video_examples(tmp_path / "examples", SPLITS)]},
            {"soft_labels": [output], "student_examples": [student]},
            {"shard_mb": shard_mb},
        )


@BOTH_JOINS
def test_a_missing_value_in_the_scores_fails_naming_the_file_and_column(tmp_path, shard_mb):
    with pytest.raises(
        InputDataError, match="Split-oof/scores-0.parquet: column 'video_id' has missing values"
    ):
        _run(tmp_path, [*ROWS, (None, 4, 0.5, 1)], shard_mb)


@BOTH_JOINS
def test_examples_that_lost_a_file_fail_naming_the_artifact_split_and_counts(tmp_path, shard_mb):
    # Video 'b' lost its file, and the stacker (run on what was left) scored no row of it: the join alone
    # would write 1 of the 2 fold_0 videos without complaint.
    message = (
        f"{tmp_path / 'examples'}: split fold_0 holds 1 videos, its producer recorded 2: files were lost"
    )
    with pytest.raises(InputDataError, match=re.escape(message)):
        _run(tmp_path, [row for row in ROWS if row[0] != "b"], shard_mb, lost=["b"])


@BOTH_JOINS
def test_a_fold_video_without_scores_fails(tmp_path, shard_mb):
    with pytest.raises(SoftLabelError, match="video 'c' of the fold splits has no L2 out-of-fold scores"):
        _run(tmp_path, ROWS[:2] + ROWS[3:], shard_mb)


@BOTH_JOINS
def test_scores_for_an_unknown_video_fail(tmp_path, shard_mb):
    with pytest.raises(SoftLabelError, match="soft labels for video 'zz' which is in no fold split"):
        _run(tmp_path, [*ROWS, ("zz", 1, 0.5, 0)], shard_mb)


@BOTH_JOINS
def test_a_video_in_two_fold_splits_fails(tmp_path, shard_mb):
    splits = {"fold_0": ["a", "b"], "fold_1": ["c", "a"], "holdout": ["h"]}
    with pytest.raises(SoftLabelError, match="video 'a' appears 2 times in the fold splits"):
        _run(tmp_path, ROWS, shard_mb, splits=splits)


@BOTH_JOINS
def test_a_candidate_class_scored_twice_fails_even_across_files(tmp_path, shard_mb):
    # Dealt into 2 files: a's class 3 at rows 1 and 6 lands in different files (and record batches).
    rows = [*ROWS, ("c", 2, 0.5, 1), ("a", 3, 0.25, 0)]
    with pytest.raises(SoftLabelError, match="video 'a' has repeated candidate classes"):
        _run(tmp_path, rows, shard_mb, files=2)


@BOTH_JOINS
@pytest.mark.parametrize(("scored_by", "folds"), [(0, "\\[0, 1\\]"), (-1, "\\[-1, 1\\]")])
def test_a_row_not_scored_by_the_stacker_of_its_own_fold_fails(tmp_path, scored_by, folds, shard_mb):
    """c is in fold_1: a row scored by the fold-0 stacker (which trained on c) or by the fold average."""
    with pytest.raises(
        SoftLabelError, match=f"video 'c' of fold_1 was scored by the stacker of folds {folds}"
    ):
        _run(tmp_path, [*ROWS, ("c", 4, 0.5, scored_by)], shard_mb)


def test_sharded_join_writes_the_same_records_as_one_join(tmp_path):
    """Random candidates of 14 videos, their rows shuffled into 3 Parquet files: in 1 and in several shards
    the index and every split of the student examples hold the same records."""
    rng = np.random.default_rng(0)
    splits = {
        "fold_0": [f"f0_{i}" for i in range(8)],
        "fold_1": [f"f1_{i}" for i in range(6)],
        "holdout": ["h0", "h1"],
        "test": ["t0"],
    }
    rows = [
        (video_id, int(class_id), float(rng.random(dtype=np.float32)), fold)
        for fold in (0, 1)
        for video_id in splits[f"fold_{fold}"]
        for class_id in rng.choice(50, size=int(rng.integers(1, 12)), replace=False)
    ]
    rows = [rows[i] for i in rng.permutation(len(rows))]
    whole = _run(tmp_path / "whole", rows, ONE_JOIN, splits=splits, files=3)
    sharded = _run(tmp_path / "sharded", rows, 0.03, splits=splits, files=3)
    assert whole[1].get_int_custom_property("shards") == 1
    assert sharded[1].get_int_custom_property("shards") > 2
    assert sorted(os.listdir(sharded[1].uri)) == [f"Split-{split}" for split in sorted(splits)]  # no scratch
    expected = {"fold_0": 8, "fold_1": 6, "holdout": 2, "test": 1}
    assert whole[1].get_json_value_custom_property("split_counts") == expected
    assert sharded[1].get_json_value_custom_property("split_counts") == expected
    index = sorted(_split_records(whole[0].uri, "train"))
    assert sorted(_split_records(sharded[0].uri, "train")) == index
    by_video = {}
    for video_id, class_id, score, _ in sorted(rows):
        by_video.setdefault(video_id, ([], []))[0].append(class_id)
        by_video[video_id][1].append(score)
    decoded = {
        video_id: (ids.tolist(), scores.tolist()) for video_id, ids, scores in map(decode_soft_labels, index)
    }
    assert decoded == by_video
    for split, ids in splits.items():
        records = sorted(_split_records(whole[1].uri, split))
        assert len(records) == len(ids) and sorted(_split_records(sharded[1].uri, split)) == records
