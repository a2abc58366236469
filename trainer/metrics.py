"""YouTube-8M evaluation metrics (GAP@k, Hit@1, PERR, MAP) in vectorised numpy.

Tie policy. Scores can tie (quantised or saturated outputs), and the 2nd-place solution's evaluation broke
ties in the predictor's favour. Here every metric is deterministic and never rewards a tie:

* choosing a video's own top classes (`top_k`, the top-k of GAP, the top class of Hit@1) looks only at the
  scores: equal scores are taken in ascending class order, never according to the labels;
* ranking that decides precision (GAP's pooled list, PERR's top-n, each class's ranking in MAP) is
  pessimistic: among equal scores the non-relevant items come first.
"""

from __future__ import annotations

import numpy as np


def _as_scores(scores: np.ndarray) -> np.ndarray:
    """Scores as a 2-D floating array (float inputs keep their precision, so no new ties), NaN rejected."""
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be a 2-D [videos, classes] array, got shape {scores.shape}")
    if not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float64)
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    return scores


def _validate(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Checks that scores and labels are 2-D of the same shape; returns (float scores, bool labels)."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    if scores.ndim != 2 or scores.shape != labels.shape:
        raise ValueError(
            f"scores and labels must be 2-D arrays of the same shape, got {scores.shape} and {labels.shape}"
        )
    if not ((labels == 0) | (labels == 1)).all():
        raise ValueError("labels must be multi-hot (only 0 and 1)")
    return _as_scores(scores), labels.astype(bool)


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")


def _top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of each row of validated scores: (class indexes, scores) in the scores' dtype, see `top_k`."""
    n, c = scores.shape
    k = min(k, c)
    if n == 0 or k == 0:
        return np.zeros((n, 0), np.int64), np.zeros((n, 0), scores.dtype)
    # The k-th largest score of each row; everything above it is in, ties at it are filled by class index.
    kth = np.partition(scores, c - k, axis=1)[:, c - k, None]
    chosen = scores > kth
    tied = scores == kth
    missing = k - chosen.sum(axis=1, keepdims=True)
    chosen |= tied & (np.cumsum(tied, axis=1, dtype=np.int32) <= missing)
    classes = np.nonzero(chosen)[1].reshape(n, k)  # exactly k per row, ascending class index
    values = np.take_along_axis(scores, classes, axis=1)
    order = np.argsort(-values, axis=1, kind="stable")
    return np.take_along_axis(classes, order, axis=1), np.take_along_axis(values, order, axis=1)


def _pessimistic_ap(positive_scores: np.ndarray, negative_scores: np.ndarray, num_relevant: int) -> float:
    """Sum of precision at each positive's rank / num_relevant, negatives ranked before equal positives.

    In the order (score descending, negatives first among ties) the i-th positive (1-based, positives
    by score descending) sits at rank i + #(negatives with score >= its score).
    """
    if num_relevant == 0 or positive_scores.size == 0:
        return 0.0
    positives = np.sort(positive_scores)[::-1]
    negatives = np.sort(negative_scores)
    negatives_before = negatives.size - np.searchsorted(negatives, positives, side="left")
    hits = np.arange(1, positives.size + 1)
    return float(np.sum(hits / (hits + negatives_before)) / num_relevant)


def _gap(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    classes, values = _top_k(scores, k)
    relevant = np.take_along_axis(labels, classes, axis=1)
    return _pessimistic_ap(values[relevant], values[~relevant], int(labels.sum()))


def _hit_at_one(scores: np.ndarray, labels: np.ndarray) -> float:
    if scores.shape[0] == 0:
        return 0.0
    top = np.argmax(scores, axis=1)  # first maximum: lowest class index among ties
    return float(labels[np.arange(labels.shape[0]), top].mean())


def _perr(scores: np.ndarray, labels: np.ndarray) -> float:
    counts = labels.sum(axis=1)
    labelled = counts > 0
    if not labelled.any():
        return 0.0
    scores, labels, counts = scores[labelled], labels[labelled], counts[labelled]
    # Score of each video's n-th best class (n = its number of labels).
    _, values = _top_k(scores, int(counts.max()))
    nth = values[np.arange(values.shape[0]), counts - 1][:, None]
    above = scores > nth
    # Slots left after the strictly better classes go to tied negatives first, then to tied positives.
    slots = counts - above.sum(axis=1)
    tied_negatives = ((scores == nth) & ~labels).sum(axis=1)
    hits = (above & labels).sum(axis=1) + np.maximum(slots - tied_negatives, 0)
    return float(np.mean(hits / counts))


def _map(scores: np.ndarray, labels: np.ndarray) -> float:
    positives_per_class = labels.sum(axis=0)
    classes = np.flatnonzero(positives_per_class)
    if classes.size == 0:
        return 0.0
    aps = [
        _pessimistic_ap(scores[labels[:, c], c], scores[~labels[:, c], c], int(positives_per_class[c]))
        for c in classes
    ]
    return float(np.mean(aps))


def top_k(scores: np.ndarray, k: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Per-row top-k: (class indexes int32 [N, k], scores float32 [N, k]), sorted by score descending.

    Deterministic: among equal scores the lower class index is selected and listed first. With k larger
    than the number of classes C, all C classes are returned.
    """
    _check_k(k)
    classes, values = _top_k(_as_scores(scores), k)
    return classes.astype(np.int32), values.astype(np.float32)


def gap_at_k(scores: np.ndarray, labels: np.ndarray, k: int = 20) -> float:
    """Global Average Precision at k, as the official youtube-8m eval_util.

    Each video's top-k (score, class) pairs (`top_k`: ties selected by class index, not by label) are pooled
    and sorted by score descending; GAP = sum_i precision(i) * rel(i) / (number of true labels of all
    videos, including those outside every top-k). Ties in the pooled list are pessimistic: non-relevant pairs
    come first. Videos without labels add only false positives; with no true labels at all GAP is 0.0.
    """
    _check_k(k)
    return _gap(*_validate(scores, labels), k)


def hit_at_one(scores: np.ndarray, labels: np.ndarray) -> float:
    """Share of all videos whose top class (lowest class index among tied maxima) is a true label."""
    return _hit_at_one(*_validate(scores, labels))


def perr(scores: np.ndarray, labels: np.ndarray) -> float:
    """Precision at equal recall rate: mean over videos with n >= 1 labels of the precision of their top n.

    Ties are pessimistic: classes tied at the n-th score fill the top n negatives first. Videos without
    labels are skipped; with none labelled PERR is 0.0.
    """
    return _perr(*_validate(scores, labels))


def mean_average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean over classes with >= 1 positive of the class's average precision over all videos.

    AP = sum over positives of the precision at the positive's rank / number of positives, ranking videos
    by score with pessimistic ties (negatives first). With no positive at all MAP is 0.0.
    """
    return _map(*_validate(scores, labels))


def evaluate(scores: np.ndarray, labels: np.ndarray, k: int = 20) -> dict[str, float]:
    """All metrics at once: {"gap": GAP@k, "hit_at_1": ..., "perr": ..., "map": ...}."""
    _check_k(k)
    scores, labels = _validate(scores, labels)
    return {
        "gap": _gap(scores, labels, k),
        "hit_at_1": _hit_at_one(scores, labels),
        "perr": _perr(scores, labels),
        "map": _map(scores, labels),
    }


def gap_from_candidates(
    video_ids: np.ndarray,
    class_ids: np.ndarray,
    scores: np.ndarray,
    relevant: np.ndarray,
    num_true_labels: int,
    k: int = 20,
) -> float:
    """GAP@k of sparse predictions: one row per scored (video, class) pair, all other classes scoring 0.

    `num_true_labels` counts every true label of the videos, including classes that have no row, so the
    result equals `gap_at_k` on the dense matrix whenever each video has at least k rows with positive scores.
    Per video the top k rows are taken by score, ties by class index; the pooled ranking is pessimistic.
    """
    _check_k(k)
    video_ids, class_ids = np.asarray(video_ids), np.asarray(class_ids)
    scores, relevant = np.asarray(scores, dtype=np.float64), np.asarray(relevant, dtype=bool)
    if not video_ids.shape == class_ids.shape == scores.shape == relevant.shape or video_ids.ndim != 1:
        raise ValueError("video_ids, class_ids, scores and relevant must be 1-D arrays of one length")
    if scores.size == 0:
        return 0.0
    order = np.lexsort((class_ids, -scores, video_ids))
    sorted_videos = video_ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_videos[1:] != sorted_videos[:-1]])
    rank = np.arange(order.size) - np.repeat(starts, np.diff(np.r_[starts, order.size]))
    kept = order[rank < k]
    return _pessimistic_ap(scores[kept][relevant[kept]], scores[kept][~relevant[kept]], num_true_labels)


def bootstrap_gaps(
    scores: dict[str, np.ndarray], labels: np.ndarray, k: int = 20, resamples: int = 1000, seed: int = 0
) -> dict[str, np.ndarray]:
    """GAP@k of every model [videos, classes] on the same `resamples` bootstrap resamples of the videos (rows
    drawn with replacement, seeded): paired, so a difference of two models is taken resample by resample.

    Each resample is scored by `gap_at_k` on its rows; to keep that cheap every model's rows are first cut
    to their top k scores plus one column per true label outside them (score -inf, never chosen), which
    leaves each row's top k and label count, hence the GAP of any set of rows, unchanged.
    """
    _check_k(k)
    labels = np.asarray(labels).astype(bool)
    rows = np.random.default_rng(seed).integers(0, labels.shape[0], size=(resamples, labels.shape[0]))
    gaps = {}
    for name, model_scores in scores.items():
        classes = top_k(model_scores, k)[0].astype(np.int64)
        kept = np.take_along_axis(np.asarray(model_scores), classes, axis=1)
        relevant = np.take_along_axis(labels, classes, axis=1)
        missed = labels.sum(axis=1) - relevant.sum(axis=1)
        padding = np.arange(missed.max(initial=0)) < missed[:, None]
        cut_scores = np.hstack([kept, np.full(padding.shape, -np.inf, kept.dtype)])
        cut_labels = np.hstack([relevant, padding])
        gaps[name] = np.array([gap_at_k(cut_scores[r], cut_labels[r], k) for r in rows])
    return gaps
