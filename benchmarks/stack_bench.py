"""Stack diagnosis: why would the stack trail the best L1 model on the holdout? Measured on a finished run.

The L2 LightGBM trains on out-of-fold rows, whose L1 scores each come from one fold model, but the pipeline
scores holdout and test rows built from the 5-fold *averaged* L1 predictions. This benchmark retrains the
stack's per-fold boosters exactly as L2LightGBM does (same rows, config and early stopping) and scores the
holdout in several ways, all paired on the same videos:

- averaged: features from the fold-averaged L1 predictions, the boosters' mean (what the pipeline does);
- fold-matched: per fold k, features from every L1 model's fold-k predictions (the same distribution as the
  out-of-fold rows, with fold k's class prior), scored by booster k, the 5 probabilities averaged
  (candidates: union over folds and models of the top k, so each has 5 scores; or each fold's own
  candidates, a missing one counting 0);
- the plain mean of the L1 models' averaged predictions, and the best L1 model.

Then feature and capacity variants of the averaged stack, chosen on the L2's own out-of-fold GAP (the
holdout is printed beside it, not used to choose).

    python -m benchmarks.stack_bench --home HOME --pipeline NAME [--lightgbm configs/l2/lightgbm.yaml]
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
from pathlib import Path  # noqa: E402

import lightgbm as lgb  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from components.l2_features.executor import candidate_table, feature_columns, parquet_schema  # noqa: E402
from components.l2_lightgbm.config import LightGBMConfig, parse_lightgbm_config  # noqa: E402
from components.l2_lightgbm.executor import fit_booster, in_validation_slice  # noqa: E402
from components.l2_merge.executor import (  # noqa: E402
    MergedRecord,
    candidate_record,
    class_ranks,
    decode_merged,
)
from components.uri_io import read_parquet_dir  # noqa: E402
from trainer.metrics import bootstrap_gaps, gap_at_k, gap_from_candidates  # noqa: E402
from trainer.predictions import decode_prediction  # noqa: E402
from trainer.readers import read_records  # noqa: E402

TOP_K = 20


@dataclasses.dataclass
class Holdout:
    """The holdout videos of a run: labels, averaged and per-fold L1 scores, the stack's feature rows."""

    ids: list[str]
    labels: np.ndarray  # bool [videos, classes]
    averaged: np.ndarray  # [videos, models, classes]
    per_fold: np.ndarray  # [folds, videos, models, classes]
    rows: pd.DataFrame  # L2Features' holdout rows


def read_split(features, split: str) -> pd.DataFrame:
    """All candidate rows of one split of an L2Features artifact, read whole (a benchmark's sizes)."""
    return read_parquet_dir(f"{features.uri}/Split-{split}").to_pandas()


def _records(pattern: str):
    import tensorflow as tf

    return (record.numpy() for record in read_records(sorted(tf.io.gfile.glob(pattern))))


def load_run(home: Path, pipeline: str):
    """(model names, the L2Features artifact, out-of-fold feature rows, Holdout) of the latest run."""
    from tfx.types import artifact_utils

    from pipeline.metadata import open_store, property_value, run_executions

    store = open_store(str(home / "metadata.sqlite"))
    runs = run_executions(store, pipeline)

    def output(node: str, key: str):
        mlmd = runs[node].outputs[key][0]
        (artifact_type,) = store.get_artifact_types_by_id([mlmd.type_id])
        return artifact_utils.deserialize_artifact(artifact_type, mlmd)

    merged, features = output("L2Merge", "merged"), output("L2Features", "features")
    names = property_value(runs["L2Merge"].outputs["merged"][0], "model_names")
    classes = merged.get_int_custom_property("num_classes")
    folds = merged.get_int_custom_property("num_folds")
    records = [decode_merged(r) for r in _records(f"{merged.uri}/Split-holdout/*")]
    ids = [record.video_id for record in records]
    index = {video_id: row for row, video_id in enumerate(ids)}
    labels = np.zeros((len(ids), classes), bool)
    for row, record in enumerate(records):
        labels[row, list(record.labels)] = True

    def holdout_scores(node: str, out: np.ndarray) -> None:
        """Each holdout video's scores in `node`'s predictions, into its row of `out` [videos, classes]."""
        for record in _records(f"{output(node, 'predictions').uri}/Split-holdout/*"):
            video_id, _, scores = decode_prediction(record)
            out[index[video_id]] = scores

    per_fold = np.zeros((folds, len(ids), len(names), classes), np.float32)
    averaged = np.zeros((len(ids), len(names), classes), np.float32)  # not in the (sparse) merged records
    for m, name in enumerate(names):
        holdout_scores(f"L1Assemble_{name}", averaged[:, m])
        for k in range(folds):
            holdout_scores(f"L1Predict_{name}_fold{k}", per_fold[k, :, m])
    holdout = Holdout(ids, labels, averaged, per_fold, read_split(features, "holdout"))
    return names, read_split(features, "oof"), holdout


def dense(holdout: Holdout, rows: pd.DataFrame, scores: np.ndarray) -> np.ndarray:
    """Candidate-row scores as [videos, classes], 0 for classes without a row."""
    out = np.zeros(holdout.labels.shape, np.float64)
    index = {video_id: row for row, video_id in enumerate(holdout.ids)}
    np.add.at(out, (rows["video_id"].map(index).to_numpy(), rows["class_id"].to_numpy()), scores)
    return out


def fold_rows(
    holdout: Holdout, names, fold: int, priors: np.ndarray, candidates: np.ndarray | None
) -> pd.DataFrame:
    """Feature rows of the holdout from every L1 model's fold-`fold` predictions (like out-of-fold rows);
    candidates: bool [videos, classes], or None for each video's own (union of the models' top k)."""
    records = []
    for row, video_id in enumerate(holdout.ids):
        labels, scores = tuple(np.flatnonzero(holdout.labels[row])), holdout.per_fold[fold, row]
        if candidates is None:
            records.append(candidate_record(video_id, fold, labels, scores, TOP_K))
        else:
            classes = np.flatnonzero(candidates[row]).astype(np.int32)
            ranks = class_ranks(scores)[:, classes]
            records.append(MergedRecord(video_id, fold, labels, classes, scores[:, classes], ranks))
    table, _ = candidate_table(records, TOP_K, priors, parquet_schema(names))
    return table.to_pandas()


def fold_priors(oof: pd.DataFrame, classes: int, folds: int) -> np.ndarray:
    """The prior table L2Features used: row k for fold k's out-of-fold rows, the last row for all folds."""
    table = np.zeros((folds + 1, classes), np.float32)
    for k in range(folds):
        prior = oof[oof["fold"] == k].groupby("class_id")["prior"].first()
        table[k, prior.index.to_numpy()] = prior.to_numpy()
    return table


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


def train_fold(rows: pd.DataFrame, columns: list[str], config: LightGBMConfig, fold: int) -> lgb.Booster:
    """L2LightGBM's booster for `fold` from rows in memory, sorted by (video_id, class_id): the executor's
    row order whenever its sort holds every out-of-fold row in one bucket (small runs)."""
    training = rows[rows["fold"] != fold].sort_values(["video_id", "class_id"], kind="stable")
    validation = in_validation_slice(training["video_id"], config.validation_fraction, config.seed + fold)

    def dataset(part: pd.DataFrame, reference=None):
        return lgb.Dataset(
            part[columns], label=part["target"], categorical_feature=["class_id"], reference=reference
        )

    train_set = dataset(training[~validation])
    return fit_booster(train_set, dataset(training[validation], reference=train_set), config)


def boosters(oof: pd.DataFrame, columns: list[str], config: LightGBMConfig, folds: int):
    return [train_fold(oof, columns, config, k) for k in range(folds)]


def _predict(booster, rows: pd.DataFrame, columns: list[str]) -> np.ndarray:
    return booster.predict(rows[columns], num_iteration=booster.best_iteration)


def holdout_variants(names, oof: pd.DataFrame, holdout: Holdout, config: LightGBMConfig) -> dict:
    """Holdout scores [videos, classes] of the best L1 model, the L1 mean and each way to score the stack."""
    folds = holdout.per_fold.shape[0]
    columns = feature_columns(names)
    models = boosters(oof, columns, config, folds)
    priors = fold_priors(oof, holdout.labels.shape[1], folds)
    union = np.zeros(holdout.labels.shape, bool)
    for k in range(folds):
        union |= (class_ranks(holdout.per_fold[k]) <= TOP_K).any(axis=1)
    matched_union = np.zeros(holdout.labels.shape)
    matched_own = np.zeros(holdout.labels.shape)
    for k in range(folds):
        rows = fold_rows(holdout, names, k, priors, union)
        matched_union += dense(holdout, rows, _predict(models[k], rows, columns)) / folds
        rows = fold_rows(holdout, names, k, priors, None)
        matched_own += dense(holdout, rows, _predict(models[k], rows, columns)) / folds
    l1 = {name: holdout.averaged[:, m] for m, name in enumerate(names)}
    best = max(l1, key=lambda name: rows_gap(oof, oof[f"score_{name}"].to_numpy(), TOP_K))
    averaged = np.mean([_predict(b, holdout.rows, columns) for b in models], axis=0)
    return {
        f"best L1 by OOF GAP ({best})": l1[best],
        "mean of L1 models": holdout.averaged.mean(axis=1),
        "stack, averaged features (pipeline)": dense(holdout, holdout.rows, averaged),
        "stack, fold-matched, union candidates": matched_union,
        "stack, fold-matched, own candidates": matched_own,
    }


def feature_variants(names, oof: pd.DataFrame, holdout: Holdout, config: LightGBMConfig) -> list[tuple]:
    """(variant, OOF GAP, holdout GAP) of feature/capacity variants of the averaged stack."""
    base = feature_columns(names)
    params = dict(config.params)
    variants = [
        ("pipeline features and config", base, config),
        ("without prior", [c for c in base if c != "prior"], config),
        ("without ranks", [c for c in base if not c.startswith("rank_")], config),
        (
            "learning rate 0.02, 15 leaves, 100 per leaf",
            base,
            dataclasses.replace(
                config,
                num_boost_round=max(config.num_boost_round, 3000),
                params={**params, "learning_rate": 0.02, "num_leaves": 15, "min_data_in_leaf": 100},
            ),
        ),
    ]
    results = []
    folds = holdout.per_fold.shape[0]
    for label, columns, variant_config in variants:
        models = boosters(oof, columns, variant_config, folds)
        oof_scores = np.zeros(len(oof))
        for k, booster in enumerate(models):
            held_out = (oof["fold"] == k).to_numpy()
            oof_scores[held_out] = _predict(booster, oof[held_out], columns)
        scores = np.mean([_predict(b, holdout.rows, columns) for b in models], axis=0)
        results.append((label, rows_gap(oof, oof_scores, TOP_K), rows_gap(holdout.rows, scores, TOP_K)))
        print(f"   {label}: OOF {results[-1][1]:.4f}, holdout {results[-1][2]:.4f}", flush=True)
    return results


def main(argv: list[str] | None = None) -> None:
    from benchmarks.common import print_table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--pipeline", required=True)
    parser.add_argument("--lightgbm", default="configs/l2/lightgbm.yaml")
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args(argv)
    config = parse_lightgbm_config(Path(args.lightgbm).read_text(), args.lightgbm)
    names, oof, holdout = load_run(args.home, args.pipeline)
    scores = holdout_variants(names, oof, holdout, config)
    gaps = bootstrap_gaps(scores, holdout.labels, TOP_K, args.resamples)
    reference = "stack, averaged features (pipeline)"
    rows = []
    for name, values in scores.items():
        difference = gaps[name] - gaps[reference]
        low, high = np.percentile(difference, [2.5, 97.5])
        point = gap_at_k(values, holdout.labels)
        rows.append(
            (name, point, point - gap_at_k(scores[reference], holdout.labels), f"[{low:+.4f}, {high:+.4f}]")
        )
    print_table(
        f"holdout ({len(holdout.ids)} videos): GAP@{TOP_K}, each minus the pipeline's stack with its "
        f"paired-bootstrap 95% interval ({args.resamples} resamples)",
        ("scoring", "GAP", "minus stack", "95% interval"),
        rows,
        lambda v: f"{v:+.4f}" if v < 0.5 else f"{v:.4f}",
    )
    print(f"\nfeature and capacity variants ({len(oof)} OOF rows; chosen on OOF, holdout only printed)")
    feature_variants(names, oof, holdout, config)


if __name__ == "__main__":
    main()
