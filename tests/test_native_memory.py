"""components.native_memory: Arrow's pool switched and restored; glibc hands freed large blocks back."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pyarrow as pa
import pytest

from components.native_memory import memory_returned_when_freed

# 48 blocks of 8 MB, each followed by an 8 KB array that keeps the heap's top from shrinking, after a 16 MB
# block freed first (glibc then raises its threshold to 16 MB and serves 8 MB blocks from the heap); prints
# the MB the process's RSS drops by when the 8 MB blocks are freed (and, "trimmed", the heap trimmed;
# "exited": after memory_returned_when_freed).
_FREE_BLOCKS = """
import sys
import numpy as np
from components.native_memory import fix_mmap_threshold, memory_returned_when_freed, release_freed_memory

def rss_mb():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20

if sys.argv[1] == "fixed":
    fix_mmap_threshold()
if sys.argv[1] == "exited":
    with memory_returned_when_freed():
        pass
np.ones(2 << 20)
big, small = [], []
for _ in range(48):
    big.append(np.ones(1 << 20))
    small.append(np.ones(1024))
before = rss_mb()
del big
if sys.argv[1] == "trimmed":
    release_freed_memory()
print(before - rss_mb())
"""


def test_arrow_allocates_through_malloc_within_and_its_pool_is_restored():
    previous = pa.default_memory_pool().backend_name
    with memory_returned_when_freed():
        assert pa.default_memory_pool().backend_name == "system"
        assert pa.array(range(1000)).buffers()[1].address  # allocates from the system pool
    assert pa.default_memory_pool().backend_name == previous


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt's mmap threshold is glibc's")
def test_freed_large_blocks_go_back_to_the_os_once_the_threshold_is_fixed_or_the_heap_trimmed():
    # Any MALLOC_* variable or tunable (dask's Nanny sets MALLOC_TRIM_THRESHOLD_) stops glibc's sliding.
    glibc_defaults = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}

    def released_mb(mode: str) -> float:
        done = subprocess.run(
            [sys.executable, "-c", _FREE_BLOCKS, mode], capture_output=True, text=True, env=glibc_defaults
        )
        assert done.returncode == 0, done.stderr
        return float(done.stdout)

    assert released_mb("sliding") < 50  # glibc's own behaviour: the freed 384 MB stay in the process
    assert released_mb("fixed") > 350  # 8 MB blocks are above MMAP_THRESHOLD_BYTES
    assert released_mb("trimmed") > 350
    assert released_mb("exited") < 50  # the rest of a process is left with glibc's slid threshold, not 4 MB
