"""Kaggle CSV: predict with an exported model, exact format, GAP scoring, bad rows named by line."""

from __future__ import annotations

import csv
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf

from pipeline import cli
from tests import builders
from tests.conftest import TINY
from trainer.l1_config import parse_l1_config
from trainer.l1_run import export_model
from trainer.metrics import gap_at_k
from trainer.records import InputDataError
from trainer.submission import predict_rows, score_submission, write_submission

CONFIG = "name: csv_model\nmodel: logistic\ntraining: {seed: 1}\n"


@pytest.fixture(scope="module")
def exported_model(tmp_path_factory) -> str:
    config = parse_l1_config(CONFIG, "inline.yaml")
    model = config.build_model(TINY.classes)
    path = str(tmp_path_factory.mktemp("model") / "export")
    export_model(model, config, TINY.classes, path, {})
    return path


def test_predict_writes_exact_kaggle_format_and_scores(exported_model, tiny_data, tmp_path, capsys):
    out = tmp_path / "submission.csv"
    pattern = str(tiny_data / "video" / "test*.tfrecord")
    assert cli.main(["predict", "--model", exported_model, "--data", pattern, "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "VideoId,LabelConfidencePairs"
    with open(tiny_data / "test_truth.csv") as handle:
        truth = {row["VideoId"]: [int(c) for c in row["Labels"].split()] for row in csv.DictReader(handle)}
    assert [line.split(",")[0] for line in lines[1:]] == list(truth)
    for line in lines[1:]:
        pairs = line.split(",")[1].split(" ")
        assert len(pairs) == 40 and re.fullmatch(r"(\d+ \d\.\d{6} ?){20}", " ".join(pairs))
        scores = [float(s) for s in pairs[1::2]]
        assert scores == sorted(scores, reverse=True)

    assert cli.main(["score", str(out), "--truth", str(tiny_data / "test_truth.csv")]) == 0
    printed = float(capsys.readouterr().out.split()[-1])
    rows = list(predict_rows(exported_model, pattern, k=TINY.classes))
    dense = np.zeros((len(rows), TINY.classes))
    labels = np.zeros_like(dense)
    for i, (video_id, classes, scores) in enumerate(rows):
        dense[i, classes] = scores
        labels[i, truth[video_id]] = 1
    assert printed == pytest.approx(gap_at_k(dense, labels, k=20), abs=1e-5)


def _truth(tmp_path) -> str:
    path = tmp_path / "truth.csv"
    path.write_text("VideoId,Labels\na,1 2\nb,3\n")
    return str(path)


def test_score_hand_computed(tmp_path):
    submission = tmp_path / "s.csv"
    # pooled: a1 0.9 T (p=1), b4 0.8 F, a5 0.7 F, b3 0.6 T (p=2/4) -> (1 + 0.5) / 3 labels = 0.5
    submission.write_text("VideoId,LabelConfidencePairs\na,1 0.9 5 0.7\nb,4 0.8 3 0.6\n")
    assert score_submission(submission, _truth(tmp_path)) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("a,1 0.9\nzz,1 0.5\n", "line 3: unknown video id 'zz'"),
        ("a,1 0.9 2\n", "line 2: pairs must be distinct 'class score' pairs"),
        ("a,1 x\n", "line 2: pairs must be 'class score'"),
        ("a,1 0.9,extra\n", "line 2: expected 2 columns, got 3"),
        ("a,1 0.9\na,2 0.5\n", "line 3: video id 'a' appears twice"),
        ("a,1 0.9\nb,3 nan 4 0.5\n", "line 3: confidences must be finite numbers, got '3 nan 4 0.5'"),
        ("a,1 inf\n", "line 2: confidences must be finite numbers, got '1 inf'"),
        ("", "no rows after the header"),
    ],
)
def test_malformed_submissions_name_the_line(tmp_path, body, message):
    submission = tmp_path / "bad.csv"
    submission.write_text("VideoId,LabelConfidencePairs\n" + body)
    with pytest.raises(InputDataError, match=re.escape(f"{submission}: {message}")):
        score_submission(submission, _truth(tmp_path))


def test_submission_and_truth_with_a_byte_order_mark_are_read(tmp_path):
    truth = tmp_path / "truth.csv"
    truth.write_bytes(b"\xef\xbb\xbfVideoId,Labels\na,1 2\nb,3\n")
    submission = tmp_path / "s.csv"
    submission.write_bytes(b"\xef\xbb\xbfVideoId,LabelConfidencePairs\na,1 0.9 5 0.7\nb,4 0.8 3 0.6\n")
    assert score_submission(submission, truth) == pytest.approx(0.5)  # as in test_score_hand_computed


def test_truth_with_a_repeated_video_id_names_it_and_both_lines(tmp_path):
    truth = tmp_path / "truth.csv"
    truth.write_text("VideoId,Labels\na,1 2\nb,3\na,4\n")
    submission = tmp_path / "s.csv"
    submission.write_text("VideoId,LabelConfidencePairs\na,1 0.9\n")
    with pytest.raises(InputDataError, match=re.escape(f"{truth}: video id 'a' on lines 2 and 4")):
        score_submission(submission, truth)


def test_predict_on_missing_or_wrong_files(exported_model, tmp_path, tiny_data):
    with pytest.raises(FileNotFoundError, match="no files match"):
        write_submission(exported_model, str(tmp_path / "none*.tfrecord"), tmp_path / "x.csv")
    with pytest.raises(InputDataError, match="records do not match the model's input"):
        write_submission(exported_model, str(tiny_data / "frame" / "test*.tfrecord"), tmp_path / "x.csv")


def test_predict_names_the_file_and_record_of_an_id_that_is_not_utf8(exported_model, tmp_path, tiny_data):
    records = [r.numpy() for r in tf.data.TFRecordDataset(str(tiny_data / "video" / "test0000.tfrecord"))]
    broken = tf.train.Example.FromString(records[1])
    broken.features.feature["id"].bytes_list.value[0] = b"\xff\xfe"
    path = tmp_path / "test0000.tfrecord"
    builders.write_tfrecord(path, [records[0], broken.SerializeToString(), *records[2:]])
    with pytest.raises(InputDataError) as raised:
        write_submission(exported_model, str(path), tmp_path / "x.csv")
    assert str(raised.value) == f"{path}: record 1: feature 'id': b'\\xff\\xfe' is not valid UTF-8"
    assert not (tmp_path / "x.csv").exists()


def test_tensorflow_file_errors_are_one_line_user_errors(exported_model, tiny_data, tmp_path, capsys):
    """A path that is a directory raises TensorFlow's FailedPreconditionError, not an OSError: still one line,
    naming the path, and no submission is left behind."""
    (tmp_path / "out.csv").mkdir()
    (tmp_path / "data" / "test0001.tfrecord").mkdir(parents=True)
    shutil.copy(tiny_data / "video" / "test0000.tfrecord", tmp_path / "data")
    predict = ["predict", "--model", exported_model, "--data"]
    good, broken = str(tiny_data / "video" / "test*.tfrecord"), str(tmp_path / "data" / "test*.tfrecord")
    assert cli.main([*predict, good, "--out", str(tmp_path / "out.csv")]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"yt8m: error: {tmp_path / 'out.csv'}: cannot write the submission: ")
    assert cli.main([*predict, broken, "--out", str(tmp_path / "x.csv")]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error == f"yt8m: error: {tmp_path / 'data' / 'test0001.tfrecord'}; Is a directory"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data", "out.csv"]
