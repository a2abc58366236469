"""trainer.metrics.bootstrap_gaps: paired, seeded bootstrap of GAP@k over videos."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.metrics import bootstrap_gaps, gap_at_k


def _noisy_model(videos: int, seed: int = 0, classes: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """(scores, labels): about 2 labels a video, scores = label signal + uniform noise."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((videos, classes)) < 2 / classes).astype(np.float32)
    return 0.4 * labels + rng.random((videos, classes)), labels


def test_each_resample_is_the_gap_of_the_resampled_rows():
    scores, labels = _noisy_model(40)
    float16 = scores.astype(np.float16)  # ties inside and across rows
    coarse = np.round(scores * 4) / 4  # ties at the k-th score: blocks of a random share of true ones
    models = {"a": scores, "b": float16, "coarse": coarse}
    gaps = bootstrap_gaps(models, labels, k=5, resamples=6, seed=3)
    rows = np.random.default_rng(3).integers(0, 40, size=(6, 40))
    for r, resample in enumerate(rows):
        for name, model in models.items():  # one ranking, resamples as weights: equal up to summation order
            assert gaps[name][r] == pytest.approx(gap_at_k(model[resample], labels[resample], k=5), rel=1e-12)
    assert len(set(gaps["a"])) == 6  # the resamples differ


def test_the_interval_holds_the_point_estimate_and_narrows_with_more_videos():
    widths = []
    for videos in (100, 1600):
        scores, labels = _noisy_model(videos)
        gaps = bootstrap_gaps({"model": scores}, labels, resamples=300)["model"]
        low, high = np.percentile(gaps, [2.5, 97.5])
        assert low < gap_at_k(scores, labels) < high
        widths.append(high - low)
    assert widths[1] < widths[0] / 2.5  # ~ 1 / sqrt(16) = 1/4 of the width


def test_resamples_are_paired_and_seeded():
    scores, labels = _noisy_model(50)
    first = bootstrap_gaps({"a": scores, "copy": scores.copy()}, labels, resamples=20, seed=1)
    assert np.array_equal(first["a"], first["copy"])  # same rows for every model: differences are exactly 0
    again = bootstrap_gaps({"a": scores}, labels, resamples=20, seed=1)["a"]
    other = bootstrap_gaps({"a": scores}, labels, resamples=20, seed=2)["a"]
    assert np.array_equal(first["a"], again) and not np.array_equal(first["a"], other)


def test_labels_outside_every_top_k_still_count():
    labels = np.array([[1, 1, 1, 0], [1, 0, 0, 0]], np.float32)
    scores = np.array([[0.9, 0.1, 0.2, 0.8], [0.7, 0.3, 0.2, 0.1]])
    gaps = bootstrap_gaps({"m": scores}, labels, k=2, resamples=50)["m"]
    # Both rows drawn: pairs 0.9+ 0.8- 0.7+ 0.3- ; 4 labels -> (1 + 2/3) / 4.
    assert set(np.round(gaps, 6)) <= {round(v, 6) for v in (1 / 3, (1 + 2 / 3) / 4, 1.0)}
    assert gap_at_k(scores, labels, k=2) == pytest.approx((1 + 2 / 3) / 4)
