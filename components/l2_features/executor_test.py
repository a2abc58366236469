"""L2Features on a hand-made merged artifact: candidates, ranks, summaries and leave-own-fold-out priors."""

from __future__ import annotations

import os
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
from tfx.types import standard_artifact_utils

from components.artifacts import CandidateFeatures, MergedPredictions
from components.l2_features import executor
from components.l2_features.executor import Executor, model_columns, parquet_schema
from components.l2_merge.executor import candidate_record, class_ranks, encode_merged
from trainer.metrics import top_k
from trainer.predictions import AVERAGED
from trainer.records import InputDataError

MODELS = ["resnet.a", "gru"]
TOP_K = 2
# Model "resnet.a" ties classes 1 and 3 at the top and (video b) every class; "gru" ties 1 and 5 at rank 2/3.
SCORES_A = [[0.5, 0.75, 0.125, 0.75, 0.25, 0.0], [0.25, 0.5, 0.0, 0.125, 0.875, 0.5]]
SCORES_B = [[0.0] * 6, [0.125, 0.25, 0.375, 0.5, 0.625, 0.75]]
VIDEOS = {  # split: [(video id, fold, labels, scores)]
    "oof": [("a", 0, (1, 4), SCORES_A), ("b", 1, (0, 1, 2, 5), SCORES_B)],
    "holdout": [("h", AVERAGED, (2, 3), SCORES_A)],
    "test": [("t", AVERAGED, (), SCORES_B)],
}
COLUMNS = [
    "video_id",
    "fold",
    "class_id",
    "target",
    "num_labels",
    "score_resnet_a",
    "rank_resnet_a",
    "score_gru",
    "rank_gru",
    "score_mean",
    "score_max",
    "score_std",
    "topk_count",
    "prior",
]
# top_k = 2. Video a: resnet.a's top 2 = {1, 3} (tie at 0.75, rank by class), gru's = {4, 1} -> {1, 3, 4}.
# Video b: resnet.a ties everything -> {0, 1}; gru's = {5, 4} -> {0, 1, 4, 5}.
# Priors: a (fold 0) sees only fold 1's labels (b: 0 1 2 5), b (fold 1) only fold 0's (a: 1 4); 1 video each.
EXPECTED_OOF = [
    ("a", 0, 1, 1, 2, 0.75, 1, 0.5, 2, 0.625, 0.75, 0.125, 2, 1.0),
    ("a", 0, 3, 0, 2, 0.75, 2, 0.125, 5, 0.4375, 0.75, 0.3125, 1, 0.0),
    ("a", 0, 4, 1, 2, 0.25, 4, 0.875, 1, 0.5625, 0.875, 0.3125, 1, 0.0),
    ("b", 1, 0, 1, 4, 0.0, 1, 0.125, 6, 0.0625, 0.125, 0.0625, 1, 0.0),
    ("b", 1, 1, 1, 4, 0.0, 2, 0.25, 5, 0.125, 0.25, 0.125, 1, 1.0),
    ("b", 1, 4, 0, 4, 0.0, 5, 0.625, 2, 0.3125, 0.625, 0.3125, 1, 1.0),
    ("b", 1, 5, 1, 4, 0.0, 6, 0.75, 1, 0.375, 0.75, 0.375, 1, 0.0),
]
# Holdout and test priors use both folds (2 videos): class 0: 1/2, 1: 2/2, 2: 1/2, 3: 0, 4: 1/2, 5: 1/2.
EXPECTED_HOLDOUT = [  # (class_id, target, num_labels, prior)
    (1, 0, 2, 1.0),
    (3, 1, 2, 0.0),
    (4, 0, 2, 0.5),
]
EXPECTED_TEST = [(0, 0, 0, 0.5), (1, 0, 0, 1.0), (4, 0, 0, 0.5), (5, 0, 0, 0.5)]


def _merged(root, lost=()) -> MergedPredictions:
    """L2Merge's output at top_k = TOP_K, one file per video; the files of the `lost` videos are gone."""
    artifact = MergedPredictions()
    artifact.uri = str(root)
    artifact.split_names = standard_artifact_utils.encode_split_names(list(VIDEOS))
    artifact.set_json_value_custom_property("model_names", MODELS)
    artifact.set_int_custom_property("num_classes", 6)
    artifact.set_int_custom_property("num_folds", 2)
    artifact.set_int_custom_property("top_k", TOP_K)
    artifact.set_json_value_custom_property("split_counts", {s: len(videos) for s, videos in VIDEOS.items()})
    for split, videos in VIDEOS.items():
        os.makedirs(root / f"Split-{split}")
        for video_id, fold, labels, scores in videos:
            if video_id not in lost:
                with tf.io.TFRecordWriter(str(root / f"Split-{split}" / f"{video_id}.gz"), "GZIP") as writer:
                    dense = np.array(scores, np.float32)
                    writer.write(encode_merged(candidate_record(video_id, fold, labels, dense, TOP_K)))
    return artifact


def _features(root) -> CandidateFeatures:
    """L2Features on `_merged`'s records, under `root`."""
    output = CandidateFeatures()
    output.uri = str(root / "features")
    Executor().Do({"merged": [_merged(root / "merged")]}, {"features": [output]}, {})
    return output


@pytest.fixture(scope="module")
def features(tmp_path_factory) -> CandidateFeatures:
    return _features(tmp_path_factory.mktemp("l2_features"))


def _table(features: CandidateFeatures, split: str) -> pa.Table:
    table = pq.read_table(standard_artifact_utils.get_split_uri([features], split))
    return table.sort_by([("video_id", "ascending"), ("class_id", "ascending")])


def test_oof_rows_match_the_hand_computed_features(features):
    table = _table(features, "oof")
    assert table.schema.equals(parquet_schema(MODELS))
    assert table.column_names == COLUMNS
    rows = [tuple(row.values()) for row in table.to_pylist()]
    assert rows == [pytest.approx(expected) for expected in EXPECTED_OOF]


@pytest.mark.parametrize(
    ("split", "video_id", "expected"), [("holdout", "h", EXPECTED_HOLDOUT), ("test", "t", EXPECTED_TEST)]
)
def test_holdout_and_test_rows_use_priors_of_all_folds(features, split, video_id, expected):
    rows = _table(features, split).to_pylist()
    assert {(row["video_id"], row["fold"]) for row in rows} == {(video_id, AVERAGED)}
    assert [(r["class_id"], r["target"], r["num_labels"], r["prior"]) for r in rows] == expected


def test_properties_report_columns_recall_and_rows(features):
    assert features.get_json_value_custom_property("model_names") == MODELS
    assert features.get_int_custom_property("top_k") == 2
    assert features.get_json_value_custom_property("feature_columns") == [
        c for c in COLUMNS if c not in ("video_id", "fold", "target", "num_labels")
    ]
    # oof: a has both labels among its candidates, b 3 of 4 (class 2 is nobody's top 2); holdout: 1 of 2.
    assert features.get_json_value_custom_property("candidate_recall") == {
        "oof": pytest.approx(5 / 6),
        "holdout": pytest.approx(1 / 2),
    }
    assert features.get_json_value_custom_property("rows") == {"oof": 7, "holdout": 3, "test": 4}
    assert features.get_json_value_custom_property("split_counts") == {"oof": 2, "holdout": 1, "test": 1}
    assert standard_artifact_utils.decode_split_names(features.split_names) == ["oof", "holdout", "test"]


def test_merged_predictions_that_lost_a_file_fail_naming_the_artifact_split_and_counts(tmp_path):
    merged = _merged(tmp_path / "merged", lost=["b"])
    output = CandidateFeatures()
    output.uri = str(tmp_path / "features")
    message = f"{merged.uri}: split oof holds 1 videos, its producer recorded 2: files were lost"
    with pytest.raises(InputDataError, match=re.escape(message)):
        Executor().Do({"merged": [merged]}, {"features": [output]}, {})


def test_ranks_agree_with_the_metrics_top_k_on_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=(50, 12)).astype(np.float32) / 4  # many ties
    classes, _ = top_k(scores, 3)
    ranks = class_ranks(scores)
    for row, chosen in zip(ranks, classes, strict=True):
        assert np.flatnonzero(row <= 3).tolist() == sorted(chosen.tolist())
        assert row[chosen].tolist() == [1, 2, 3]


def test_model_names_are_sanitized_and_must_not_clash():
    assert model_columns(["l1/resnet-a.v2"]) == [("score_l1_resnet_a_v2", "rank_l1_resnet_a_v2")]
    with pytest.raises(ValueError, match="score_a_b"):
        model_columns(["a-b", "a.b"])
    with pytest.raises(ValueError, match="score_mean"):
        model_columns(["mean"])


def _reference_ranks(scores: np.ndarray) -> np.ndarray:
    """1-based ranks from a stable argsort of -scores (float32), one class at a time."""
    ranks = np.empty(scores.shape, np.int32)
    for row, order in zip(ranks, np.argsort(-scores.astype(np.float32), axis=-1, kind="stable"), strict=True):
        for rank, c in enumerate(order.tolist(), start=1):
            row[c] = rank
    return ranks


def test_ranks_match_a_stable_argsort_on_special_float32_values():
    tiny, huge = np.finfo(np.float32).smallest_subnormal, np.finfo(np.float32).max
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, tiny, -tiny, huge, -huge], np.float32)
    rng = np.random.default_rng(1)
    # 0.99990 and 0.99995 are one float16 value: float32 ranks must keep them apart
    values = np.concatenate([special, [0.5, 0.25, -0.5, 0.99990, 0.99995]]).astype(np.float32)
    scores = rng.choice(values, size=(200, 9))
    assert np.array_equal(class_ranks(scores), _reference_ranks(scores))


def _reference_rows(
    video_id: str, fold: int, labels: tuple[int, ...], scores: np.ndarray, k: int, priors: np.ndarray
) -> list[tuple]:
    """A video's rows from its dense [models, classes] scores as L2Features built them before the merged
    records became sparse: ranks over all classes, candidates = union of every model's top k, one candidate
    at a time in plain Python (float32 arithmetic as numpy's)."""
    ranks = _reference_ranks(scores)
    candidates = sorted({c for row in ranks for c in np.flatnonzero(row <= k).tolist()})
    picked = scores[:, candidates]  # [models, candidates], as the executor lays them out
    prior = priors[-1] if fold == AVERAGED else priors[fold]
    rows = []
    for j, c in enumerate(candidates):
        per_model = [v for m in range(scores.shape[0]) for v in (scores[m, c], ranks[m, c])]
        summary = (picked.mean(axis=0)[j], picked.max(axis=0)[j], picked.std(axis=0)[j])
        count = int((ranks[:, c] <= k).sum())
        rows.append(
            (video_id, fold, c, int(c in labels), len(set(labels)), *per_model, *summary, count, prior[c])
        )
    return rows


def test_rows_from_sparse_records_equal_the_dense_reference_on_random_data(tmp_path, monkeypatch):
    num_models, num_classes, num_folds, k = 3, 30, 3, 4
    rng = np.random.default_rng(7)
    videos: dict[str, list] = {"oof": [], "holdout": [], "test": []}
    for i in range(60):
        split = "oof" if i < 40 else "holdout" if i < 50 else "test"
        fold = i % num_folds if split == "oof" else AVERAGED
        labels = () if split == "test" else tuple(rng.integers(0, num_classes, rng.integers(1, 5)).tolist())
        scores = (rng.integers(0, 12, (num_models, num_classes)) / 11).astype(np.float16)  # ties
        scores[0, :3] = -0.0
        videos[split].append((f"v{i:02d}", fold, labels, scores.astype(np.float32)))
    root = tmp_path / "merged"
    merged = MergedPredictions()
    merged.uri = str(root)
    merged.split_names = standard_artifact_utils.encode_split_names(list(videos))
    merged.set_json_value_custom_property("model_names", ["m0", "m1", "m2"])
    merged.set_int_custom_property("num_classes", num_classes)
    merged.set_int_custom_property("num_folds", num_folds)
    merged.set_int_custom_property("top_k", k)
    merged.set_json_value_custom_property("split_counts", {"oof": 40, "holdout": 10, "test": 10})
    for split, split_videos in videos.items():
        os.makedirs(root / f"Split-{split}")
        with tf.io.TFRecordWriter(str(root / f"Split-{split}" / "part.gz"), "GZIP") as writer:
            for video in split_videos:
                writer.write(encode_merged(candidate_record(*video, k)))
    # Priors: class frequency among the OOF videos of the other folds (all folds for holdout and test).
    counts = np.zeros((num_folds + 1, num_classes))
    totals = np.zeros(num_folds + 1)
    for _, fold, labels, _ in videos["oof"]:
        for row in [*(f for f in range(num_folds) if f != fold), num_folds]:
            totals[row] += 1
            counts[row, sorted(set(labels))] += 1
    priors = (counts / totals[:, None]).astype(np.float32)

    # batches of 7 videos (at most num_models x k candidates each)
    monkeypatch.setattr(executor, "_BATCH_SCORES", 7 * num_models * num_models * k)
    output = CandidateFeatures()
    output.uri = str(tmp_path / "features")
    Executor().Do({"merged": [merged]}, {"features": [output]}, {})
    for split, split_videos in videos.items():
        expected = [row for video in split_videos for row in _reference_rows(*video, k, priors)]
        table = _table(output, split)
        assert table.schema.equals(parquet_schema(["m0", "m1", "m2"]))
        assert [tuple(row.values()) for row in table.to_pylist()] == sorted(expected, key=lambda r: r[:3])
    assert output.get_json_value_custom_property("rows") == {
        split: sum(len(_reference_rows(*video, k, priors)) for video in split_videos)
        for split, split_videos in videos.items()
    }
    assert output.get_json_value_custom_property("split_counts") == {"oof": 40, "holdout": 10, "test": 10}
