"""StudentEvaluator executor: every model's holdout metrics, aligned by video id, and the blessing rule."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
from tfx.types import standard_artifacts

from components.artifacts import CandidateScores, Predictions, StageMetrics
from components.student_evaluator.executor import (
    STACK,
    STUDENT,
    EvaluationError,
    Executor,
    blessing_decision,
    l1_key,
)
from pipeline.synth import video_example
from tests import builders
from trainer.metrics import evaluate
from trainer.predictions import AVERAGED, encode_prediction
from trainer.students import build_serving_ensemble, export_student, parse_student_config

CLASSES = 8
LABELS = {"h1": (1, 4), "h2": (0,), "h3": (2, 5, 7)}


def _multi_hot(labels) -> np.ndarray:
    return np.isin(np.arange(CLASSES), labels).astype(np.float32)


def _student(root) -> standard_artifacts.Model:
    training = "{epochs: 1, batch_size: 4}"
    tower = parse_student_config(f"name: t\nmodel: A\nparams: {{widths: [4]}}\ntraining: {training}", "t")
    head = parse_student_config(
        f"name: h\nmodel: ensemble\nparams: {{hidden: [4]}}\ntraining: {training}", "h"
    )
    model = standard_artifacts.Model()
    model.uri = str(root)
    ensemble = build_serving_ensemble([tower.build_model(CLASSES)], head.build_model(CLASSES, 1))
    export_student(ensemble, os.path.join(root, "Format-Serving"), CLASSES)
    return model


def _run(tmp_path, l1_ids=tuple(LABELS), stack_fraction: float = 0.97):
    records = [video_example(builders.video(video_id=v, labels=labels), True) for v, labels in LABELS.items()]
    examples = builders.split_artifact(
        standard_artifacts.Examples(), tmp_path / "examples", {"holdout": records}
    )
    perfect = [encode_prediction(v, _multi_hot(LABELS[v]), AVERAGED) for v in l1_ids]
    l1 = builders.split_artifact(Predictions(), tmp_path / "l1", {"holdout": perfect})
    l1.set_string_custom_property("config_name", "perfect_l1")
    stack = CandidateScores()
    stack.uri = str(tmp_path / "stack")
    stack.split_names = '["holdout"]'
    os.makedirs(tmp_path / "stack" / "Split-holdout")
    rows = [(v, c, 0.9) for v, labels in LABELS.items() for c in labels] + [("h1", 0, 0.95)]
    pd.DataFrame(rows, columns=["video_id", "class_id", "score"]).to_parquet(
        tmp_path / "stack" / "Split-holdout" / "scores.parquet"
    )
    evaluation, blessing = StageMetrics(), standard_artifacts.ModelBlessing()
    evaluation.uri, blessing.uri = str(tmp_path / "evaluation"), str(tmp_path / "blessing")
    os.makedirs(evaluation.uri)
    os.makedirs(blessing.uri)
    Executor().Do(
        {
            "examples": [examples],
            "stack_scores": [stack],
            "model": [_student(tmp_path / "student")],
            l1_key(0): [l1],
        },
        {"evaluation": [evaluation], "blessing": [blessing]},
        {
            "num_classes": CLASSES,
            "num_l1_models": 1,
            "num_towers": 0,
            "gap_k": 20,
            "gap_floor": 0.0,
            "stack_fraction": stack_fraction,
        },
    )
    return evaluation, blessing


def test_every_model_is_scored_on_the_holdout_and_an_untrained_student_is_not_blessed(tmp_path):
    evaluation, blessing = _run(tmp_path)
    report = json.loads((tmp_path / "evaluation" / "metrics.json").read_text())
    holdout = report["holdout"]
    assert holdout["perfect_l1"] == {"gap": 1.0, "hit_at_1": 1.0, "perr": 1.0, "map": 1.0}
    labels = np.stack([_multi_hot(labels) for labels in LABELS.values()])
    stack = labels * 0.9
    stack[0, 0] = 0.95  # a wrong class ranked first for h1
    assert holdout[STACK] == pytest.approx(evaluate(stack, labels))
    assert holdout[STACK]["hit_at_1"] == pytest.approx(2 / 3)
    assert 0 <= holdout[STUDENT]["gap"] < 0.97 * holdout[STACK]["gap"]
    assert report["roles"] == {"perfect_l1": "l1", STACK: "stack", STUDENT: "student"}
    assert (
        blessing.get_int_custom_property("blessed") == 0 and (tmp_path / "blessing" / "NOT_BLESSED").exists()
    )
    assert evaluation.get_json_value_custom_property("holdout_videos") == 3


def test_the_blessing_follows_the_configured_stack_fraction(tmp_path):
    _, blessing = _run(tmp_path, stack_fraction=0.0)
    assert blessing.get_int_custom_property("blessed") == 1 and (tmp_path / "blessing" / "BLESSED").exists()


def test_a_model_missing_holdout_videos_fails(tmp_path):
    with pytest.raises(
        EvaluationError, match="perfect_l1: holdout predictions cover 2 videos, the holdout has 3"
    ):
        _run(tmp_path, l1_ids=("h1", "h2"))


@pytest.mark.parametrize(
    ("student", "stack", "floor", "fraction", "blessed"),
    [(0.80, 0.82, 0.5, 0.97, True), (0.79, 0.82, 0.5, 0.97, False), (0.45, 0.46, 0.5, 0.9, False)],
)
def test_blessing_rule(student, stack, floor, fraction, blessed):
    assert blessing_decision(student, stack, floor, fraction)[0] is blessed
