"""Tests of trainer.metrics: hand-computed cases, tie policy, edge cases and a pure-python reference."""

from __future__ import annotations

import numpy as np
import pytest

from trainer import metrics

# 3 videos x 4 classes used by several hand-computed cases.
SCORES = np.array(
    [
        [0.9, 0.8, 0.1, 0.3],
        [0.2, 0.7, 0.6, 0.05],
        [0.4, 0.1, 0.5, 0.95],
    ]
)
LABELS = np.array(
    [
        [1, 0, 0, 1],
        [0, 1, 0, 0],
        [0, 0, 1, 0],
    ]
)


# ---------------------------------------------------------------- pure-python reference implementations


def _ranked(pairs: list[tuple[float, bool]]) -> list[bool]:
    """Relevance flags sorted by score descending, non-relevant first among ties (pessimistic)."""
    return [rel for _, rel in sorted(pairs, key=lambda p: (-p[0], p[1]))]


def _ap(relevance: list[bool], num_relevant: int) -> float:
    hits, total = 0, 0.0
    for rank, rel in enumerate(relevance, start=1):
        if rel:
            hits += 1
            total += hits / rank
    return total / num_relevant if num_relevant else 0.0


def ref_gap(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    pairs = []
    for s, y in zip(scores.tolist(), labels.tolist(), strict=True):
        top = sorted(range(len(s)), key=lambda c: (-s[c], c))[:k]
        pairs += [(s[c], bool(y[c])) for c in top]
    return _ap(_ranked(pairs), int(sum(map(sum, labels.tolist()))))


def ref_hit_at_one(scores: np.ndarray, labels: np.ndarray) -> float:
    hits = 0
    for s, y in zip(scores.tolist(), labels.tolist(), strict=True):
        hits += bool(y[min(range(len(s)), key=lambda c: (-s[c], c))])
    return hits / len(scores)


def ref_perr(scores: np.ndarray, labels: np.ndarray) -> float:
    precisions = []
    for s, y in zip(scores.tolist(), labels.tolist(), strict=True):
        n = int(sum(y))
        if n:
            ranked = _ranked([(s[c], bool(y[c])) for c in range(len(s))])
            precisions.append(sum(ranked[:n]) / n)
    return sum(precisions) / len(precisions) if precisions else 0.0


def ref_map(scores: np.ndarray, labels: np.ndarray) -> float:
    aps = []
    for c in range(scores.shape[1]):
        column = [(float(scores[v, c]), bool(labels[v, c])) for v in range(scores.shape[0])]
        positives = sum(rel for _, rel in column)
        if positives:
            aps.append(_ap(_ranked(column), positives))
    return sum(aps) / len(aps) if aps else 0.0


# ---------------------------------------------------------------- hand-computed cases


def test_gap_hand_case_with_labels_outside_top_k():
    # k=2 top pairs: v0 (0.9 R, 0.8 N), v1 (0.7 R, 0.6 N), v2 (0.95 N, 0.5 R); v0's label c3 (0.3) is outside.
    # Pooled: 0.95 N, 0.9 R, 0.8 N, 0.7 R, 0.6 N, 0.5 R -> precisions at hits 1/2, 2/4, 3/6 (sum 1.5).
    # Denominator: all 4 true labels -> GAP = 1.5 / 4 = 0.375.
    assert metrics.gap_at_k(SCORES, LABELS, k=2) == pytest.approx(0.375)


def test_gap_hand_case_all_classes():
    # k=4 adds 0.3 R (v0 c3) after 0.4 N: hits at ranks 2, 4, 6, 8 -> (1/2 + 2/4 + 3/6 + 4/8) / 4 = 0.5.
    assert metrics.gap_at_k(SCORES, LABELS, k=4) == pytest.approx(0.5)
    # k larger than the number of classes is the same as k = C.
    assert metrics.gap_at_k(SCORES, LABELS, k=20) == pytest.approx(0.5)


def test_gap_perfect_and_dtypes():
    labels = np.array([[1, 0, 0], [0, 0, 1]])
    scores = np.array([[0.9, 0.1, 0.2], [0.1, 0.2, 0.8]], dtype=np.float32)
    # Both true pairs are ranked first -> 1/1 + 2/2 over 2 labels = 1.0, whatever the label dtype.
    for y in (labels, labels.astype(bool), labels.astype(np.float32), labels.astype(np.uint8)):
        assert metrics.gap_at_k(scores, y, k=2) == pytest.approx(1.0)


def test_gap_pooled_ties_are_pessimistic():
    # k=1: v0 top (0.5, relevant), v1 top (0.5, not relevant): a pooled tie, 2 true labels in all.
    scores = np.array([[0.5, 0.2, 0.1], [0.5, 0.3, 0.1]])
    labels = np.array([[1, 0, 0], [0, 0, 1]])
    # Pessimistic order N, R: (1/2) / 2 = 0.25.  Optimistic order R, N would give (1/1) / 2 = 0.5.
    gap = metrics.gap_at_k(scores, labels, k=1)
    assert gap == pytest.approx(0.25)
    assert gap < 0.5
    # Independent of the order of the videos.
    assert metrics.gap_at_k(scores[::-1], labels[::-1], k=1) == pytest.approx(0.25)


def test_gap_top_k_selection_ignores_labels():
    # Classes 0 and 1 tie at 0.5 and k=1: class 0 is selected (lowest index), whichever one is the label.
    scores = np.array([[0.5, 0.5, 0.1]])
    assert metrics.gap_at_k(scores, np.array([[1, 0, 0]]), k=1) == pytest.approx(1.0)
    assert metrics.gap_at_k(scores, np.array([[0, 1, 0]]), k=1) == pytest.approx(0.0)


def test_gap_video_without_labels_adds_false_positives():
    # k=1: v1 has no label and predicts 0.9 -> pooled 0.9 N, 0.6 R -> (1/2) / 1 label = 0.5.
    scores = np.array([[0.6, 0.1], [0.9, 0.2]])
    labels = np.array([[1, 0], [0, 0]])
    assert metrics.gap_at_k(scores, labels, k=1) == pytest.approx(0.5)
    assert metrics.gap_at_k(scores[:1], labels[:1], k=1) == pytest.approx(1.0)


def test_all_zero_labels_give_zero():
    scores = np.random.default_rng(0).random((4, 5))
    labels = np.zeros((4, 5), dtype=np.int64)
    assert metrics.gap_at_k(scores, labels, k=2) == 0.0
    assert metrics.evaluate(scores, labels, k=2) == {"gap": 0.0, "hit_at_1": 0.0, "perr": 0.0, "map": 0.0}


def test_hit_at_one_hand_case():
    # Top classes: v0 c0 (true), v1 c1 (true), v2 c3 (false) -> 2/3.
    assert metrics.hit_at_one(SCORES, LABELS) == pytest.approx(2 / 3)


def test_hit_at_one_ties_use_lowest_class_index():
    scores = np.array([[0.5, 0.5, 0.1], [0.5, 0.5, 0.1]])
    labels = np.array([[1, 0, 0], [0, 1, 0]])
    # Both videos pick class 0: v0 hit, v1 miss -> 1/2; a video without labels counts as a miss.
    assert metrics.hit_at_one(scores, labels) == pytest.approx(0.5)
    assert metrics.hit_at_one(np.vstack([scores, scores[:1]]), np.vstack([labels, [[0, 0, 0]]])) == (
        pytest.approx(1 / 3)
    )


def test_perr_hand_case():
    # v0: n=2, top 2 = {c0 R, c1 N} -> 1/2; v1: n=1, top c1 R -> 1; v2: n=1, top c3 N -> 0. Mean = 0.5.
    assert metrics.perr(SCORES, LABELS) == pytest.approx(0.5)


def test_perr_ties_are_pessimistic_and_unlabelled_videos_skipped():
    # n=2, classes 0, 1 (true) and 2 (false) tie at 0.5: pessimistic top 2 = c2 N then one true -> 1/2.
    # Optimistic (or class-index) order would give 2/2 = 1.0.
    scores = np.array([[0.5, 0.5, 0.5, 0.1], [0.9, 0.8, 0.7, 0.6]])
    labels = np.array([[1, 1, 0, 0], [0, 0, 0, 0]])
    assert metrics.perr(scores, labels) == pytest.approx(0.5)  # video 1 has no label: skipped
    # Tie at the n-th score only partly inside: n=2, c0=0.9 (true), then c1 (true), c2 (false) tie at 0.5.
    # Top 2: c0 R, then the tied c2 N -> 1/2.
    assert metrics.perr(np.array([[0.9, 0.5, 0.5]]), np.array([[1, 1, 0]])) == pytest.approx(0.5)


def test_map_hand_case():
    # c0: [0.9 R, 0.4, 0.2] -> 1; c1: [0.8, 0.7 R, 0.1] -> 1/2; c2: [0.6, 0.5 R, 0.1] -> 1/2;
    # c3: [0.95, 0.3 R, 0.05] -> 1/2. MAP = (1 + 0.5 + 0.5 + 0.5) / 4 = 0.625.
    assert metrics.mean_average_precision(SCORES, LABELS) == pytest.approx(0.625)


def test_map_ties_are_pessimistic_and_empty_classes_skipped():
    # c0: videos 0 (true) and 1 (false) tie at 0.5 -> pessimistic rank 2 -> AP 1/2 (optimistic: 1.0).
    # c1: positives at 0.9 (rank 1) and 0.1 (rank 3) -> (1/1 + 2/3) / 2 = 5/6. c2 has no positive: skipped.
    # MAP = (1/2 + 5/6) / 2 = 2/3.
    scores = np.array([[0.5, 0.9, 0.3], [0.5, 0.2, 0.4], [0.1, 0.1, 0.2]])
    labels = np.array([[1, 1, 0], [0, 0, 0], [0, 1, 0]])
    assert metrics.mean_average_precision(scores, labels) == pytest.approx(2 / 3)


def test_evaluate_returns_all_metrics():
    result = metrics.evaluate(SCORES, LABELS, k=2)
    assert result == pytest.approx({"gap": 0.375, "hit_at_1": 2 / 3, "perr": 0.5, "map": 0.625})


def test_top_k_sorted_deterministic_and_typed():
    scores = np.array([[0.1, 0.7, 0.7, 0.3, 0.7], [0.4, 0.4, 0.4, 0.4, 0.4]])
    classes, values = metrics.top_k(scores, k=2)
    assert classes.dtype == np.int32 and values.dtype == np.float32
    np.testing.assert_array_equal(classes, [[1, 2], [0, 1]])
    np.testing.assert_allclose(values, [[0.7, 0.7], [0.4, 0.4]])
    classes, values = metrics.top_k(scores, k=4)
    np.testing.assert_array_equal(classes, [[1, 2, 4, 3], [0, 1, 2, 3]])
    np.testing.assert_allclose(values, [[0.7, 0.7, 0.7, 0.3], [0.4] * 4])
    assert metrics.top_k(scores, k=9)[0].shape == (2, 5)


@pytest.mark.parametrize("k", [1, 7, 150, 200])
def test_top_k_matches_reference_with_many_ties(k):
    scores = np.round(np.random.default_rng(k).random((4, 200)), 1)
    classes, values = metrics.top_k(scores, k=k)
    expected = [sorted(range(200), key=lambda c, s=s: (-s[c], c))[:k] for s in scores.tolist()]
    np.testing.assert_array_equal(classes, expected)
    np.testing.assert_array_equal(values, np.take_along_axis(scores, classes, axis=1).astype(np.float32))


# ---------------------------------------------------------------- random data against the reference


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("k", [5, 20])
@pytest.mark.parametrize("quantised", [False, True])
def test_matches_reference(seed, k, quantised):
    rng = np.random.default_rng(seed)
    scores = rng.random((50, 30))
    if quantised:  # many ties, both inside videos and in the pooled list
        scores = np.round(scores, 1)
    labels = (rng.random((50, 30)) < 0.1).astype(np.int64)
    labels[:5] = 0  # some videos without labels
    labels[5, 0] = 1
    result = metrics.evaluate(scores, labels, k=k)
    assert result["gap"] == pytest.approx(ref_gap(scores, labels, k), abs=1e-12)
    assert metrics.gap_at_k(scores, labels, k=k) == result["gap"]
    assert result["hit_at_1"] == pytest.approx(ref_hit_at_one(scores, labels), abs=1e-12)
    assert result["perr"] == pytest.approx(ref_perr(scores, labels), abs=1e-12)
    assert result["map"] == pytest.approx(ref_map(scores, labels), abs=1e-12)


def test_ties_lower_than_optimistic_on_random_data():
    rng = np.random.default_rng(7)
    scores = np.round(rng.random((50, 30)), 1)
    labels = (rng.random((50, 30)) < 0.1).astype(np.int64)
    # Optimistic tie-breaking (relevant first) can only be as good or better, and strictly is here.
    optimistic = scores + labels * 1e-9
    assert metrics.gap_at_k(scores, labels, k=5) < metrics.gap_at_k(optimistic, labels, k=5)
    assert metrics.perr(scores, labels) < metrics.perr(optimistic, labels)
    assert metrics.mean_average_precision(scores, labels) < metrics.mean_average_precision(optimistic, labels)


# ---------------------------------------------------------------- input validation


@pytest.mark.parametrize(
    ("score_shape", "label_shape"),
    [((3, 4), (3, 5)), ((3, 4), (4, 4)), ((4,), (4,)), ((2, 3, 4), (2, 3, 4))],
)
@pytest.mark.parametrize(
    "fn",
    [metrics.gap_at_k, metrics.hit_at_one, metrics.perr, metrics.mean_average_precision, metrics.evaluate],
)
def test_shape_errors(fn, score_shape, label_shape):
    with pytest.raises(ValueError) as excinfo:
        fn(np.zeros(score_shape), np.zeros(label_shape))
    assert str(score_shape) in str(excinfo.value) and str(label_shape) in str(excinfo.value)


def test_other_invalid_inputs():
    with pytest.raises(ValueError, match="only 0 and 1"):
        metrics.gap_at_k(SCORES, LABELS * 0.5)
    with pytest.raises(ValueError, match="NaN"):
        metrics.gap_at_k(np.where(LABELS == 1, np.nan, SCORES), LABELS)
    with pytest.raises(ValueError, match="k must be >= 1"):
        metrics.gap_at_k(SCORES, LABELS, k=0)
    with pytest.raises(ValueError, match=r"\(4,\)"):
        metrics.top_k(np.zeros(4))


def test_gap_from_candidates_equals_dense_gap():
    rng = np.random.default_rng(0)
    scores = rng.random((40, 25))
    labels = (rng.random((40, 25)) < 0.1).astype(int)
    labels[0] = 0
    videos, classes = np.nonzero(np.ones_like(scores))
    order = rng.permutation(videos.size)  # row order must not matter
    sparse = metrics.gap_from_candidates(
        videos[order].astype(str),
        classes[order],
        scores[videos, classes][order],
        labels[videos, classes][order],
        int(labels.sum()),
        k=5,
    )
    assert sparse == pytest.approx(metrics.gap_at_k(scores, labels, k=5), abs=1e-12)


def test_gap_from_candidates_counts_labels_without_rows():
    # video a: rows (c0 0.9 true), (c1 0.8 false); video b: row (c2 0.7 true); one more true label of b has
    # no row. Pooled: 0.9 T (p=1), 0.8 F, 0.7 T (p=2/3) -> (1 + 2/3) / 3 true labels = 0.5556
    gap = metrics.gap_from_candidates(
        np.array(["a", "a", "b"]),
        np.array([0, 1, 2]),
        np.array([0.9, 0.8, 0.7]),
        np.array([1, 0, 1]),
        3,
        k=20,
    )
    assert gap == pytest.approx((1 + 2 / 3) / 3)
