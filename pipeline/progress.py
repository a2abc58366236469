"""One progress line per pipeline node, from the lines TFX's runners log as they start and finish nodes."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("yt8m")

# The message formats (record.msg, not the formatted text) TFX logs around each node, with the node id as
# their only argument; LocalDagRunner's and BeamDagRunner's wordings differ.
_STARTED = {"Component %s is running.", "node %s is running."}
_FINISHED = {"Component %s is finished.", "node %s is finished."}
_SKIPPED = "Skipping execution for %s"  # the launcher's, e.g. a conditional node whose condition is false
_NOT_RUN = "Skipping component %s."  # LocalDagRunner's, for a node a partial run leaves out (no finish line)
_CACHED = "A cached execution %d is used."  # logged by the launcher between a node's start and finish


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return (
        f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}" if minutes >= 60 else f"{minutes}:{seconds:02d}"
    )


class NodeProgress(logging.Handler):
    """Logs `[k/N] <node>  12.3 s, ran | cached | skipped; elapsed m:ss[, about m:ss left]` as each node
    ends. The estimate sums `previous` (node id -> seconds in the previous run) over the nodes not yet done;
    it is left out when some of them have no previous duration."""

    def __init__(self, node_ids: list[str], previous: dict[str, float]) -> None:
        super().__init__()
        self._pending = dict.fromkeys(node_ids)
        self._total = len(node_ids)
        self._previous = previous
        self._began = time.monotonic()
        self._started: dict[str, float] = {}
        self._outcome: dict[str, str] = {}
        self._node_of_thread: dict[int | None, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        node_id = record.args[0] if isinstance(record.args, tuple) and record.args else None
        if record.msg in _STARTED:
            self._started[node_id] = time.monotonic()
            self._outcome[node_id] = "ran"
            self._node_of_thread[record.thread] = node_id
        elif record.msg == _CACHED and record.thread in self._node_of_thread:
            self._outcome[self._node_of_thread[record.thread]] = "cached"
        elif record.msg == _SKIPPED:
            self._outcome[node_id] = "skipped"
        elif record.msg == _NOT_RUN and node_id in self._pending:
            self._outcome[node_id] = "not in this run"
            self._finish(node_id)
        elif record.msg in _FINISHED and node_id in self._pending:
            self._finish(node_id)

    def _finish(self, node_id: str) -> None:
        now = time.monotonic()
        del self._pending[node_id]
        line = (
            f"[{self._total - len(self._pending)}/{self._total}] {node_id}  "
            f"{now - self._started.get(node_id, now):.1f} s, {self._outcome.get(node_id, 'ran')}; "
            f"elapsed {_clock(now - self._began)}"
        )
        if self._pending and all(node in self._previous for node in self._pending):
            line += f", about {_clock(sum(self._previous[node] for node in self._pending))} left"
        log.info("%s", line)


@contextmanager
def node_progress(node_ids: list[str], previous: dict[str, float]) -> Iterator[NodeProgress]:
    """NodeProgress attached to the `absl` logger (where TFX logs) for the block, at absl's INFO verbosity
    (set through absl's flag: TensorFlow's SavedModel export resets the logger's level from it)."""
    from absl import logging as absl_logging

    handler = NodeProgress(node_ids, previous)
    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.INFO)
    logging.getLogger("absl").addHandler(handler)
    try:
        yield handler
    finally:
        logging.getLogger("absl").removeHandler(handler)
        absl_logging.set_verbosity(verbosity)
