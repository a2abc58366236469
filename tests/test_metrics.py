"""Tests of trainer.metrics: hand-computed official definitions, the tie rule (exact expectation over the
order of equal scores, checked by enumerating the orders), an independent official implementation on untied
data, and the effect of float16 storage."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from trainer import metrics

# 3 videos x 4 classes used by several hand-computed cases (no ties).
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


# ---------------------------------------------------------------- the official algorithm, written plainly


def official_ap(scores: list[float], relevant: list[bool], num_positives: int) -> float:
    """average_precision_calculator.ap_at_n(n=None): sum of precision at each hit / num_positives."""
    if num_positives == 0:
        return 0.0
    total, hits = 0.0, 0
    for rank, index in enumerate(np.argsort(-np.asarray(scores), kind="stable"), start=1):
        if relevant[index]:
            hits += 1
            total += hits / rank
    return total / num_positives


def official_top_k_pairs(scores: np.ndarray, labels: np.ndarray, k: int) -> list[tuple[int, float, bool]]:
    """eval_util.top_k_by_class before grouping: (class, score, label) of each video's argpartition top k."""
    k = min(k, scores.shape[1])
    pairs = []
    for row, truth in zip(scores, labels, strict=True):
        pairs += [(int(c), float(row[c]), bool(truth[c])) for c in np.argpartition(row, -k)[-k:]]
    return pairs


def official_gap(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    pairs = official_top_k_pairs(scores, labels, k)
    return official_ap([s for _, s, _ in pairs], [y for _, _, y in pairs], int(labels.sum()))


def official_hit_at_one(scores: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(labels[np.arange(len(labels)), np.argmax(scores, axis=1)]))


def official_perr(scores: np.ndarray, labels: np.ndarray) -> float:
    total = 0.0
    for row, truth in zip(scores, labels, strict=True):
        n = int(truth.sum())
        top = np.argpartition(row, -n)[-n:]  # n = 0 gives every class, none of them a label
        total += sum(truth[c] for c in top if row[c] > 0) / top.size
    return total / len(scores)


def official_map(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    pairs = official_top_k_pairs(scores, labels, k)
    aps = []
    for c in range(scores.shape[1]):
        if labels[:, c].sum() > 0:  # filter_empty_classes: positives counted over all videos
            mine = [(s, y) for cls, s, y in pairs if cls == c]
            aps.append(official_ap([s for s, _ in mine], [y for _, y in mine], int(labels[:, c].sum())))
    return float(np.mean(aps))


# ---------------------------------------------------------------- the tie rule by enumeration


def tie_orders(scores: list[float]) -> list[list[int]]:
    """Every ranking of `scores` (indexes, score descending), differing only in the order of equal scores."""
    runs = [[i for i in range(len(scores)) if scores[i] == s] for s in sorted(set(scores), reverse=True)]
    return [sum(map(list, choice), []) for choice in itertools.product(*map(itertools.permutations, runs))]


def mean_ap_over_tie_orders(scores: list[float], relevant: list[bool], num_positives: int) -> float:
    orders = tie_orders(scores)
    return float(
        np.mean(
            [official_ap(list(range(len(o), 0, -1)), [relevant[i] for i in o], num_positives) for o in orders]
        )
    )


def top_choices(row: np.ndarray, k: int) -> list[list[int]]:
    """Every top-k class set a random order of the equal scores of `row` can produce (each equally likely)."""
    return sorted({tuple(sorted(order[:k])) for order in tie_orders(row.tolist())})


def enumerated_gap(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    values = []
    for choice in itertools.product(*(top_choices(row, k) for row in scores)):
        pairs = [(scores[v, c], bool(labels[v, c])) for v, classes in enumerate(choice) for c in classes]
        values.append(
            mean_ap_over_tie_orders([s for s, _ in pairs], [y for _, y in pairs], int(labels.sum()))
        )
    return float(np.mean(values))


def enumerated_perr(scores: np.ndarray, labels: np.ndarray) -> float:
    per_video = []
    for row, truth in zip(scores, labels, strict=True):
        n = int(truth.sum())
        hits = [sum(truth[c] and row[c] > 0 for c in top) for top in top_choices(row, max(n, 1))]
        per_video.append(np.mean(hits) / n if n else 0.0)
    return float(np.mean(per_video))


def enumerated_hit_at_one(scores: np.ndarray, labels: np.ndarray) -> float:
    return float(
        np.mean(
            [
                np.mean([truth[top[0]] for top in top_choices(row, 1)])
                for row, truth in zip(scores, labels, strict=True)
            ]
        )
    )


def enumerated_map(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """MAP's class lists from top-k by class index among ties at the k-th place (the documented exception)."""
    aps = []
    for c in range(scores.shape[1]):
        if labels[:, c].sum():
            videos = [
                v
                for v in range(len(scores))
                if c in sorted(range(scores.shape[1]), key=lambda j, v=v: (-scores[v, j], j))[:k]
            ]
            aps.append(
                mean_ap_over_tie_orders(
                    [scores[v, c] for v in videos],
                    [bool(labels[v, c]) for v in videos],
                    int(labels[:, c].sum()),
                )
            )
    return float(np.mean(aps))


# ---------------------------------------------------------------- hand-computed cases, no ties


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
    # Both true pairs are ranked first -> 1/1 + 2/2 over 2 labels = 1.0, whatever the dtypes.
    for y in (labels, labels.astype(bool), labels.astype(np.float32), labels.astype(np.uint8)):
        assert metrics.gap_at_k(scores, y, k=2) == pytest.approx(1.0)
    assert metrics.gap_at_k(scores.astype(np.float16), labels, k=2) == pytest.approx(1.0)


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
    # Official calculate_hit_at_one has no score > 0 condition: a negative top score that is a label hits.
    assert metrics.hit_at_one(np.array([[-1.0, -2.0]]), np.array([[1, 0]])) == 1.0


def test_perr_hand_case_counts_unlabelled_videos():
    # v0: n=2, top 2 = {c0 R, c1 N} -> 1/2; v1: n=1, top c1 R -> 1; v2: n=1, top c3 N -> 0. Mean = 0.5.
    assert metrics.perr(SCORES, LABELS) == pytest.approx(0.5)
    # A 4th video without labels counts 0 (official divides by all videos): 1.5 / 4 = 0.375.
    scores = np.vstack([SCORES, [[0.9, 0.1, 0.2, 0.3]]])
    assert metrics.perr(scores, np.vstack([LABELS, [[0, 0, 0, 0]]])) == pytest.approx(0.375)


def test_perr_counts_only_positive_scores():
    # v0: n=2, top 2 = c2 (0.5, R) and c0 (0.0, R): c0's score is not > 0, so 1 hit -> 1/2.
    # v1: n=1, top c1 (-0.5, R): not > 0 -> 0. Mean over 2 videos = 0.25.
    scores = np.array([[0.0, -1.0, 0.5], [-1.0, -0.5, -2.0]])
    labels = np.array([[1, 0, 1], [0, 1, 0]])
    assert metrics.perr(scores, labels) == pytest.approx(0.25)


def test_map_hand_case_uses_top_k_pairs_only():
    # k=2 top pairs: v0 c0 0.9 R, c1 0.8 N; v1 c1 0.7 R, c2 0.6 N; v2 c3 0.95 N, c2 0.5 R.
    # c0: [0.9 R] -> 1/1 over 1 positive = 1.  c1: [0.8 N, 0.7 R] -> (1/2) / 1 = 0.5.
    # c2: [0.6 N, 0.5 R] -> 0.5.  c3: [0.95 N]; its positive (v0, 0.3) is outside v0's top 2 -> 0 / 1 = 0.
    # MAP = (1 + 0.5 + 0.5 + 0) / 4 = 0.5 (over every video's score, MAP would be 0.625).
    assert metrics.mean_average_precision(SCORES, LABELS, k=2) == pytest.approx(0.5)
    # k=4 keeps every pair: c0 1, c1 1/2, c2 [0.6 N, 0.5 R, 0.1 N] 1/2, c3 [0.95 N, 0.3 R, 0.05 N] 1/2
    # -> 0.625.
    assert metrics.mean_average_precision(SCORES, LABELS, k=4) == pytest.approx(0.625)


def test_map_skips_classes_without_positives_and_keeps_unranked_ones():
    # k=1: v0 top c1 (0.9 R), v1 top c1 (0.8 N), v2 top c2 (0.7 N).
    # c0 has a positive (v1) but is never in a top 1 -> AP 0.  c1: [0.9 R, 0.8 N] -> 1/1 over 1 positive = 1.
    # c2: no positive anywhere -> skipped although it is ranked.  MAP = (0 + 1) / 2 = 0.5.
    scores = np.array([[0.1, 0.9, 0.2], [0.3, 0.8, 0.1], [0.1, 0.2, 0.7]])
    labels = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0]])
    assert metrics.mean_average_precision(scores, labels, k=1) == pytest.approx(0.5)


def test_evaluate_returns_all_metrics():
    result = metrics.evaluate(SCORES, LABELS, k=2)
    assert result == pytest.approx({"gap": 0.375, "hit_at_1": 2 / 3, "perr": 0.5, "map": 0.5})


# ---------------------------------------------------------------- hand-computed cases with ties


def test_gap_pooled_tie_is_the_mean_over_both_orders():
    # k=1: v0 top (0.5, R), v1 top (0.5, N): a pooled tie, 2 true labels in all.
    # Order R, N: (1/1) / 2 = 0.5; order N, R: (1/2) / 2 = 0.25; expectation 0.375.
    # (The official seeded shuffle returns one of 0.25 and 0.5; the old pessimistic rule always 0.25.)
    scores = np.array([[0.5, 0.2, 0.1], [0.5, 0.3, 0.1]])
    labels = np.array([[1, 0, 0], [0, 0, 1]])
    assert metrics.gap_at_k(scores, labels, k=1) == pytest.approx(0.375)
    assert metrics.gap_at_k(scores[::-1], labels[::-1], k=1) == pytest.approx(0.375)


def test_gap_tied_run_after_higher_pairs():
    # k=1 pooled: 0.9 R, then a run of three 0.5 pairs (R, R, N), 3 labels.
    # First hit: 1/1.  In the run (ranks 2..4, 3! orders, each pair of places equally likely to hold the Rs):
    # places {2,3}: 2/2 + 3/3 = 2; {2,4}: 2/2 + 3/4 = 1.75; {3,4}: 2/3 + 3/4 = 17/12; mean = 31/18.
    # GAP = (1 + 31/18) / 3 = 49/54.
    scores = np.array([[0.9, 0.1], [0.5, 0.1], [0.5, 0.1], [0.5, 0.1]])
    labels = np.array([[1, 0], [1, 0], [1, 0], [0, 0]])
    assert metrics.gap_at_k(scores, labels, k=1) == pytest.approx(49 / 54)


def test_gap_top_k_choice_among_tied_classes():
    # k=1, classes 0 and 1 tie at 0.5: each is v0's top 1 with probability 1/2 -> GAP 1 or 0 -> 0.5,
    # whichever of them is the label (the old class-index rule gave 1.0 for c0 and 0.0 for c1).
    scores = np.array([[0.5, 0.5, 0.1]])
    assert metrics.gap_at_k(scores, np.array([[1, 0, 0]]), k=1) == pytest.approx(0.5)
    assert metrics.gap_at_k(scores, np.array([[0, 1, 0]]), k=1) == pytest.approx(0.5)


def test_gap_top_k_choice_is_hypergeometric():
    # k=2, three classes (R, R, N) tie at 0.5, 2 labels. The 2 chosen are {R, R} with probability 1/3 and
    # {R, N} with 2/3.  {R, R}: (1/1 + 2/2) / 2 = 1.  {R, N}: pooled order R, N -> 1/2, N, R -> 1/4; mean 3/8.
    # GAP = 1/3 * 1 + 2/3 * 3/8 = 7/12.  (Treating the number of chosen Rs as fixed at its mean 4/3
    # would give 5/9: the variance of the draw matters.)
    scores = np.array([[0.5, 0.5, 0.5, 0.1]])
    labels = np.array([[1, 1, 0, 0]])
    assert metrics.gap_at_k(scores, labels, k=2) == pytest.approx(7 / 12)


def test_hit_at_one_tied_maxima():
    # v0: c0 (R), c1 (N) tie -> 1/2.  v1: c0 (N), c1 (R), c2 (R) tie -> 2/3.  v2: no label -> 0.
    scores = np.array([[0.5, 0.5, 0.1], [0.5, 0.5, 0.5], [0.5, 0.5, 0.1]])
    labels = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 0]])
    assert metrics.hit_at_one(scores, labels) == pytest.approx((1 / 2 + 2 / 3 + 0) / 3)


def test_perr_ties_at_the_nth_score():
    # n=2, classes 0, 1 (R) and 2 (N) tie at 0.5 for 2 places: expected hits 2 * 2/3 -> precision 2/3.
    assert metrics.perr(np.array([[0.5, 0.5, 0.5, 0.1]]), np.array([[1, 1, 0, 0]])) == pytest.approx(2 / 3)
    # n=2, c0 = 0.9 (R) is in; c1 (R) and c2 (N) tie at 0.5 for 1 place: 1 + 1/2 hits -> 3/4.
    assert metrics.perr(np.array([[0.9, 0.5, 0.5]]), np.array([[1, 1, 0]])) == pytest.approx(3 / 4)
    # The same tie at score 0: tied classes never count (score not > 0) -> 1 hit -> 1/2.
    assert metrics.perr(np.array([[0.9, 0.0, 0.0]]), np.array([[1, 1, 0]])) == pytest.approx(1 / 2)


def test_map_ties_in_a_class_list():
    # c0: v0 (R) and v1 (N) tie at 0.5 -> orders R, N: 1; N, R: 1/2 -> AP 3/4.
    # c1: positives at 0.9 (rank 1) and 0.1 (rank 3) -> (1/1 + 2/3) / 2 = 5/6.  c2: no positive, skipped.
    # MAP = (3/4 + 5/6) / 2 = 19/24.
    scores = np.array([[0.5, 0.9, 0.3], [0.5, 0.2, 0.4], [0.1, 0.1, 0.2]])
    labels = np.array([[1, 1, 0], [0, 0, 0], [0, 1, 0]])
    assert metrics.mean_average_precision(scores, labels) == pytest.approx(19 / 24)


def test_gap_from_candidates_with_ties():
    # Video a: rows c0 0.9 (R), c1 0.5 (N); video b: c2 0.5 (R); b has one more label without a row: 3 labels.
    # k=1: a's top c0, b's top c2 -> 0.9 R, 0.5 R -> (1 + 1) / 3 = 2/3.
    # k=2: 0.9 R, then 0.5 N and 0.5 R tied -> second hit at rank 2 or 3: (1 + (2/2 + 2/3) / 2) / 3 = 11/18.
    args = (np.array(["a", "a", "b"]), np.array([0, 1, 2]), np.array([0.9, 0.5, 0.5]), np.array([1, 0, 1]), 3)
    assert metrics.gap_from_candidates(*args, k=1) == pytest.approx(2 / 3)
    assert metrics.gap_from_candidates(*args, k=2) == pytest.approx(11 / 18)


# ---------------------------------------------------------------- the tie rule against enumeration


@pytest.mark.parametrize("seed", range(4))
def test_tie_rule_equals_the_mean_over_all_tie_orders(seed):
    rng = np.random.default_rng(seed)
    scores = rng.choice([0.0, 0.2, 0.5, 0.5, 0.9], size=(3, 4))
    scores[0, :3] = 0.5  # a tie straddling the k-th place
    labels = (rng.random((3, 4)) < 0.4).astype(int)
    labels[0, :2] = [1, 0]
    labels[2] = 0  # a video without labels
    assert metrics.gap_at_k(scores, labels, k=2) == pytest.approx(
        enumerated_gap(scores, labels, 2), abs=1e-12
    )
    assert metrics.hit_at_one(scores, labels) == pytest.approx(
        enumerated_hit_at_one(scores, labels), abs=1e-12
    )
    assert metrics.perr(scores, labels) == pytest.approx(enumerated_perr(scores, labels), abs=1e-12)
    expected_map = enumerated_map(scores, labels, 2)
    assert metrics.mean_average_precision(scores, labels, k=2) == pytest.approx(expected_map, abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_gap_from_candidates_equals_dense_gap_with_ties(seed):
    rng = np.random.default_rng(seed)
    scores = np.round(rng.random((40, 25)), 1) + 0.01  # many ties, all positive
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


# ---------------------------------------------------------------- streaming: TopRows batch by batch


def _tied_case(seed: int, videos: int = 120, classes: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Scores with ties within and across videos (rounded, many exact zeros), labels with unlabelled videos
    and videos holding more labels than k."""
    rng = np.random.default_rng(seed)
    scores = np.round(rng.random((videos, classes)) ** 3, 2)
    labels = (rng.random((videos, classes)) < 0.08).astype(int)
    labels[:5] = 0
    labels[5:8, :12] = 1
    scores[8:10] = 0.0  # every class tied
    return scores, labels


def _batched_rows(scores: np.ndarray, labels: np.ndarray, cuts) -> list[metrics.TopRows]:
    """TopRows at k=5 of the batches `np.split` makes at `cuts`."""
    batches = zip(np.split(scores, cuts), np.split(labels, cuts), strict=True)
    return [metrics.top_rows(batch_scores, batch_labels, k=5) for batch_scores, batch_labels in batches]


@pytest.mark.parametrize("seed", range(3))
def test_top_rows_streamed_in_batches_give_the_one_pass_metrics(seed):
    scores, labels = _tied_case(seed)
    cuts = np.sort(np.random.default_rng(seed).choice(np.arange(1, len(scores)), 6, replace=False))
    parts = _batched_rows(scores, labels, cuts)
    streamed = metrics.evaluate_rows(metrics.concatenate(parts))
    whole = metrics.evaluate(scores, labels, k=5)
    assert streamed == pytest.approx(whole, abs=1e-12)
    assert whole == pytest.approx(
        {
            "gap": metrics.gap_at_k(scores, labels, k=5),
            "hit_at_1": metrics.hit_at_one(scores, labels),
            "perr": metrics.perr(scores, labels),
            "map": metrics.mean_average_precision(scores, labels, k=5),
        },
        abs=1e-12,
    )
    order = np.random.default_rng(seed).permutation(len(scores))
    reordered = metrics.evaluate_rows(metrics.concatenate(parts).take(order))
    assert reordered == pytest.approx(metrics.evaluate(scores[order], labels[order], k=5), abs=1e-12)


def test_top_rows_hold_k_rows_a_video_whatever_the_number_of_classes():
    rng = np.random.default_rng(0)
    sizes = []
    for classes in (100, 3862):
        labels = np.zeros((30, classes), int)
        labels[:, :3] = 1
        labels[0, :25] = 1  # 25 labels: PERR looks 25 deep for this video
        rows = metrics.top_rows(rng.random((30, classes)), labels, k=20)
        sizes.append((rows.classes.size, rows.label_classes.size))
    assert sizes == [(29 * 20 + 25, 29 * 3 + 25)] * 2


def test_bootstrap_of_streamed_rows_equals_the_dense_bootstrap():
    scores, labels = _tied_case(1, videos=60)
    parts = _batched_rows(scores, labels, 4)
    streamed = metrics.bootstrap_gaps_of_rows({"m": metrics.concatenate(parts)}, resamples=30, seed=4)["m"]
    dense = metrics.bootstrap_gaps({"m": scores}, labels, k=5, resamples=30, seed=4)["m"]
    assert np.allclose(streamed, dense, rtol=0, atol=1e-12) and len(set(dense)) > 20


# ---------------------------------------------------------------- the official algorithm on untied data


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(("num_videos", "num_classes", "k"), [(300, 30, 5), (500, 100, 20), (40, 10, 20)])
def test_matches_the_official_algorithm_without_ties(seed, num_videos, num_classes, k):
    rng = np.random.default_rng(seed)
    labels = (rng.random((num_videos, num_classes)) < 0.08).astype(int)
    labels[:5] = 0  # videos without labels
    scores = rng.random((num_videos, num_classes)) + 0.5 * labels - 0.2  # some scores <= 0
    assert np.unique(scores).size == scores.size
    result = metrics.evaluate(scores, labels, k=k)
    assert result["gap"] == pytest.approx(official_gap(scores, labels, k), abs=1e-12)
    assert result["hit_at_1"] == pytest.approx(official_hit_at_one(scores, labels), abs=1e-12)
    assert result["perr"] == pytest.approx(official_perr(scores, labels), abs=1e-12)
    assert result["map"] == pytest.approx(official_map(scores, labels, k), abs=1e-12)
    assert metrics.gap_at_k(scores, labels, k=k) == result["gap"]
    assert metrics.mean_average_precision(scores, labels, k=k) == result["map"]


# ---------------------------------------------------------------- stored precision


def _realistic_predictions(num_videos: int, num_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sigmoid outputs of noisy logits: 1 + Poisson(2) labels a video, label logits raised by 8."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((num_videos, num_classes), bool)
    for video in range(num_videos):
        labels[video, rng.choice(num_classes, size=1 + rng.poisson(2), replace=False)] = True
    logits = rng.normal(-9.0, 2.0, labels.shape) + 8.0 * labels
    return (1 / (1 + np.exp(-logits))).astype(np.float32), labels


@pytest.mark.parametrize(("num_videos", "num_classes"), [(3000, 100), (2000, 3862)])
def test_float16_ties_move_gap_by_less_than_1e4(num_videos, num_classes):
    scores, labels = _realistic_predictions(num_videos, num_classes, seed=num_classes)
    stored = scores.astype(np.float16)
    top = np.sort(stored, axis=1)[:, -20:]
    assert np.unique(top).size < 0.2 * top.size  # the pooled top-20 scores tie a lot
    gap = metrics.gap_at_k(scores, labels)
    assert 0.5 < gap < 0.99
    moved = abs(metrics.gap_at_k(stored, labels) - gap)
    assert moved < 1e-4
    # The tie rule is what makes this hold: ranking wrong labels first among equal float16 scores (the old
    # pessimistic rule; float32 steps are far below float16 ones, so only ties are reordered) costs more.
    pessimistic = stored.astype(np.float32) - np.spacing(stored.astype(np.float32)) * labels
    assert gap - metrics.gap_at_k(pessimistic, labels) > 5 * moved


# ---------------------------------------------------------------- top_k and input validation


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
    for bad in (np.nan, np.inf, -np.inf):
        with pytest.raises(ValueError, match="NaN or infinity"):
            metrics.gap_from_candidates(np.array(["a"]), np.array([0]), np.array([bad]), np.array([1]), 1)
    with pytest.raises(ValueError, match="k must be >= 1"):
        metrics.gap_at_k(SCORES, LABELS, k=0)
    with pytest.raises(ValueError, match=r"\(4,\)"):
        metrics.top_k(np.zeros(4))
