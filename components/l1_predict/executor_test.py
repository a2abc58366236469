"""L1Predict refuses a model whose recorded training data includes the split it should predict out-of-fold,
predicts every video of the fold split and fails when a split lost videos since the fold split wrote it."""

from __future__ import annotations

import json
import os
import re

import apache_beam as beam
import apache_beam.testing.util
import pytest
from tfx.types import standard_artifact_utils, standard_artifacts

from components.artifacts import Predictions
from components.l1_predict.executor import MAX_BATCH_BYTES, Executor, record_batches
from pipeline.synth import video_example
from tests import builders
from trainer.l1_config import parse_l1_config
from trainer.l1_run import TRAINING_INFO, export_model
from trainer.predictions import decode_prediction
from trainer.records import InputDataError


def _model(tmp_path, info: dict) -> standard_artifacts.Model:
    model = standard_artifacts.Model()
    model.uri = str(tmp_path / "model")
    info_path = tmp_path / "model" / "Format-Serving" / TRAINING_INFO
    os.makedirs(info_path.parent)
    info_path.write_text(json.dumps(info))
    return model


@pytest.mark.parametrize(
    "info",
    [
        {"fold": 1, "train_splits": ["fold_0", "fold_1"], "train_files": ["x/Split-fold_0/*"]},
        {"fold": 1, "train_splits": ["fold_0"], "train_files": ["x/Split-fold_0/*", "x/Split-fold_1/*"]},
        {"fold": 0, "train_splits": ["fold_0"], "train_files": ["x/Split-fold_0/*"]},
    ],
)
def test_model_that_saw_the_out_of_fold_split_is_refused(tmp_path, info):
    examples = standard_artifacts.Examples()
    output = standard_artifacts.Model()
    with pytest.raises(ValueError, match="cannot predict out-of-fold split fold_1"):
        Executor().Do(
            {"model": [_model(tmp_path, info)], "examples": [examples]},
            {"predictions": [output]},
            {"fold": 1, "config_name": "m"},
        )


VIDEOS = {"fold_1": ["a", "b"], "holdout": ["h"], "test": ["t"]}
CLASSES = 8


@pytest.fixture(scope="module")
def logistic(tmp_path_factory) -> standard_artifacts.Model:
    """An untrained logistic model of fold 1, exported as the L1 run_fn exports it."""
    config = parse_l1_config("name: m\nmodel: logistic\ntraining: {seed: 1}\n", "inline.yaml")
    model = standard_artifacts.Model()
    model.uri = str(tmp_path_factory.mktemp("logistic"))
    info = {"fold": 1, "train_splits": ["fold_0"], "train_files": ["x/Split-fold_0/*"], "level": "video"}
    path = os.path.join(model.uri, "Format-Serving")
    export_model(config.build_model(CLASSES), config, CLASSES, path, {**info, "num_classes": CLASSES})
    return model


def _predict(tmp_path, model: standard_artifacts.Model, lost=()) -> standard_artifacts.Model:
    """L1Predict on the fold split (one file per video; the files of the `lost` videos are gone)."""
    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path / "examples")
    examples.split_names = standard_artifact_utils.encode_split_names(list(VIDEOS))
    examples.set_json_value_custom_property("split_counts", {s: len(ids) for s, ids in VIDEOS.items()})
    for split, ids in VIDEOS.items():
        os.makedirs(tmp_path / "examples" / f"Split-{split}")
        for video_id in set(ids) - set(lost):
            record = video_example(builders.video(video_id=video_id, labels=(1, 2)), split != "test")
            builders.write_tfrecord(
                tmp_path / "examples" / f"Split-{split}" / f"{video_id}.tfrecord", [record]
            )
    output = Predictions()
    output.uri = str(tmp_path / "predictions")
    Executor().Do(
        {"model": [model], "examples": [examples]}, {"predictions": [output]}, {"fold": 1, "config_name": "m"}
    )
    return output


def test_predicts_every_video_and_records_the_counts(tmp_path, logistic):
    output = _predict(tmp_path, logistic)
    for split, ids in VIDEOS.items():
        assert (
            sorted(
                video_id for video_id, _, _ in map(decode_prediction, builders.read_split(output.uri, split))
            )
            == ids
        )
    assert output.get_json_value_custom_property("split_counts") == {"fold_1": 2, "holdout": 1, "test": 1}
    assert sorted(os.listdir(output.uri)) == [
        "Split-fold_1",
        "Split-holdout",
        "Split-test",
    ]  # nothing temporary


def test_examples_that_lost_a_file_fail_naming_the_artifact_split_and_counts(tmp_path, logistic):
    message = (
        f"{tmp_path / 'examples'}: split fold_1 holds 1 videos, its producer recorded 2: files were lost"
    )
    with pytest.raises(InputDataError, match=re.escape(message)):
        _predict(tmp_path, logistic, lost=["b"])


def test_record_batches_are_bounded_in_bytes_not_count():
    records = [bytes(MAX_BATCH_BYTES // 40)] * 200 + [bytes(100)] * 2000  # frame-sized, then video-sized
    with beam.Pipeline() as pipeline:
        sizes = (
            pipeline
            | beam.Create(records, reshuffle=False)
            | record_batches()
            | beam.Map(lambda batch: (len(batch), sum(map(len, batch))))
            | beam.combiners.ToList()
        )
        beam.testing.util.assert_that(sizes, _bounded)


def _bounded(sizes: list[list[tuple[int, int]]]) -> None:
    ((batches),) = sizes
    assert sum(count for count, _ in batches) == 2200
    assert all(total <= MAX_BATCH_BYTES for _, total in batches)
    assert max(count for count, _ in batches) > 512  # small records are not cut at a count
    # Filled greedily up to the bound, never sized by Beam's timing: the same batches on every run.
    assert sorted(count for count, _ in batches) == sorted(_greedy_batch_counts())


def _greedy_batch_counts() -> list[int]:
    counts, count, total = [], 0, 0
    for size in [MAX_BATCH_BYTES // 40] * 200 + [100] * 2000:
        if total + size > MAX_BATCH_BYTES:
            counts, count, total = [*counts, count], 0, 0
        count, total = count + 1, total + size
    return [*counts, count]
