"""Split roles: every Trainer fits and early-stops on fold splits only; holdout and test are refused."""

from __future__ import annotations

import json

import pytest
from tfx.components import Trainer

from tests.conftest import tiny_pipeline_nodes
from trainer.split_roles import check_training_splits

FOLD_FILES = ["/root/FoldSplit/split_examples/1/Split-fold_0/*", "gs://b/SoftLabels/x/Split-fold_3/*"]


def test_fold_splits_and_their_files_pass():
    check_training_splits(["fold_0", "fold_3"], FOLD_FILES)


@pytest.mark.parametrize(
    ("splits", "files", "message"),
    [
        (["fold_0", "holdout"], FOLD_FILES, r"train_splits \['holdout'\]"),
        (["test"], FOLD_FILES, r"train_splits \['test'\]"),
        (["fold_1"], [*FOLD_FILES, "/root/split_examples/Split-holdout/*"], r"Split-holdout"),
        (["fold_1"], ["/root/Split-fold_1x/*"], "not in a fold split"),
    ],
)
def test_holdout_and_test_are_refused_naming_them(splits, files, message):
    with pytest.raises(ValueError, match=message):
        check_training_splits(splits, files)


def test_every_trainer_of_the_pipeline_trains_on_fold_splits_only(tmp_path):
    trainers = [node for node in tiny_pipeline_nodes(tmp_path, num_folds=3) if isinstance(node, Trainer)]
    assert len(trainers) >= 2 * 3 + 1
    for trainer in trainers:
        splits = json.loads(trainer.exec_properties["custom_config"])["train_splits"]
        assert splits and all(split.startswith("fold_") for split in splits), (trainer.id, splits)
        check_training_splits(splits, [f"/x/Split-{split}/*" for split in splits])
