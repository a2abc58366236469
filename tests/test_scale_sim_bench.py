"""benchmarks/scale_sim_bench.py's disk check: the estimate per video, refusal before anything is written."""

from __future__ import annotations

import shutil

import pytest

from benchmarks.scale_sim_bench import check_disk, disk_by_stage, estimated_bytes


def test_each_stage_holds_the_inputs_every_output_so_far_and_its_own_scratch():
    # 2 models, 10 classes, 1 tower: K <= min(10, 2 x 20) = 10 candidates, dense scores 4 x 10 = 40 B a model;
    # inputs 5000 + 2 x 40 = 5080 B a video. Outputs: merged 10 x (16 + 4), features 10 x (16 + 60), scores
    # 10 x 30, student examples 7500, head examples 6000 + 40, the L1 sum 40.
    assert disk_by_stage(1, 2, 10, 1) == {
        "merge": 5080 + 200 + 5080,  # the inputs' shard copy
        "features": 5080 + 200 + 760,
        "lightgbm": 6040 + 300 + 2 * 760,  # unsorted and sorted buckets
        "soft_labels": 6340 + 7500 + 5000 + 300,  # fold examples and scores, sharded
        "head_examples": 13840 + 6040 + 7500 + 40,  # student examples and towers, sharded
        "evaluation": 19880 + 40,
    }
    assert estimated_bytes(1, 2, 10, 1) == 27420
    # 20 models x 3862 classes, 6 towers, K <= 400: L2Merge's inputs and their shard copy are the peak.
    per_video = 2 * (5000 + 4 * 3862 * 20) + 400 * (8 * 20 + 4)
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
