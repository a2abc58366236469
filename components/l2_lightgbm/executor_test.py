"""L2LightGBM executor on hand-made candidate features: OOF provenance, probabilities, models, metrics."""

from __future__ import annotations

import logging
import os
import re
import shutil

import lightgbm as lgb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from tfx.types import standard_artifact_utils, standard_artifacts

from components.artifacts import CandidateFeatures, CandidateScores, StageMetrics
from components.l2_lightgbm import executor
from components.l2_lightgbm.config import parse_lightgbm_config
from components.l2_lightgbm.executor import Executor, in_validation_slice, negative_weights
from tests import builders
from trainer.metrics import gap_at_k, gap_from_candidates
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
SPLITS = ["oof", "holdout", "test"]
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


def _run(
    tmp_path, name: str, features: CandidateFeatures | None = None, gap_k: int = 20, config: str = CONFIG
):
    outputs = {"scores": CandidateScores(), "model": standard_artifacts.Model(), "metrics": StageMetrics()}
    for key, output in outputs.items():
        output.uri = str(tmp_path / name / key)
        os.makedirs(output.uri)
    Executor().Do(
        {"features": [features or _features(tmp_path / name)]},
        {k: [v] for k, v in outputs.items()},
        {"config_yaml": config, "config_source": "inline.yaml", "gap_k": gap_k},
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


def test_negative_weights_keep_every_positive_and_a_stable_share_of_negatives_weighted_up():
    rng = np.random.default_rng(0)
    videos = np.repeat([f"v{v}" for v in range(20_000)], 10)
    classes = np.tile(np.arange(10), 20_000) * 7
    target = rng.random(videos.size) < 0.02
    weights = negative_weights(videos, classes, target, 0.3, seed=5)
    assert (weights[target] == 1).all()
    kept = weights[~target] > 0
    assert abs(kept.mean() - 0.3) < 0.005
    np.testing.assert_allclose(weights[~target][kept], 1 / 0.3, rtol=1e-6)
    assert (weights[~target][~kept] == 0).all()
    # A row's choice depends on its video, class and the seed, not on its position or the other rows.
    order = rng.permutation(videos.size)
    np.testing.assert_array_equal(
        negative_weights(videos[order], classes[order], target[order], 0.3, 5), weights[order]
    )
    other_seed = negative_weights(videos, classes, target, 0.3, seed=6)
    assert 0.05 < np.mean((other_seed > 0) != (weights > 0)) < 0.6
    assert (negative_weights(videos, classes, target, 1.0, 5) == 1).all()


def test_a_parameter_set_by_an_alias_replaces_its_default():
    config = parse_lightgbm_config("params: {reg_lambda: 5.0, eta: 0.2}\n", "inline.yaml")
    params = config.lightgbm_params()
    assert (params["reg_lambda"], params["eta"]) == (5.0, 0.2)
    assert "lambda_l2" not in params and "learning_rate" not in params
    assert params["num_leaves"] == 63  # defaults the config does not set stay


def _reference(tmp_path, name: str, k: int = 20, config_yaml: str = CONFIG):
    """The in-memory implementation this executor replaced: every split read whole with pandas, each fold's
    training rows sorted by (video_id, class_id) (less the negative rows left out, the kept ones weighted),
    boosters trained on DataFrames, GAPs on string video ids."""
    config = parse_lightgbm_config(config_yaml, "inline.yaml")
    read = {
        split: pq.read_table(tmp_path / name / "features" / f"Split-{split}").to_pandas() for split in SPLITS
    }
    oof, holdout = read["oof"], read["holdout"]

    def rows_gap(rows: pd.DataFrame, scores) -> float:
        true_labels = int(rows.drop_duplicates("video_id")["num_labels"].sum())
        return gap_from_candidates(
            rows["video_id"].to_numpy(),
            rows["class_id"].to_numpy(),
            scores,
            rows["target"].to_numpy(),
            true_labels,
            k,
        )

    models, oof_scores = {}, np.zeros(len(oof), np.float32)
    averaged = {split: np.zeros(len(read[split])) for split in ("holdout", "test")}
    for fold in range(FOLDS):
        training = oof[oof["fold"] != fold].sort_values(["video_id", "class_id"], kind="stable")
        weight = negative_weights(
            training["video_id"],
            training["class_id"],
            training["target"],
            config.negative_fraction,
            config.seed + fold,
        )
        training = training.assign(weight=weight)[weight > 0]
        validation = in_validation_slice(training["video_id"], config.validation_fraction, config.seed + fold)

        def dataset(part, reference=None):
            weight = part["weight"] if config.negative_fraction < 1 else None
            return lgb.Dataset(
                part[FEATURES],
                label=part["target"],
                weight=weight,
                categorical_feature=["class_id"],
                reference=reference,
            )

        train_set = dataset(training[~validation])
        booster = lgb.train(
            config.lightgbm_params(),
            train_set,
            num_boost_round=config.num_boost_round,
            valid_sets=[dataset(training[validation], reference=train_set)],
            callbacks=[lgb.early_stopping(config.early_stopping_rounds, verbose=False)],
        )
        models[fold] = booster.model_to_string(num_iteration=booster.best_iteration)
        held_out = (oof["fold"] == fold).to_numpy()
        oof_scores[held_out] = booster.predict(
            oof.loc[held_out, FEATURES], num_iteration=booster.best_iteration
        )
        for split in averaged:
            averaged[split] += booster.predict(read[split][FEATURES], num_iteration=booster.best_iteration)
    holdout_scores = averaged["holdout"] / FOLDS
    metrics = {
        "fold_gap": {
            str(f): rows_gap(oof[oof["fold"] == f], oof_scores[(oof["fold"] == f).to_numpy()])
            for f in range(FOLDS)
        },
        "oof_gap": rows_gap(oof, oof_scores),
        "holdout_gap": rows_gap(holdout, holdout_scores),
        "l1_holdout_gap": {m: rows_gap(holdout, holdout[f"score_{m}"].to_numpy()) for m in MODELS},
    }
    scores = {
        "oof": oof_scores,
        "holdout": holdout_scores.astype(np.float32),
        "test": (averaged["test"] / FOLDS).astype(np.float32),
    }
    return models, scores, metrics


@pytest.mark.parametrize("negative_fraction", [1.0, 0.4])
def test_boosters_scores_and_metrics_equal_the_in_memory_implementation(tmp_path, negative_fraction):
    config = f"{CONFIG}negative_fraction: {negative_fraction}\n"
    outputs = _run(tmp_path, "run", config=config)
    models, scores, metrics = _reference(tmp_path, "run", config_yaml=config)
    info = outputs["scores"].get_json_value_custom_property("fold_models")
    oof = pq.read_table(tmp_path / "run" / "features" / "Split-oof").to_pandas()
    for fold in range(FOLDS):  # the rows trained on: every positive, about the fraction of the negatives
        rows = oof[oof["fold"] != fold]
        kept = info[str(fold)]["train_rows"] + info[str(fold)]["validation_rows"]
        positives = int(rows["target"].sum())
        assert positives + 0.7 * negative_fraction * (len(rows) - positives) < kept
        assert kept < positives + 1.3 * negative_fraction * (len(rows) - positives) + 1
    for fold, text in models.items():
        with open(os.path.join(outputs["model"].uri, f"fold_{fold}.txt")) as handle:
            written = handle.read()
        # Same trees, feature infos and parameters; the last line only records the input's type: pandas
        # category levels ([] from a DataFrame without category columns, null from Sequences).
        assert written.endswith("\npandas_categorical:null\n") and text.endswith("\npandas_categorical:[]\n")
        assert written.rsplit("pandas_categorical", 1)[0] == text.rsplit("pandas_categorical", 1)[0]
    for split, expected in scores.items():
        np.testing.assert_array_equal(_scores(outputs["scores"], split)["score"].to_numpy(), expected)
    for key, value in metrics.items():
        assert outputs["metrics"].get_json_value_custom_property(key) == value


@pytest.mark.parametrize("prune_rows", [64, 1000])
def test_gaps_of_rows_pruned_to_each_videos_top_k_equal_those_of_every_row(tmp_path, monkeypatch, prune_rows):
    """GAP@3 of 8 rows per video, the GAPs' buffer pruned every 64 rows (a video's rows often split across
    prunings) or every 1000: the reference's gap_from_candidates on every row, bit for bit."""
    monkeypatch.setattr(executor, "PRUNE_ROWS", prune_rows)
    outputs = _run(tmp_path, "run", gap_k=3)
    _, _, metrics = _reference(tmp_path, "run", k=3)
    for key, value in metrics.items():
        assert outputs["metrics"].get_json_value_custom_property(key) == value


def test_pruning_keeps_each_videos_rows_down_to_its_kth_score_ties_included():
    videos = np.array([0, 1, 0, 0, 1, 0, 2])
    scores = np.array([0.5, 0.9, 0.7, 0.5, 0.1, 0.2, 0.3])
    # k = 2: video 0 keeps 0.7 and both 0.5 (tied at its 2nd score); video 1 both; video 2 its one row.
    np.testing.assert_array_equal(executor._top_rows_of_videos(videos, scores, 2), [0, 1, 2, 3, 4, 6])
    np.testing.assert_array_equal(executor._top_rows_of_videos(videos, scores, 1), [1, 2, 6])


def test_sorted_rows_fill_several_buckets_each_sorted_by_video_and_class(tmp_path):
    _features(tmp_path)
    files = sorted(str(path) for path in (tmp_path / "features" / "Split-oof").glob("*.parquet"))
    rows = executor.sort_rows(
        files, ["video_id", "fold", "class_id", "target"], str(tmp_path / "scratch"), 4096
    )
    buckets = [pq.read_table(path).to_pandas() for path in rows.paths]
    assert len(buckets) > 3 and rows.videos == 90 and rows.folds == [0, 1, 2]
    for bucket in buckets:
        assert bucket.equals(bucket.sort_values(["video_id", "class_id"], ignore_index=True))
    everything = pd.concat(buckets, ignore_index=True)
    assert len(everything) == 720 and everything.groupby("video_id")["fold"].count().eq(8).all()
    assert sum(bucket["video_id"].nunique() for bucket in buckets) == 90  # each video in one bucket


def _shuffled(tmp_path, source: CandidateFeatures) -> CandidateFeatures:
    """The same features with the out-of-fold rows shuffled into three files of other sizes and names."""
    rows = pq.read_table(os.path.join(source.uri, "Split-oof")).to_pandas()
    rows = rows.sample(frac=1.0, random_state=7).reset_index(drop=True)
    shutil.copytree(source.uri, tmp_path / "features")
    for path in (tmp_path / "features" / "Split-oof").glob("*.parquet"):
        path.unlink()
    for part, chunk in enumerate(np.array_split(np.arange(len(rows)), [100, 450])):
        rows.iloc[chunk].to_parquet(
            tmp_path / "features" / "Split-oof" / f"shard-{2 - part}.parquet", index=False
        )
    features = CandidateFeatures()
    features.uri = str(tmp_path / "features")
    features.split_names = source.split_names
    for key in ("split_counts", "feature_columns", "model_names"):
        features.set_json_value_custom_property(key, source.get_json_value_custom_property(key))
    return features


def test_boosters_do_not_depend_on_the_order_of_files_or_rows(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(executor, "BUCKET_BYTES", 8192)  # several sort buckets, each written in several parts
    features = _features(tmp_path / "one")
    with caplog.at_level(logging.INFO, logger=executor.__name__):
        first = _run(tmp_path, "one", features)
        second = _run(tmp_path, "two", _shuffled(tmp_path / "two", features))
    buckets = [int(m) for m in re.findall(r"90 out-of-fold videos in (\d+) buckets", caplog.text)]
    assert len(buckets) == 2 and buckets[0] == buckets[1] > 3
    for fold in range(FOLDS):
        with open(os.path.join(first["model"].uri, f"fold_{fold}.txt"), "rb") as one:
            with open(os.path.join(second["model"].uri, f"fold_{fold}.txt"), "rb") as two:
                assert one.read() == two.read()
    keys = ["video_id", "class_id"]
    one = _scores(first["scores"], "oof").sort_values(keys, ignore_index=True)
    two = _scores(second["scores"], "oof").sort_values(keys, ignore_index=True)
    pd.testing.assert_frame_equal(one, two)
    assert os.listdir(first["model"].uri) == os.listdir(second["model"].uri)  # no scratch files left
    assert sorted(os.listdir(first["model"].uri)) == ["fold_0.txt", "fold_1.txt", "fold_2.txt", "folds.json"]
