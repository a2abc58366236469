"""Helpers shared by the benchmarks: fixed-width tables, whether a pipeline run is in progress, and this
process's memory from /proc."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence


def print_table(
    title: str, headers: Sequence[str], rows: Sequence[Sequence[object]], float_format: Callable[[float], str]
) -> None:
    """A plain fixed-width table, floats rendered by `float_format`."""
    cells = [[float_format(v) if isinstance(v, float) else str(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = "  ".join(f"{h:>{w}}" for h, w in zip(headers, widths, strict=True))
    print(f"\n{title}\n{line}\n{'-' * len(line)}")
    for row in cells:
        print("  ".join(f"{c:>{w}}" for c, w in zip(row, widths, strict=True)))


def pipeline_running() -> bool:
    """Whether a `yt8m run` (pipeline.cli run) is in progress on this machine."""
    return subprocess.run(["pgrep", "-f", "pipeline.cli run"], capture_output=True).returncode == 0


def _proc_value(name: str, field: str) -> int:
    """The number after "<field>:" in /proc/self/<name>."""
    with open(f"/proc/self/{name}") as proc:
        line = next(line for line in proc if line.startswith(f"{field}:"))
    return int(line.split()[1])


def io_mb(field: str) -> float:
    """A counter of /proc/self/io in MB: "read_bytes" / "write_bytes" (what reached the block device, page
    cache hits excluded) or "rchar" / "wchar" (every read and write call)."""
    return _proc_value("io", field) / 2**20


def status_mb(field: str) -> float:
    """A memory field of /proc/self/status in MB: "VmHWM" (peak RSS) or "VmRSS". Not ru_maxrss: Linux
    carries that over fork and exec, so a child's would start at the RSS of the parent."""
    return _proc_value("status", field) / 1024
