"""Every Beam executor under the DaskRunner vs the local runs' runner (tests/test_dask_runner.py with its full
sweep enabled): `python -m benchmarks.dask_bench`; pytest's durations are the per-stage times."""

from __future__ import annotations

import os
import sys
import tempfile

import pytest


def main() -> int:
    os.environ["YT8M_DASK_SWEEP"] = "1"
    basetemp = tempfile.mkdtemp(prefix="dask_bench_")
    test = os.path.join(os.path.dirname(__file__), "..", "tests", "test_dask_runner.py")
    return pytest.main([test, "-q", "-p", "no:cacheprovider", f"--basetemp={basetemp}", "--durations=0"])


if __name__ == "__main__":
    sys.exit(main())
