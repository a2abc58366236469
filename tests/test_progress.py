"""Progress lines: one per node, from the records TFX's runners log through absl's logger."""

from __future__ import annotations

import logging
import re

from pipeline.progress import node_progress

TFX = logging.getLogger("absl")


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "yt8m"]


def test_one_line_per_node_says_whether_it_ran_was_cached_or_skipped(caplog):
    caplog.set_level(logging.INFO, logger="yt8m")
    with node_progress(["ExampleGen", "Trainer", "Pusher"], previous={}):
        TFX.info("Component %s is running.", "ExampleGen")
        TFX.info("Going to run a new execution %d", 7)
        TFX.info("Component %s is finished.", "ExampleGen")
        TFX.info("Component %s is running.", "Trainer")
        TFX.info("A cached execution %d is used.", 8)
        TFX.info("Component %s is finished.", "Trainer")
        TFX.info("node %s is running.", "Pusher")  # BeamDagRunner's wording
        TFX.info("Skipping execution for %s", "Pusher")
        TFX.info("node %s is finished.", "Pusher")
    TFX.info("Component %s is finished.", "ExampleGen")  # after the block: no handler, no line
    lines = _lines(caplog)
    assert len(lines) == 3
    assert re.fullmatch(r"\[1/3\] ExampleGen  \d+\.\d s, ran; elapsed 0:\d\d", lines[0])
    assert re.fullmatch(r"\[2/3\] Trainer  \d+\.\d s, cached; elapsed 0:\d\d", lines[1])
    assert re.fullmatch(r"\[3/3\] Pusher  \d+\.\d s, skipped; elapsed 0:\d\d", lines[2])


def test_estimate_sums_the_previous_run_durations_of_the_nodes_left(caplog):
    caplog.set_level(logging.INFO, logger="yt8m")
    with node_progress(["A", "B", "C"], previous={"A": 5.0, "B": 100.0, "C": 3620.0}):
        for node in ("A", "B"):
            TFX.info("Component %s is running.", node)
            TFX.info("Component %s is finished.", node)
        TFX.info("Skipping component %s.", "C")  # a partial run leaves C out: no start, no finish line
    lines = _lines(caplog)
    assert lines[0].endswith(", about 1:02:00 left")  # B + C = 3720 s
    assert lines[1].endswith(", about 1:00:20 left")
    assert re.fullmatch(r"\[3/3\] C  0\.0 s, not in this run; elapsed 0:\d\d", lines[2])


def test_no_estimate_while_a_node_left_has_no_previous_duration(caplog):
    caplog.set_level(logging.INFO, logger="yt8m")
    with node_progress(["A", "New", "B"], previous={"A": 5.0, "B": 7.0}):
        for node in ("A", "New"):
            TFX.info("Component %s is running.", node)
            TFX.info("Component %s is finished.", node)
    first, second = _lines(caplog)
    assert "left" not in first and second.endswith(", about 0:07 left")
