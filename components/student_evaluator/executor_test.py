"""StudentEvaluator executor: every model's holdout metrics and intervals, aligned by video id, the served
(refit) towers scored through their own SavedModels, and the blessing rule."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from tfx.types import standard_artifacts

from components.artifacts import CandidateScores, Predictions, StageMetrics
from components.splits import HOLDOUT
from components.student_evaluator.executor import (
    L1_MEAN,
    STACK,
    STUDENT,
    EvaluationError,
    Executor,
    SplitVideos,
    blessing_decision,
    l1_key,
    scored_rows,
    served_tower_key,
    split_labels,
    tower_key,
)
from pipeline.synth import video_example
from tests import builders
from trainer.metrics import evaluate, evaluate_rows, top_rows
from trainer.predictions import AVERAGED, encode_prediction
from trainer.readers import parse_video_examples
from trainer.records import InputDataError
from trainer.student_run import REFIT, export_student_model
from trainer.students import build_serving_ensemble, export_student, parse_student_config
from trainer.transform import FEATURES, graph_transform, transform_layer

CLASSES = 8
LABELS = {"h1": (1, 4), "h2": (0,), "h3": (2, 5, 7)}


def _multi_hot(labels) -> np.ndarray:
    return np.isin(np.arange(CLASSES), labels).astype(np.float32)


TRAINING = "{epochs: 1, batch_size: 4}"
TOWER = parse_student_config(f"name: t\nmodel: A\nparams: {{widths: [4]}}\ntraining: {TRAINING}", "t")


def _holdout_records() -> list[bytes]:
    return [
        video_example(builders.video(video_id=v, labels=labels, seed=i), True)
        for i, (v, labels) in enumerate(LABELS.items())
    ]


@pytest.fixture(scope="module")
def layer(tmp_path_factory):
    """The Transform graph (analysed on the holdout records as the one training fold) as a layer."""
    root = tmp_path_factory.mktemp("transform")
    return transform_layer(builders.transform_graph(root, {"fold_0": _holdout_records()}, num_folds=1))


def _refit_tower(root, layer, fold: int = REFIT):
    """An untrained tower exported as the student run_fn exports it; (its artifact, its Keras model)."""
    model = standard_artifacts.Model()
    model.uri = str(root)
    keras_model = TOWER.build_model(CLASSES)
    info = {"config": TOWER.name, "fold": fold}
    export_student_model(keras_model, TOWER, CLASSES, os.path.join(root, "Format-Serving"), info, layer)
    return model, keras_model


def _student(root, layer) -> standard_artifacts.Model:
    """An untrained student whose head's output layer is zero: every class at probability 0.5 for every
    video, whatever the random initialisation of the rest."""
    head = parse_student_config(
        f"name: h\nmodel: ensemble\nparams: {{hidden: [4]}}\ntraining: {TRAINING}", "h"
    )
    head_model = head.build_model(CLASSES, 1)
    output = head_model.get_layer("probabilities")
    output.set_weights([np.zeros_like(weight) for weight in output.get_weights()])
    model = standard_artifacts.Model()
    model.uri = str(root)
    ensemble = build_serving_ensemble([TOWER.build_model(CLASSES)], head_model)
    export_student(ensemble, os.path.join(root, "Format-Serving"), CLASSES, layer)
    return model


def _predictions(root, name: str, scores: dict[str, np.ndarray]) -> Predictions:
    records = [encode_prediction(v, values, AVERAGED) for v, values in scores.items()]
    predictions = builders.split_artifact(Predictions(), root, {"holdout": records})
    predictions.set_string_custom_property("config_name", name)
    predictions.set_int_custom_property("num_folds", 5)
    return predictions


def _run(
    tmp_path,
    layer,
    l1_ids=tuple(LABELS),
    stack_fraction: float = 0.97,
    served_towers=(),
    resamples=200,
    lost=(),
    stack_ids=tuple(LABELS),
):
    """The evaluator on the fold split's holdout and models' scores of it, less the `lost` videos'."""
    records = [record for v, record in zip(LABELS, _holdout_records(), strict=True) if v not in lost]
    examples = builders.split_artifact(
        standard_artifacts.Examples(), tmp_path / "examples", {"holdout": records}
    )
    examples.set_json_value_custom_property("split_counts", {"holdout": len(LABELS)})
    l1 = _predictions(tmp_path / "l1", "perfect_l1", {v: _multi_hot(LABELS[v]) for v in l1_ids})
    # Right labels at 0.5, class 6 (never a label) at 0.6: every wrong pair ranks first.
    kept = [v for v in LABELS if v not in lost]
    weak = {v: 0.5 * _multi_hot(LABELS[v]) + 0.6 * (np.arange(CLASSES) == 6) for v in kept}
    weak_l1 = _predictions(tmp_path / "weak_l1", "weak_l1", weak)
    tower = _predictions(tmp_path / "tower", "t", {v: 0.5 * _multi_hot(LABELS[v]) for v in kept})
    stack = CandidateScores()
    stack.uri = str(tmp_path / "stack")
    stack.split_names = '["holdout"]'
    os.makedirs(tmp_path / "stack" / "Split-holdout")
    rows = [(v, c, 0.9) for v, labels in LABELS.items() for c in labels if v in stack_ids and v in kept] + [
        ("h1", 0, 0.95)
    ]
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
            "model": [_student(tmp_path / "student", layer)],
            l1_key(0): [l1],
            l1_key(1): [weak_l1],
            tower_key(0): [tower],
            **{served_tower_key(t): [model] for t, model in enumerate(served_towers)},
        },
        {"evaluation": [evaluation], "blessing": [blessing]},
        {
            "num_classes": CLASSES,
            "num_l1_models": 2,
            "num_towers": 1,
            "num_served_towers": len(served_towers),
            "bootstrap_resamples": resamples,
            "bootstrap_seed": 0,
            "gap_k": 20,
            "gap_floor": 0.0,
            "stack_fraction": stack_fraction,
        },
    )
    return evaluation, blessing


def test_every_model_is_scored_on_the_holdout_and_an_untrained_student_is_not_blessed(tmp_path, layer):
    evaluation, blessing = _run(tmp_path, layer)
    report = json.loads((tmp_path / "evaluation" / "metrics.json").read_text())
    holdout = report["holdout"]
    perfect = {"gap": 1.0, "hit_at_1": 1.0, "perr": 1.0, "map": 1.0}
    assert {k: v for k, v in holdout["perfect_l1"].items() if k != "gap_interval"} == perfect
    assert holdout["perfect_l1"]["gap_interval"] == pytest.approx([1.0, 1.0], abs=1e-12)  # float sums
    labels = np.stack([_multi_hot(labels) for labels in LABELS.values()])
    stack = labels * 0.9
    stack[0, 0] = 0.95  # a wrong class ranked first for h1
    assert {k: v for k, v in holdout[STACK].items() if k != "gap_interval"} == pytest.approx(
        evaluate(stack, labels)
    )
    assert holdout[STACK]["hit_at_1"] == pytest.approx(2 / 3)
    # weak_l1: 3 wrong pairs at 0.6 before the 6 labels at 0.5; GAP = sum(i / (3 + i), i = 1..6) / 6.
    assert holdout["weak_l1"]["gap"] == pytest.approx(sum(i / (3 + i) for i in range(1, 7)) / 6)
    mean = (labels + 0.5 * labels + 0.6 * (np.arange(CLASSES) == 6)) / 2  # labels at 0.75, class 6 at 0.3
    assert holdout[L1_MEAN]["gap"] == pytest.approx(evaluate(mean, labels)["gap"]) == 1.0
    # The student ties every class at 0.5: its GAP is the expectation over the order of 24 tied pairs.
    assert {k: v for k, v in holdout[STUDENT].items() if k != "gap_interval"} == pytest.approx(
        evaluate(np.full(labels.shape, 0.5), labels)
    )
    assert holdout[STUDENT]["gap"] < 0.97 * holdout[STACK]["gap"]
    assert report["roles"] == {
        "perfect_l1": "L1",
        "weak_l1": "L1",
        L1_MEAN: "L1 mean",
        STACK: "stack",
        "t": "tower (5-fold mean)",
        STUDENT: "EnsembleModel",
    }
    for metrics in holdout.values():
        low, high = metrics["gap_interval"]
        assert 0 <= low <= metrics["gap"] <= high <= 1
    differences = report["differences"]
    assert list(differences) == [
        f"{STACK} - best L1 (perfect_l1)",
        f"{STACK} - {L1_MEAN}",
        f"{STUDENT} - {STACK}",
        f"{STUDENT} / {STACK}",
    ]
    best = differences[f"{STACK} - best L1 (perfect_l1)"]
    assert best["value"] == pytest.approx(holdout[STACK]["gap"] - 1.0)
    # The stack never beats the perfect model on any resample, and loses on those that draw h1.
    assert best["interval"][1] == 0.0 and best["interval"][0] < 0
    ratio = differences[f"{STUDENT} / {STACK}"]
    assert ratio["value"] == pytest.approx(holdout[STUDENT]["gap"] / holdout[STACK]["gap"])
    assert ratio["models"] == [STUDENT, STACK]
    assert (report["split"], report["holdout_videos"]) == ("holdout", 3)
    assert report["bootstrap"] == {"resamples": 200, "seed": 0, "confidence": 0.95, "unit": "videos"}
    assert (
        blessing.get_int_custom_property("blessed") == 0 and (tmp_path / "blessing" / "NOT_BLESSED").exists()
    )
    assert evaluation.get_json_value_custom_property("holdout_videos") == 3


def test_a_served_tower_is_scored_through_its_own_saved_model_on_the_raw_records(tmp_path, layer):
    served, keras_model = _refit_tower(tmp_path / "refit", layer)
    _run(tmp_path, layer, served_towers=[served])
    report = json.loads((tmp_path / "evaluation" / "metrics.json").read_text())
    assert report["roles"]["t (refit)"] == "tower (served, refit)"
    assert report["roles"]["t"] == "tower (5-fold mean)"
    parsed = graph_transform(layer)(parse_video_examples(tf.constant(_holdout_records()), CLASSES))
    own = keras_model({FEATURES: parsed[FEATURES]}, training=False)
    labels = np.stack([_multi_hot(labels) for labels in LABELS.values()])
    expected = evaluate(np.asarray(own), labels)
    assert {k: v for k, v in report["holdout"]["t (refit)"].items() if k != "gap_interval"} == pytest.approx(
        expected
    )


def test_a_fold_model_is_not_accepted_as_a_served_tower(tmp_path, layer):
    fold_model, _ = _refit_tower(tmp_path / "fold_model", layer, fold=2)
    with pytest.raises(EvaluationError, match="tower t is the model of fold 2, not refit"):
        _run(tmp_path, layer, served_towers=[fold_model])


def test_the_blessing_follows_the_configured_stack_fraction(tmp_path, layer):
    _, blessing = _run(tmp_path, layer, stack_fraction=0.0)
    assert blessing.get_int_custom_property("blessed") == 1 and (tmp_path / "blessing" / "BLESSED").exists()


def test_a_model_missing_holdout_videos_fails(tmp_path, layer):
    with pytest.raises(EvaluationError, match="perfect_l1: holdout scores cover 2 videos, the holdout has 3"):
        _run(tmp_path, layer, l1_ids=("h1", "h2"))


def test_a_holdout_that_lost_records_fails_naming_the_artifact_and_counts(tmp_path, layer):
    # Every model was scored on what was left: without the count the GAPs would cover 2 of the 3 videos.
    message = (
        f"{tmp_path / 'examples'}: split holdout holds 2 videos, its producer recorded 3: files were lost"
    )
    with pytest.raises(InputDataError, match=re.escape(message)):
        _run(tmp_path, layer, l1_ids=("h1", "h2"), lost=["h3"])


def test_a_stack_missing_holdout_videos_fails(tmp_path, layer):
    with pytest.raises(
        EvaluationError, match=r"L2 stack: holdout scores cover 2 videos, the holdout has 3 .*h2"
    ):
        _run(tmp_path, layer, stack_ids=("h1", "h3"))


def test_a_holdout_file_cut_in_the_middle_fails_naming_it(tmp_path):
    examples = builders.split_artifact(
        standard_artifacts.Examples(), tmp_path / "examples", {"holdout": _holdout_records()}
    )
    builders.truncate(tmp_path / "examples" / "Split-holdout" / "part.gz")
    with pytest.raises(InputDataError, match="Split-holdout/part.gz: corrupted or truncated TFRecord"):
        split_labels(examples, CLASSES)


@pytest.mark.parametrize(
    ("student", "stack", "floor", "fraction", "blessed"),
    [(0.80, 0.82, 0.5, 0.97, True), (0.79, 0.82, 0.5, 0.97, False), (0.45, 0.46, 0.5, 0.9, False)],
)
def test_blessing_rule(student, stack, floor, fraction, blessed):
    assert blessing_decision(student, stack, floor, fraction)[0] is blessed


def test_scored_rows_align_shuffled_batches_to_the_split_order():
    rng = np.random.default_rng(0)
    ids = [f"v{i}" for i in range(50)]
    labels = [rng.choice(CLASSES, size=rng.integers(0, 4), replace=False) for _ in ids]
    videos = SplitVideos(HOLDOUT, ids, labels, CLASSES)
    dense = np.round(rng.random((50, CLASSES)), 1)  # ties
    order = rng.permutation(50)
    batches = [([ids[i] for i in part], dense[part]) for part in np.array_split(order, 7)]
    total = np.zeros((50, CLASSES), np.float32)
    rows = scored_rows("m", videos, batches, 3, total)
    aligned = top_rows(dense, videos.multi_hot(np.arange(50)), 3)  # video by video, in the split's order
    for field in ("row_starts", "classes", "scores", "relevant", "label_starts", "label_classes"):
        assert np.array_equal(getattr(rows, field), getattr(aligned, field)), field
    assert evaluate_rows(rows) == pytest.approx(evaluate(dense, videos.multi_hot(np.arange(50)), 3))
    assert np.array_equal(total, dense.astype(np.float32))
    with pytest.raises(EvaluationError, match="m: video 'v3' is scored more than once"):
        scored_rows("m", videos, [*batches, (["v3"], dense[:1])], 3)
    unknown = r"m: holdout scores cover 43 videos, the holdout has 50 .* first unknown: \['x'\]"
    with pytest.raises(EvaluationError, match=unknown):
        scored_rows("m", videos, [*batches[1:], (["x"], dense[:1])], 3)
