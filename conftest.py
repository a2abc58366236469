"""Fixtures for every test, tests/ and the components' executor tests alike."""

from __future__ import annotations

import pytest

from pipeline.runner import beam_default_runner


@pytest.fixture(scope="session", autouse=True)
def local_beam_runner():
    """Pipelines built without a runner (an executor's default context) run on the local runs' FnApiRunner,
    not on Beam's DirectRunner, which runs them on Prism wherever it can download it (pipeline.config)."""
    with beam_default_runner():
        yield
