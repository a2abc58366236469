"""YouTube-8M evaluation metrics (GAP@k, Hit@1, PERR, MAP) as the official google/youtube-8m code defines.

Definitions (eval_util.py, average_precision_calculator.py, and the MAP that eval.py reports):

* GAP@k: each video's top k (score, label) pairs are pooled and ranked by score; GAP = sum over the ranking of
  precision(i) * rel(i) / (number of true labels of all videos, including those outside every top k).
* Hit@1: share of all videos whose top class is a true label.
* PERR: mean over *all* videos (an unlabelled video counts 0) of the precision of the video's top n classes,
  n = its number of true labels; a top-n class counts as a hit only when its score is > 0.
* MAP: mean over the classes with at least one true label of the class's average precision over the
  (video, score) pairs in which the class is among the video's top k (eval.py's `top_k_by_class`, k = 20),
  normalised by the class's true labels in all videos (a class never in a top k has AP 0).

Tie rule. Equal scores stand in a uniformly random order, and every metric is its exact expectation over that
order. The official code orders ties arbitrarily but reproducibly (`argpartition` picks a video's top k, the
pooled pairs are shuffled with seed 0 before a stable sort), so its value is one draw from the distribution
whose mean is computed here; without ties both agree to rounding. In detail:

* choosing a video's top k (GAP), top n (PERR) or top class (Hit@1): when t classes tie at the k-th score for
  m remaining places, each is chosen with probability m / t (for GAP the hits chosen are hypergeometric);
* ranking (GAP's pooled list, each class's list in MAP): within a run of T equal scores holding R true
  pairs, precision contributions are averaged over the T! orders (`_expected_precision_sums`);
* exception: which of the classes tied at a video's k-th score enter MAP's class lists is decided by class
  index (lower first; label-blind, like `argpartition`). The expectation over that choice has no cheap
  closed form, because it makes each class list's length random; it touches only pairs tied at the k-th place.

Under this rule float16 scores (the L2Merge records) move GAP@20 by < 1e-4 against float32 on calibrated
sigmoid outputs (tests/test_metrics.py); saturated outputs lose their order in float16 whatever the rule,
so prediction records store float32 (trainer/predictions.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np


def _as_scores(scores: np.ndarray) -> np.ndarray:
    """Scores as a 2-D float32/float64 array (float16 is widened exactly, for speed), NaN rejected."""
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be a 2-D [videos, classes] array, got shape {scores.shape}")
    if not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float64)
    scores = scores.astype(np.result_type(scores.dtype, np.float32), copy=False)
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


def _kth_largest(scores: np.ndarray, ks: np.ndarray) -> np.ndarray:
    """The ks[v]-th largest score of each row v (1 <= ks <= number of classes), as a column [N, 1]."""
    num_classes = scores.shape[1]
    widest = int(ks.max())
    best = -np.sort(-np.partition(scores, num_classes - widest, axis=1)[:, num_classes - widest :], axis=1)
    return best[np.arange(scores.shape[0]), ks - 1][:, None]


def _expected_precision_sums(
    lists: np.ndarray, scores: np.ndarray, counts: np.ndarray, hits: np.ndarray, hit_variances: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Expected sum of precision(i) * rel(i) of each ranked list whose equal scores are in random order.

    Each entry is a block of `counts` items of one list and one score holding `hits` true items on average,
    with variance `hit_variances` (0 when known; blocks are independent). Blocks of one list and score form a
    run (`_run_precision_sums`). Returns (list ids, sums), one entry per list.
    """
    order = np.lexsort((-scores, lists))
    lists, scores = lists[order], scores[order]
    new_run = np.r_[True, (lists[1:] != lists[:-1]) | (scores[1:] != scores[:-1])]
    starts = np.flatnonzero(new_run)
    size, true, variance = (np.add.reduceat(x[order], starts) for x in (counts, hits, hit_variances))
    run_list = lists[starts]
    first_run = np.flatnonzero(np.r_[True, run_list[1:] != run_list[:-1]])
    per_run = _run_precision_sums(size, true, variance, first_run)
    list_ids, run_index = np.unique(run_list, return_inverse=True)
    return list_ids, np.bincount(run_index, weights=per_run, minlength=list_ids.size)


def _run_precision_sums(
    size: np.ndarray, true: np.ndarray, variance: np.ndarray, first_run: np.ndarray
) -> np.ndarray:
    """Expected sum of precision(i) * rel(i) over each run of equal scores, runs given in ranking order
    (lists one after another, list j's runs starting at first_run[j]; every size >= 1).

    A run of T items at ranks B+1..B+T (B items score higher, A of them true on average) holds R true items
    (mean `true`, variance `variance`). Over the random order, position i of the run is true with probability
    E[R]/T and positions i, j both with E[R(R-1)]/(T(T-1)), so the run adds
    E[R]/T * (E[A] + 1) * sum_i 1/(B+i) + E[R(R-1)]/(T(T-1)) * sum_i (i-1)/(B+i); A and R are independent
    (a video's random choice lies in one run).
    """
    runs_per_list = np.diff(np.r_[first_run, size.size])

    def items_before(x: np.ndarray) -> np.ndarray:  # sum of x over the runs above, within each list
        before = np.cumsum(x) - x
        return before - np.repeat(before[first_run], runs_per_list)

    above, true_above = items_before(size), items_before(true)
    # Every item's rank (above + i) and place in its run (i - 1), to sum 1/rank and (i - 1)/rank per run.
    size = size.astype(np.int64)
    run_starts = np.cumsum(size) - size
    place = np.arange(size.sum()) - np.repeat(run_starts, size)
    rank = np.repeat(above, size) + place + 1
    inverse_ranks = np.add.reduceat(1.0 / rank, run_starts)
    later_places = np.add.reduceat(place / rank, run_starts)
    true_pairs = variance + true * true - true  # E[R(R-1)]
    pair_share = np.divide(true_pairs, size * (size - 1.0), out=np.zeros_like(true), where=size > 1)
    return true / size * (true_above + 1) * inverse_ranks + pair_share * later_places


class _PooledPairs(NamedTuple):
    """GAP's pooled list: each entry a block of `counts` (video, class) pairs of one video and one score."""

    videos: np.ndarray  # the video code of each entry
    scores: np.ndarray  # float64
    counts: np.ndarray  # float64: 1, or the places left at a tied k-th score
    hits: np.ndarray  # float64: expected true pairs
    hit_variances: np.ndarray  # float64: 0, or the hypergeometric variance of a tied k-th score's block


def _pooled_pairs(videos: np.ndarray, scores: np.ndarray, relevant: np.ndarray, k: int) -> _PooledPairs:
    """Each video's top k of its scored (video, class) rows (videos: integer codes, scores float64, relevant
    bool), the rows tied at a video's k-th score for fewer places as one block."""
    order = np.lexsort((-scores, videos))
    videos, scores, relevant = videos[order], scores[order], relevant[order]
    starts = np.flatnonzero(np.r_[True, videos[1:] != videos[:-1]])
    sizes = np.diff(np.r_[starts, videos.size])
    kth = np.full(starts.size, -np.inf)
    kth[sizes >= k] = scores[starts[sizes >= k] + k - 1]
    video = np.repeat(np.arange(starts.size), sizes)
    above, tied = scores > kth[video], scores == kth[video]
    places = k - np.bincount(video, above, starts.size)
    num_tied = np.bincount(video, tied, starts.size)
    straddling = num_tied > places  # the k-th place is tied: `places` of the `num_tied` tied rows are chosen
    chosen = above | (tied & ~straddling[video])
    # A straddling video adds one block at its k-th score: `places` rows, hypergeometric number of true ones.
    tied_true = np.bincount(video, tied & relevant, starts.size)[straddling]
    draws, population, share = places[straddling], num_tied[straddling], tied_true / num_tied[straddling]
    block_variance = draws * share * (1 - share) * (population - draws) / (population - 1)
    return _PooledPairs(
        np.r_[videos[chosen], videos[starts[straddling]]],
        np.r_[scores[chosen], kth[straddling]],
        np.r_[np.ones(chosen.sum()), draws],
        np.r_[relevant[chosen].astype(float), draws * share],
        np.r_[np.zeros(chosen.sum()), block_variance],
    )


def _gap_of_rows(
    videos: np.ndarray, scores: np.ndarray, relevant: np.ndarray, num_true_labels: int, k: int
) -> float:
    """GAP@k of scored (video, class) rows (videos: integer codes, scores float64, relevant bool)."""
    if scores.size == 0 or num_true_labels == 0:
        return 0.0
    pairs = _pooled_pairs(videos, scores, relevant, k)
    _, sums = _expected_precision_sums(
        np.zeros(pairs.scores.size, np.int64), pairs.scores, pairs.counts, pairs.hits, pairs.hit_variances
    )
    return float(sums[0] / num_true_labels)


@dataclass(frozen=True)
class TopRows:
    """A model's scores on N videos as the metrics need them, in O(N * (k + labels)) memory instead of
    O(N * classes): each video's (class, score, true) rows at or above its max(k, labels)-th score, ties
    included, ordered by score descending then class; and each video's true classes. Built batch by batch
    (`top_rows`, `concatenate`), so a split is scored in one pass without a dense [N, classes] array."""

    num_classes: int
    k: int  # min(k, num_classes)
    row_starts: np.ndarray  # int64 [N + 1]: video v's rows are row_starts[v]:row_starts[v + 1]
    classes: np.ndarray  # int32 [rows]
    scores: np.ndarray  # float32 or float64 [rows]
    relevant: np.ndarray  # bool [rows]
    label_starts: np.ndarray  # int64 [N + 1]: video v's true classes are label_classes[label_starts[v]:...]
    label_classes: np.ndarray  # int32 [labels]

    @property
    def num_videos(self) -> int:
        return self.row_starts.size - 1

    @property
    def num_labels(self) -> np.ndarray:
        return np.diff(self.label_starts)

    def row_videos(self) -> np.ndarray:
        """The video (0..N-1) of every row."""
        return np.repeat(np.arange(self.num_videos), np.diff(self.row_starts))

    def take(self, videos: np.ndarray) -> TopRows:
        """The rows of `videos` (indexes, repeats allowed) in that order."""
        videos = np.asarray(videos, np.int64)
        rows = _segments(self.row_starts, videos)
        labels = _segments(self.label_starts, videos)
        return TopRows(
            self.num_classes,
            self.k,
            _starts(np.diff(self.row_starts)[videos]),
            self.classes[rows],
            self.scores[rows],
            self.relevant[rows],
            _starts(self.num_labels[videos]),
            self.label_classes[labels],
        )


def _starts(sizes: np.ndarray) -> np.ndarray:
    return np.r_[0, np.cumsum(sizes, dtype=np.int64)]


def _segments(starts: np.ndarray, videos: np.ndarray) -> np.ndarray:
    """Positions of the segments starts[v]:starts[v + 1] of `videos`, concatenated in that order."""
    sizes = (starts[1:] - starts[:-1])[videos]
    offsets = np.repeat(starts[:-1][videos] - _starts(sizes)[:-1], sizes)
    return offsets + np.arange(sizes.sum(), dtype=np.int64)


def top_rows(scores: np.ndarray, labels: np.ndarray, k: int = 20) -> TopRows:
    """The `TopRows` of dense scores and multi-hot labels [videos, classes] (a batch of a split, or all)."""
    _check_k(k)
    scores, labels = _validate(scores, labels)
    num_videos, num_classes = scores.shape
    k = min(k, num_classes)
    num_labels = labels.sum(axis=1)
    label_videos, label_classes = np.nonzero(labels)
    if scores.size == 0:
        videos = classes = np.zeros(0, np.int64)
    else:
        depth = np.maximum(k, num_labels)  # PERR looks num_labels deep; every metric sees at most this
        videos, classes = np.nonzero(scores >= _kth_largest(scores, depth))
    values = scores[videos, classes]
    order = np.lexsort((classes, -values, videos))
    videos, classes = videos[order], classes[order]
    return TopRows(
        num_classes,
        k,
        _starts(np.bincount(videos, minlength=num_videos)),
        classes.astype(np.int32),
        values[order],
        labels[videos, classes],
        _starts(num_labels),
        label_classes.astype(np.int32),
    )


def concatenate(parts: list[TopRows]) -> TopRows:
    """The videos of `parts`, one after the other."""
    if not parts:
        raise ValueError("no TopRows to concatenate")
    if len({(part.num_classes, part.k) for part in parts}) > 1:
        raise ValueError("TopRows of different num_classes or k")

    def joined(field: str) -> np.ndarray:
        return np.concatenate([getattr(part, field) for part in parts])

    return TopRows(
        parts[0].num_classes,
        parts[0].k,
        _starts(np.concatenate([np.diff(part.row_starts) for part in parts])),
        joined("classes"),
        joined("scores"),
        joined("relevant"),
        _starts(np.concatenate([part.num_labels for part in parts])),
        joined("label_classes"),
    )


def _expected_hits_at_depth(rows: TopRows, hits: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """Expected number of `hits` rows among each video's top depth[v] (<= its rows) under a random order of
    equal scores: rows above the depth-th score are in; t rows tied at it share the places left, each in
    with probability places / t."""
    video = rows.row_videos()
    kth = rows.scores[rows.row_starts[:-1] + depth - 1]
    above, tied = rows.scores > kth[video], rows.scores == kth[video]
    n = rows.num_videos
    places = depth - np.bincount(video, above, n)
    return np.bincount(video, above & hits, n) + places / np.bincount(video, tied, n) * np.bincount(
        video, tied & hits, n
    )


def top_rows_gap(rows: TopRows) -> float:
    """GAP at the rows' k."""
    return _gap_of_rows(
        rows.row_videos(), rows.scores.astype(np.float64), rows.relevant, int(rows.num_labels.sum()), rows.k
    )


def _hit_at_one(rows: TopRows) -> float:
    if rows.num_videos == 0 or rows.num_classes == 0:
        return 0.0
    return float(np.mean(_expected_hits_at_depth(rows, rows.relevant, np.ones(rows.num_videos, np.int64))))


def _perr(rows: TopRows) -> float:
    if rows.num_videos == 0 or rows.num_classes == 0:
        return 0.0
    top_n = np.maximum(rows.num_labels, 1)  # an unlabelled video has no hit, whatever n
    hits = rows.relevant & (rows.scores > 0)
    return float(np.mean(_expected_hits_at_depth(rows, hits, top_n) / top_n))


def _map(rows: TopRows) -> float:
    positives = np.bincount(rows.label_classes, minlength=rows.num_classes)
    if not positives.any():
        return 0.0
    # Each video's top k: its first k rows (score descending, then the lower class index among ties).
    place = np.arange(rows.classes.size) - np.repeat(rows.row_starts[:-1], np.diff(rows.row_starts))
    in_top_k = place < rows.k
    classes = rows.classes[in_top_k]
    sums = np.zeros(rows.num_classes)
    if classes.size:
        list_ids, list_sums = _expected_precision_sums(
            classes.astype(np.int64),
            rows.scores[in_top_k].astype(np.float64),
            np.ones(classes.size),
            rows.relevant[in_top_k].astype(float),
            np.zeros(classes.size),
        )
        sums[list_ids] = list_sums
    labelled = positives > 0
    return float(np.mean(sums[labelled] / positives[labelled]))


def evaluate_rows(rows: TopRows) -> dict[str, float]:
    """All metrics of `TopRows` at its k: {"gap", "hit_at_1", "perr", "map"} (see `evaluate`)."""
    return {"gap": top_rows_gap(rows), "hit_at_1": _hit_at_one(rows), "perr": _perr(rows), "map": _map(rows)}


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


def top_k(scores: np.ndarray, k: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Per-row top-k: (class indexes int32 [N, k], scores float32 [N, k]), sorted by score descending.

    Deterministic: among equal scores the lower class index is selected and listed first. With k larger
    than the number of classes C, all C classes are returned.
    """
    _check_k(k)
    classes, values = _top_k(_as_scores(scores), k)
    return classes.astype(np.int32), values.astype(np.float32)


def gap_at_k(scores: np.ndarray, labels: np.ndarray, k: int = 20) -> float:
    """Global Average Precision at k (official `calculate_gap`), the expectation over the order of ties.

    Videos without labels add only false positives; with no true label at all GAP is 0.0.
    """
    return top_rows_gap(top_rows(scores, labels, k))


def hit_at_one(scores: np.ndarray, labels: np.ndarray) -> float:
    """Share of all videos whose top class is a true label (tied maxima: the share of true ones)."""
    return _hit_at_one(top_rows(scores, labels, 1))


def perr(scores: np.ndarray, labels: np.ndarray) -> float:
    """Precision at equal recall rate, mean over all videos (unlabelled ones count 0; hits need score > 0)."""
    return _perr(top_rows(scores, labels, 1))


def mean_average_precision(scores: np.ndarray, labels: np.ndarray, k: int = 20) -> float:
    """MAP as the official eval.py reports it: per class over the videos' top-k pairs; 0.0 with no label."""
    return _map(top_rows(scores, labels, k))


def evaluate(scores: np.ndarray, labels: np.ndarray, k: int = 20) -> dict[str, float]:
    """All metrics at once: {"gap": GAP@k, "hit_at_1": ..., "perr": ..., "map": MAP over top-k pairs}."""
    return evaluate_rows(top_rows(scores, labels, k))


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
    Same computation and tie rule as `gap_at_k`.
    """
    _check_k(k)
    video_ids, class_ids = np.asarray(video_ids), np.asarray(class_ids)
    scores, relevant = np.asarray(scores, dtype=np.float64), np.asarray(relevant, dtype=bool)
    if not video_ids.shape == class_ids.shape == scores.shape == relevant.shape or video_ids.ndim != 1:
        raise ValueError("video_ids, class_ids, scores and relevant must be 1-D arrays of one length")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinity")
    videos = np.unique(video_ids, return_inverse=True)[1].ravel()
    return _gap_of_rows(videos, scores, relevant, num_true_labels, k)


def bootstrap_gaps(
    scores: dict[str, np.ndarray], labels: np.ndarray, k: int = 20, resamples: int = 1000, seed: int = 0
) -> dict[str, np.ndarray]:
    """GAP@k of every model [videos, classes] on the same `resamples` bootstrap resamples of the videos (rows
    drawn with replacement, seeded): paired, so a difference of two models is taken resample by resample."""
    return bootstrap_gaps_of_rows(
        {name: top_rows(s, labels, k) for name, s in scores.items()}, resamples, seed
    )


def bootstrap_gaps_of_rows(
    rows: dict[str, TopRows], resamples: int = 1000, seed: int = 0
) -> dict[str, np.ndarray]:
    """`bootstrap_gaps` of models given as `TopRows` of the same videos: each resample is the GAP of the
    resampled videos' rows, which hold everything their top k can (so it equals `gap_at_k` on the resampled
    dense rows). Time O(rows) a resample, no sort after the first (`_ResampledGap`); the models are taken one
    at a time, each on the same seeded draws, so beyond `rows` only one model's ranked pairs are held."""
    sizes = {part.num_videos for part in rows.values()}
    if len(sizes) > 1:
        raise ValueError(f"models scored on different numbers of videos: {sorted(sizes)}")
    num_videos = sizes.pop() if sizes else 0
    gaps = {}
    for name, part in rows.items():
        model, rng = _ResampledGap(part), np.random.default_rng(seed)
        copies = (
            np.bincount(rng.integers(0, num_videos, size=num_videos), minlength=num_videos)
            for _ in range(resamples)
        )
        gaps[name] = np.array([model.gap(drawn) for drawn in copies], np.float64)
    return gaps


class _ResampledGap:
    """GAP of one model's `TopRows` on resamples of its videos, its pooled pairs ranked once. A resample
    weighs every entry by the copies drawn of its video: copies are independent videos with equal scores, so
    their blocks join one run and add counts, expected hits and hit variances, as `_gap_of_rows` of the
    resampled rows would."""

    def __init__(self, rows: TopRows):
        pairs = _pooled_pairs(rows.row_videos(), rows.scores.astype(np.float64), rows.relevant, rows.k)
        order = np.argsort(-pairs.scores, kind="stable")
        self._videos = pairs.videos[order]
        self._blocks = np.stack([pairs.counts[order], pairs.hits[order], pairs.hit_variances[order]])
        scores = pairs.scores[order]
        self._run_starts = np.flatnonzero(np.r_[True, scores[1:] != scores[:-1]])
        self._num_labels = rows.num_labels

    def gap(self, copies: np.ndarray) -> float:
        """GAP of the resample that draws video v copies[v] times."""
        num_true_labels = int(copies @ self._num_labels)
        if self._videos.size == 0 or num_true_labels == 0:
            return 0.0
        size, true, variance = np.add.reduceat(copies[self._videos] * self._blocks, self._run_starts, axis=1)
        drawn = size > 0  # runs whose videos were all left out
        if not drawn.any():
            return 0.0
        sums = _run_precision_sums(size[drawn], true[drawn], variance[drawn], np.zeros(1, np.int64))
        return float(sums.sum() / num_true_labels)
