"""L2LightGBM executor on hand-made candidate features: OOF provenance, probabilities, models, metrics."""

from __future__ import annotations

import os
import re

import lightgbm as lgb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from tfx.types import standard_artifact_utils, standard_artifacts

from components.artifacts import CandidateFeatures, CandidateScores, StageMetrics
from components.l2_lightgbm.config import parse_lightgbm_config
from components.l2_lightgbm.executor import Executor, in_validation_slice
from tests import builders
from trainer.metrics import gap_at_k
from trainer.records import InputDataError

CONFIG = """
num_boost_round: 60
early_stopping_rounds: 10
validation_fraction: 0.2
seed: 3
params: {learning_rate: 0.1, num_leaves: 7, min_data_in_leaf: 5, num_threads: 1}
"""
MODELS = ["a", "b"]
FOLDS = 3
# One indicator column per fold (1.0 on its rows): a model never trained on fold k saw in_fold_k constant.
FOLD_INDICATORS = [f"in_fold_{fold}" for fold in range(FOLDS)]
FEATURES = [
    "class_id",
    "score_a",
    "rank_a",
    "score_b",
    "rank_b",
    "score_mean",
    "score_max",
    "score_std",
    "topk_count",
    "prior",
    *FOLD_INDICATORS,
]


def _rows(split: str, videos: int, fold_of, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frames = []
    for v in range(videos):
        classes = rng.choice(30, size=8, replace=False)
        target = (rng.random(8) < 0.3).astype(np.int8) if split != "test" else np.zeros(8, np.int8)
        score_a = np.clip(0.5 * target + 0.5 * rng.random(8), 0, 1)
        score_b = np.clip(0.3 * target + 0.7 * rng.random(8), 0, 1)
        frames.append(
            pd.DataFrame(
                {
                    "video_id": f"{split}{v}",
                    "fold": fold_of(v),
                    "class_id": classes.astype(np.int32),
                    "target": target,
                    "num_labels": np.int32(target.sum() + (1 if split != "test" else 0)),
                    "score_a": score_a.astype(np.float32),
                    "rank_a": (np.argsort(np.argsort(-score_a)) + 1).astype(np.int32),
                    "score_b": score_b.astype(np.float32),
                    "rank_b": (np.argsort(np.argsort(-score_b)) + 1).astype(np.int32),
                }
            )
        )
    rows = pd.concat(frames, ignore_index=True)
    both = rows[["score_a", "score_b"]].to_numpy()
    return rows.assign(
        score_mean=both.mean(1).astype(np.float32),
        score_max=both.max(1).astype(np.float32),
        score_std=both.std(1).astype(np.float32),
        topk_count=np.int32(2),
        prior=np.float32(0.1),
        fold=rows["fold"].astype(np.int32),
        **{name: (rows["fold"] == fold).astype(np.float32) for fold, name in enumerate(FOLD_INDICATORS)},
    )


def _features(tmp_path) -> CandidateFeatures:
    """L2Features' output, each split in two Parquet files (part0: the first half of its videos)."""
    features = CandidateFeatures()
    features.uri = str(tmp_path / "features")
    splits = {
        "oof": _rows("oof", 90, lambda v: v % FOLDS, 0),
        "holdout": _rows("holdout", 20, lambda v: -1, 1),
        "test": _rows("test", 10, lambda v: -1, 2),
    }
    for split, rows in splits.items():
        os.makedirs(tmp_path / "features" / f"Split-{split}")
        ids = rows["video_id"].unique()
        first = rows["video_id"].isin(ids[: len(ids) // 2])
        rows[first].to_parquet(tmp_path / "features" / f"Split-{split}" / "part0.parquet", index=False)
        rows[~first].to_parquet(tmp_path / "features" / f"Split-{split}" / "part1.parquet", index=False)
    features.split_names = standard_artifact_utils.encode_split_names(list(splits))
    features.set_json_value_custom_property("split_counts", {"oof": 90, "holdout": 20, "test": 10})
    features.set_json_value_custom_property("feature_columns", FEATURES)
    features.set_json_value_custom_property("model_names", MODELS)
    return features


def _run(tmp_path, name: str, features: CandidateFeatures | None = None):
    outputs = {"scores": CandidateScores(), "model": standard_artifacts.Model(), "metrics": StageMetrics()}
    for key, output in outputs.items():
        output.uri = str(tmp_path / name / key)
        os.makedirs(output.uri)
    Executor().Do(
        {"features": [features or _features(tmp_path / name)]},
        {k: [v] for k, v in outputs.items()},
        {"config_yaml": CONFIG, "config_source": "inline.yaml", "gap_k": 20},
    )
    return outputs


def test_features_that_lost_a_file_fail_naming_the_artifact_split_and_videos(tmp_path):
    features = _features(tmp_path / "cut")
    os.remove(tmp_path / "cut" / "features" / "Split-holdout" / "part1.parquet")
    message = f"{features.uri}: split holdout holds 10 videos, its producer recorded 20: files were lost"
    with pytest.raises(InputDataError, match=re.escape(message)):
        _run(tmp_path, "cut", features)


def test_a_parquet_file_cut_in_the_middle_fails_naming_it(tmp_path):
    features = _features(tmp_path / "cut")
    cut = tmp_path / "cut" / "features" / "Split-oof" / "part1.parquet"
    builders.truncate(cut)
    with pytest.raises(InputDataError, match=f"{re.escape(str(cut))}: not a readable Parquet file"):
        _run(tmp_path, "cut", features)


def _scores(artifact, split: str) -> pd.DataFrame:
    return pq.read_table(os.path.join(artifact.uri, f"Split-{split}")).to_pandas()


def _trained_on_fold(booster: lgb.Booster, fold: int) -> bool:
    """Whether the model's training rows included fold `fold` (its indicator was not constant 0 there)."""
    info = booster.dump_model()["feature_infos"].get(f"in_fold_{fold}")
    return info is not None and info["max_value"] > 0


def test_oof_rows_are_scored_by_the_model_that_did_not_train_on_their_fold(tmp_path):
    outputs = _run(tmp_path, "run")
    oof = _scores(outputs["scores"], "oof")
    features = pq.read_table(tmp_path / "run" / "features" / "Split-oof").to_pandas()
    assert oof["score"].between(0, 1).all() and oof["score"].nunique() > 10  # probabilities, not 0/1
    assert sorted(oof["scored_by"].unique()) == list(range(FOLDS))
    for scored_by, rows in oof.groupby("scored_by"):
        path = os.path.join(outputs["model"].uri, f"fold_{scored_by}.txt")
        with open(path) as handle:
            assert handle.readline().strip() == "tree"  # LightGBM text format, no pickle
        booster = lgb.Booster(model_file=path)
        # The model that scored these rows reproduces their scores and never trained on their fold.
        reloaded = booster.predict(features.loc[rows.index, FEATURES])
        np.testing.assert_allclose(rows["score"], reloaded, rtol=1e-5)
        assert not any(_trained_on_fold(booster, fold) for fold in features.loc[rows.index, "fold"].unique())
        assert [fold for fold in range(FOLDS) if _trained_on_fold(booster, fold)] == sorted(
            set(range(FOLDS)) - {scored_by}
        )

    holdout = _scores(outputs["scores"], "holdout")
    features = pq.read_table(tmp_path / "run" / "features" / "Split-holdout").to_pandas()
    boosters = [lgb.Booster(model_file=os.path.join(outputs["model"].uri, f"fold_{k}.txt")) for k in range(3)]
    mean = np.mean([b.predict(features[FEATURES]) for b in boosters], axis=0)
    np.testing.assert_allclose(holdout["score"], mean, rtol=1e-5)
    assert (holdout["scored_by"] == -1).all() and len(_scores(outputs["scores"], "test")) == 80


def _dense_gap(rows: pd.DataFrame, scores: np.ndarray) -> float:
    """GAP@20 of candidate rows by trainer.metrics: each video's 8 candidates as a dense row (all within the
    top 20), rescaled from their labels to every true label of the videos (one per video is no candidate)."""
    order = np.lexsort((rows["class_id"], rows["video_id"]))
    dense_scores = np.asarray(scores)[order].reshape(-1, 8)
    dense_labels = rows["target"].to_numpy()[order].reshape(-1, 8)
    true_labels = rows.drop_duplicates("video_id")["num_labels"].sum()
    return gap_at_k(dense_scores, dense_labels, 20) * dense_labels.sum() / true_labels


def test_metrics_report_fold_holdout_and_l1_gaps(tmp_path):
    outputs = _run(tmp_path, "run")
    metrics = outputs["metrics"]
    holdout = pq.read_table(tmp_path / "run" / "features" / "Split-holdout").to_pandas()
    scores = _scores(outputs["scores"], "holdout")
    assert list(scores["video_id"]) == list(holdout["video_id"])  # rows in the features' order
    assert metrics.get_json_value_custom_property("holdout_gap") == pytest.approx(
        _dense_gap(holdout, scores["score"].to_numpy())
    )
    l1 = metrics.get_json_value_custom_property("l1_holdout_gap")
    assert l1 == pytest.approx({m: _dense_gap(holdout, holdout[f"score_{m}"].to_numpy()) for m in MODELS})
    assert l1["a"] > l1["b"]  # model a's scores carry more signal by construction
    oof = _scores(outputs["scores"], "oof")
    fold_gap = metrics.get_json_value_custom_property("fold_gap")
    assert fold_gap == pytest.approx(
        {str(fold): _dense_gap(rows, rows["score"].to_numpy()) for fold, rows in oof.groupby("fold")}
    )
    assert os.path.exists(os.path.join(metrics.uri, "metrics.json"))


def test_dense_gap_of_hand_made_rows():
    """_dense_gap on two videos: v0 candidates 1 (T, 0.9), 2 (F, 0.8); v1 candidates 3 (F, 0.7), 4 (T, 0.6);
    3 true labels in all. Pooled: T, F, F, T -> (1/1 + 2/4) / 3 = 0.5."""
    rows = pd.DataFrame(
        {
            "video_id": ["v0"] * 8 + ["v1"] * 8,
            "class_id": list(range(1, 9)) + list(range(3, 11)),
            "target": [1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0],
            "num_labels": [2] * 8 + [1] * 8,
        }
    )
    scores = np.array([0.9, 0.8] + [0.0] * 6 + [0.7, 0.6] + [0.0] * 6)
    assert _dense_gap(rows, scores) == pytest.approx(0.5)


def test_same_seed_gives_identical_scores(tmp_path):
    first = _scores(_run(tmp_path, "one")["scores"], "oof")
    second = _scores(_run(tmp_path, "two")["scores"], "oof")
    pd.testing.assert_frame_equal(first, second)


def test_validation_slice_takes_whole_videos():
    ids = pd.Series([f"v{i // 5}" for i in range(5000)])
    chosen = in_validation_slice(ids, 0.2, seed=1)
    per_video = pd.Series(chosen).groupby(ids).agg(["min", "max"])
    assert (per_video["min"] == per_video["max"]).all() and 0.15 < chosen.mean() < 0.25


def test_a_parameter_set_by_an_alias_replaces_its_default():
    config = parse_lightgbm_config("params: {reg_lambda: 5.0, eta: 0.2}\n", "inline.yaml")
    params = config.lightgbm_params()
    assert (params["reg_lambda"], params["eta"]) == (5.0, 0.2)
    assert "lambda_l2" not in params and "learning_rate" not in params
    assert params["num_leaves"] == 63  # defaults the config does not set stay
