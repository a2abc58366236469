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
from components.soft_labels.executor import Executor, SoftLabelError
from tests import builders
from trainer.readers import read_records
from trainer.records import InputDataError
from trainer.soft_labels import decode_soft_labels, parse_soft_labels
from trainer.students import parse_student_examples

FOLDS = {"fold_0": ["a", "b"], "fold_1": ["c"]}
SPLITS = {**FOLDS, "holdout": ["h"]}


def _scores(root, rows: list[tuple[str, int, float, int]]) -> CandidateScores:
    scores = CandidateScores()
    scores.uri = str(root)
    os.makedirs(root / "Split-oof")
    frame = pd.DataFrame(rows, columns=["video_id", "class_id", "score", "scored_by"]).astype(
        {"class_id": "int32", "score": "float32", "scored_by": "int32"}
    )
    frame.to_parquet(root / "Split-oof" / "scores.parquet", index=False)
    scores.split_names = standard_artifact_utils.encode_split_names(["oof"])
    scores.set_json_value_custom_property("fold_models", {"0": {}, "1": {}})
    return scores


def _run(tmp_path, rows, lost=()) -> tuple[SoftLabelIndex, standard_artifacts.Examples]:
    output, student = SoftLabelIndex(), standard_artifacts.Examples()
    output.uri, student.uri = str(tmp_path / "out"), str(tmp_path / "student")
    examples = builders.per_video_examples(tmp_path / "examples", SPLITS, lost)
    Executor().Do(
        {"scores": [_scores(tmp_path / "scores", rows)], "examples": [examples]},
        {"soft_labels": [output], "student_examples": [student]},
        {},
    )
    return output, student


def _split_records(uri: str, split: str) -> list[bytes]:
    files = tf.io.gfile.glob(os.path.join(uri, f"Split-{split}", "*"))
    return [r.numpy() for r in read_records(files)]


ROWS = [("b", 7, 0.25, 0), ("a", 3, 0.875, 0), ("c", 1, 0.5, 1), ("a", 1, 0.125, 0), ("b", 2, 0.75, 0)]


def test_every_fold_video_gets_its_candidate_scores(tmp_path):
    output, _ = _run(tmp_path, ROWS)
    records = _split_records(output.uri, "train")
    decoded = {
        video_id: (ids.tolist(), scores.tolist())
        for video_id, ids, scores in map(decode_soft_labels, records)
    }
    assert decoded == {"a": ([1, 3], [0.125, 0.875]), "b": ([2, 7], [0.75, 0.25]), "c": ([1], [0.5])}
    dense = parse_soft_labels(tf.constant(records), num_classes=8)
    row = [i.decode() for i in dense["id"].numpy()].index("b")
    np.testing.assert_allclose(dense["scores"].numpy()[row], [0, 0, 0.75, 0, 0, 0, 0, 0.25])


def test_student_examples_are_the_fold_records_with_soft_labels_and_holdout_unchanged(tmp_path):
    _, student = _run(tmp_path, ROWS)
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


def test_a_scores_file_cut_in_the_middle_fails_naming_it(tmp_path):
    scores = _scores(tmp_path / "scores", ROWS)
    builders.truncate(tmp_path / "scores" / "Split-oof" / "scores.parquet")
    output, student = SoftLabelIndex(), standard_artifacts.Examples()
    output.uri, student.uri = str(tmp_path / "out"), str(tmp_path / "student")
    with pytest.raises(InputDataError, match="Split-oof/scores.parquet: not a readable Parquet file"):
        Executor().Do(
            {"scores": [scores], "examples": [builders.per_video_examples(tmp_path / "examples", SPLITS)]},
            {"soft_labels": [output], "student_examples": [student]},
            {},
        )


def test_examples_that_lost_a_file_fail_naming_the_artifact_split_and_counts(tmp_path):
    # Video 'b' lost its file, and the stacker (run on what was left) scored no row of it: the join alone
    # would write 1 of the 2 fold_0 videos without complaint.
    message = (
        f"{tmp_path / 'examples'}: split fold_0 holds 1 videos, its producer recorded 2: files were lost"
    )
    with pytest.raises(InputDataError, match=re.escape(message)):
        _run(tmp_path, [row for row in ROWS if row[0] != "b"], lost=["b"])


def test_a_fold_video_without_scores_fails(tmp_path):
    with pytest.raises(SoftLabelError, match="video 'c' of the fold splits has no L2 out-of-fold scores"):
        _run(tmp_path, ROWS[:2] + ROWS[3:])


def test_scores_for_an_unknown_video_fail(tmp_path):
    with pytest.raises(SoftLabelError, match="soft labels for video 'zz' which is in no fold split"):
        _run(tmp_path, [*ROWS, ("zz", 1, 0.5, 0)])


@pytest.mark.parametrize(("scored_by", "folds"), [(0, "\\[0, 1\\]"), (-1, "\\[-1, 1\\]")])
def test_a_row_not_scored_by_the_stacker_of_its_own_fold_fails(tmp_path, scored_by, folds):
    """c is in fold_1: a row scored by the fold-0 stacker (which trained on c) or by the fold average."""
    with pytest.raises(
        SoftLabelError, match=f"video 'c' of fold_1 was scored by the stacker of folds {folds}"
    ):
        _run(tmp_path, [*ROWS, ("c", 4, 0.5, scored_by)])
