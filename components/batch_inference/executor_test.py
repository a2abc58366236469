"""BatchInference executor: the test split it runs the pushed model over must hold every test video."""

from __future__ import annotations

import re

import pytest
from tfx.types import standard_artifacts

from components.artifacts import Submission
from components.batch_inference.executor import Executor
from pipeline.synth import video_example
from tests import builders
from trainer.records import InputDataError


def test_a_test_split_that_lost_records_fails_before_any_inference(tmp_path):
    records = [video_example(builders.video(video_id=f"t{i}", labels=()), False) for i in range(2)]
    examples = builders.split_artifact(
        standard_artifacts.Examples(), tmp_path / "examples", {"test": records}
    )
    examples.set_json_value_custom_property("split_counts", {"holdout": 1, "test": 3})
    pushed = standard_artifacts.PushedModel()
    pushed.uri = str(tmp_path / "no_model")  # never loaded: the count fails first
    pushed.set_int_custom_property("pushed", 1)
    submission = Submission()
    submission.uri = str(tmp_path / "submission")
    message = f"{examples.uri}: split test holds 2 videos, its producer recorded 3: files were lost"
    with pytest.raises(InputDataError, match=re.escape(message)):
        Executor().Do(
            {"pushed_model": [pushed], "examples": [examples]}, {"submission": [submission]}, {"top_k": 20}
        )
    assert not (tmp_path / "submission").exists()
