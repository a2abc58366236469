"""Freed memory handed back to the OS while an executor runs, so its peak RSS is what it holds.

Two allocators keep what they free: Arrow's default pool (mimalloc) keeps freed pages for reuse, and glibc
raises its mmap threshold to the largest block freed so far (up to 32 MB), after which blocks of that size
come from the heap and stay in it, fragmented, once freed. In L2LightGBM, which sorts buckets of 256 MB and
then builds each fold's Datasets from 24 MB row groups, the two made the peak grow with the data beyond what
the executor holds (BENCHMARKS.md, "L2LightGBM's retained memory").
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import platform
from collections.abc import Iterator

import pyarrow as pa

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (glibc malloc.h)
# Blocks from this size up are mmapped, so returned to the OS when freed: a block that grows with the data
# is larger, and one row group's buffers are smaller. glibc's own 128 KiB start costs ~25% more time here,
# in page faults of the 0.1-4 MB blocks every batch allocates afresh.
MMAP_THRESHOLD_BYTES = 4 << 20
# Where glibc's sliding thresholds end once a block this large is freed (DEFAULT_MMAP_THRESHOLD_MAX,
# 64-bit; the trim threshold follows at twice it): what the rest of the process is left with.
SLID_MMAP_THRESHOLD_BYTES = 32 << 20


@functools.cache  # platform.libc_ver reads the Python executable; called after every sort bucket and fold
def _glibc() -> ctypes.CDLL | None:
    return ctypes.CDLL(None) if platform.libc_ver()[0] == "glibc" else None


def fix_mmap_threshold(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Makes glibc serve every block of `threshold` bytes or more by mmap; glibc has no way back to its
    sliding threshold. False where the C library is not glibc."""
    libc = _glibc()
    return bool(libc and libc.mallopt(M_MMAP_THRESHOLD, threshold))


def _leave_thresholds_slid() -> None:
    libc = _glibc()
    if libc:
        libc.mallopt(M_MMAP_THRESHOLD, SLID_MMAP_THRESHOLD_BYTES)
        libc.mallopt(M_TRIM_THRESHOLD, 2 * SLID_MMAP_THRESHOLD_BYTES)


def release_freed_memory() -> None:
    """Hands the heap's free pages back to the OS (glibc's malloc_trim), e.g. after a phase that freed many
    blocks below the mmap threshold; a no-op elsewhere."""
    libc = _glibc()
    if libc:
        libc.malloc_trim(0)


@contextlib.contextmanager
def memory_returned_when_freed() -> Iterator[None]:
    """Within: Arrow allocates through malloc (its system pool) and glibc's mmap threshold is fixed at
    MMAP_THRESHOLD_BYTES. On exit Arrow's previous default pool is restored and glibc's thresholds are left
    where its sliding rule takes them on large blocks (e.g. TensorFlow's training tensors, later in a local
    run), not at 4 MB."""
    previous = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    fix_mmap_threshold()
    try:
        yield
    finally:
        pa.set_memory_pool(previous)
        release_freed_memory()
        _leave_thresholds_slid()
