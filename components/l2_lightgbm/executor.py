"""Executor of L2LightGBM: per-fold LightGBM on the candidate features, OOF/holdout/test scores, metrics."""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pyarrow as pa
from tfx.dsl.components.base import base_executor
from tfx.types import artifact, standard_artifact_utils

from components.l2_lightgbm.config import LightGBMConfig, parse_lightgbm_config
from components.splits import HOLDOUT, OUT_OF_FOLD, TEST, check_split_counts
from components.uri_io import read_parquet_dir, write_json, write_parquet, write_text
from trainer.metrics import gap_from_candidates
from trainer.predictions import AVERAGED

log = logging.getLogger(__name__)
SCORE_COLUMNS = ["video_id", "fold", "class_id", "target", "num_labels", "score", "scored_by"]
_HASH_BUCKETS = 10_000


def read_split(features: artifact.Artifact, split: str) -> pd.DataFrame:
    """All Parquet rows of one split of an artifact."""
    return read_parquet_dir(standard_artifact_utils.get_split_uri([features], split)).to_pandas()


def in_validation_slice(video_ids: pd.Series, fraction: float, seed: int) -> np.ndarray:
    """A stable, seeded choice of whole videos (all their candidate rows) for early stopping."""
    hashed = pd.util.hash_array(video_ids.to_numpy(dtype=object), hash_key=f"yt8m{seed:012d}"[:16])
    return (hashed % _HASH_BUCKETS) < int(round(fraction * _HASH_BUCKETS))


def rows_gap(rows: pd.DataFrame, scores: np.ndarray, k: int) -> float:
    """GAP@k of candidate rows scored `scores`; the denominator counts every true label of their videos."""
    num_true_labels = int(rows.drop_duplicates("video_id")["num_labels"].sum())
    return gap_from_candidates(
        rows["video_id"].to_numpy(),
        rows["class_id"].to_numpy(),
        scores,
        rows["target"].to_numpy(),
        num_true_labels,
        k,
    )


def train_fold(
    rows: pd.DataFrame, feature_columns: list[str], config: LightGBMConfig, fold: int
) -> tuple[lgb.Booster, dict[str, Any]]:
    """A LightGBM booster on the rows of every fold but `fold`, early-stopped on a slice of their videos.
    Rows are sorted first: bagging draws rows by position, and Beam's joins fix no order."""
    training = rows[rows["fold"] != fold].sort_values(["video_id", "class_id"], kind="stable")
    validation = in_validation_slice(training["video_id"], config.validation_fraction, config.seed + fold)
    params = config.lightgbm_params()

    def dataset(part: pd.DataFrame, reference=None) -> lgb.Dataset:
        return lgb.Dataset(
            part[feature_columns],
            label=part["target"],
            categorical_feature=["class_id"],
            reference=reference,
            free_raw_data=True,
        )

    train_set = dataset(training[~validation])
    valid_set = dataset(training[validation], reference=train_set)
    booster = lgb.train(
        params,
        train_set,
        num_boost_round=config.num_boost_round,
        valid_sets=[valid_set],
        callbacks=[lgb.early_stopping(config.early_stopping_rounds, verbose=False)],
    )
    info = {
        "fold": fold,
        "train_folds": sorted(int(f) for f in training["fold"].unique()),
        "train_rows": int((~validation).sum()),
        "validation_rows": int(validation.sum()),
        "best_iteration": int(booster.best_iteration),
    }
    return booster, info


def _write_scores(output: artifact.Artifact, split: str, rows: pd.DataFrame, scores, scored_by) -> None:
    table = rows[["video_id", "fold", "class_id", "target", "num_labels"]].assign(
        score=np.asarray(scores, np.float32), scored_by=np.asarray(scored_by, np.int32)
    )
    path = os.path.join(output.uri, f"Split-{split}", "scores.parquet")
    write_parquet(pa.Table.from_pandas(table[SCORE_COLUMNS], preserve_index=False), path)


class Executor(base_executor.BaseExecutor):
    def Do(  # noqa: N802 (TFX API)
        self,
        input_dict: dict[str, list[artifact.Artifact]],
        output_dict: dict[str, list[artifact.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        config = parse_lightgbm_config(exec_properties["config_yaml"], exec_properties["config_source"])
        k = exec_properties["gap_k"]
        features = input_dict["features"][0]
        scores_out, model_out, metrics_out = (output_dict[key][0] for key in ("scores", "model", "metrics"))
        feature_columns = features.get_json_value_custom_property("feature_columns")
        model_names = features.get_json_value_custom_property("model_names")
        available = standard_artifact_utils.decode_split_names(features.split_names)
        oof = read_split(features, OUT_OF_FOLD)
        averaged = {split: read_split(features, split) for split in (HOLDOUT, TEST) if split in available}
        videos = {split: rows["video_id"].nunique() for split, rows in {OUT_OF_FOLD: oof, **averaged}.items()}
        check_split_counts(features, videos)
        folds = sorted(int(f) for f in oof["fold"].unique())

        oof_scores = np.zeros(len(oof), np.float32)
        oof_scored_by = np.full(len(oof), AVERAGED, np.int32)
        averaged_scores = {split: np.zeros(len(rows)) for split, rows in averaged.items()}
        fold_gap, fold_models = {}, {}
        for fold in folds:
            booster, info = train_fold(oof, feature_columns, config, fold)
            held_out = (oof["fold"] == fold).to_numpy()
            oof_scores[held_out] = booster.predict(
                oof.loc[held_out, feature_columns], num_iteration=booster.best_iteration
            )
            oof_scored_by[held_out] = fold
            for split, rows in averaged.items():
                averaged_scores[split] += booster.predict(
                    rows[feature_columns], num_iteration=booster.best_iteration
                )
            write_text(
                os.path.join(model_out.uri, f"fold_{fold}.txt"),
                booster.model_to_string(num_iteration=booster.best_iteration),
            )
            fold_gap[str(fold)] = rows_gap(oof[held_out], oof_scores[held_out], k)
            fold_models[str(fold)] = info
            log.info(
                "L2 fold %d: best iteration %d, OOF GAP@%d %.4f",
                fold,
                info["best_iteration"],
                k,
                fold_gap[str(fold)],
            )

        _write_scores(scores_out, OUT_OF_FOLD, oof, oof_scores, oof_scored_by)
        for split, rows in averaged.items():
            _write_scores(scores_out, split, rows, averaged_scores[split] / len(folds), AVERAGED)
        scores_out.split_names = standard_artifact_utils.encode_split_names([OUT_OF_FOLD, *averaged])
        scores_out.set_json_value_custom_property("fold_models", fold_models)

        report: dict[str, Any] = {"k": k, "fold_gap": fold_gap, "oof_gap": rows_gap(oof, oof_scores, k)}
        if HOLDOUT in averaged:
            holdout = averaged[HOLDOUT]
            report["holdout_gap"] = rows_gap(holdout, averaged_scores[HOLDOUT] / len(folds), k)
            report["l1_holdout_gap"] = {
                name: rows_gap(holdout, holdout[column].to_numpy(), k)
                for name, column in zip(
                    model_names, _score_columns(feature_columns, model_names), strict=True
                )
            }
            report["best_l1_holdout_gap"] = max(report["l1_holdout_gap"].values())
        folds_info = {"feature_columns": feature_columns, "folds": fold_models}
        write_json(os.path.join(model_out.uri, "folds.json"), folds_info)
        write_json(os.path.join(metrics_out.uri, "metrics.json"), report)
        for key, value in report.items():
            metrics_out.set_json_value_custom_property(key, value)
        log.info("L2 stage report: %s", json.dumps(report))


def _score_columns(feature_columns: list[str], model_names: list[str]) -> list[str]:
    """The `score_<model>` feature column of each model, in model order."""
    columns = [
        c
        for c in feature_columns
        if c.startswith("score_") and c not in {"score_mean", "score_max", "score_std"}
    ]
    if len(columns) != len(model_names):
        raise ValueError(f"expected one score column per model {model_names}, got {columns}")
    return columns
