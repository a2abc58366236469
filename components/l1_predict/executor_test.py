"""L1Predict refuses a model whose recorded training data includes the split it should predict out-of-fold."""

from __future__ import annotations

import json
import os

import pytest
from tfx.types import standard_artifacts

from components.l1_predict.executor import Executor
from trainer.l1_run import TRAINING_INFO


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
