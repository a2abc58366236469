"""The pipeline home directory: one `yt8m run` at a time, enforced by an exclusive lock file."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = ".yt8m.lock"


class HomeInUseError(RuntimeError):
    """Another `yt8m run` holds the home directory (sharing it would interleave two runs' metadata)."""


@contextmanager
def home_lock(home: str | Path) -> Iterator[None]:
    """Hold `<home>/.yt8m.lock` (flock, non-blocking) while the block runs; the kernel frees it if we die."""
    path = Path(home, LOCK_FILE)
    with open(path, "a+") as handle:  # "a+": opening must not erase the pid of the run that holds it
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise HomeInUseError(
                f"home directory {Path(home).absolute()} is used by another yt8m run (pid {holder})"
            ) from None
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
