"""benchmarks/scale_sim_bench.py's disk check: the estimate per video, refusal before anything is written."""

from __future__ import annotations

import shutil

import pytest

from benchmarks.scale_sim_bench import check_disk, estimated_bytes


def test_estimate_counts_dense_scores_records_and_candidates_up_to_models_x_top_k():
    # 2 models, 10 classes, 1 tower: dense 4 x 10 x (2 + 1) = 120 B and their join shard copy, 3 records
    # of 1400 B, K <= min(10, 2 x 20) = 10 candidates of 24 x 2 + 154 = 202 B.
    assert estimated_bytes(1, 2, 10, 1) == 2 * 120 + 4200 + 10 * 202
    # 20 models x 3862 classes, 6 towers: K <= 400 candidates.
    per_video = 2 * 4 * 3862 * 26 + 4200 + 400 * (24 * 20 + 154)
    assert estimated_bytes(100_000, 20, 3862, 6) == 100_000 * per_video


def test_refuses_a_size_larger_than_the_free_disk_and_names_it(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    videos = free // estimated_bytes(1, 20, 3862, 6) + 1
    refusal = rf"{videos} videos x 20 models x 3862 classes need up to .* GB on disk, .* GB free"
    with pytest.raises(SystemExit, match=refusal):
        check_disk(tmp_path / "out", [10, videos], 20, 3862, 6)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_accepts_what_fits_and_returns_the_largest_sizes_estimate(tmp_path):
    assert check_disk(tmp_path, [10, 20], 20, 3862, 6) == estimated_bytes(20, 20, 3862, 6)
