"""The local runs' Beam runner is named: Beam's DirectRunner would first try to download and start its Prism
runner (and run the stages on it where github.com is reachable), leaving entries in the temp dir each time."""

from __future__ import annotations

import tempfile

import apache_beam as beam
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.util import assert_that, equal_to

from pipeline.config import LOCAL_BEAM_PIPELINE_ARGS, load_pipeline_config
from pipeline.runner import beam_default_runner


def _run_doubling(argv: list[str]) -> beam.Pipeline:
    with beam.Pipeline(argv=argv) as pipeline:
        doubled = pipeline | beam.Create([1, 2, 3]) | beam.Map(lambda value: 2 * value)
        assert_that(doubled, equal_to([2, 4, 6]))
    return pipeline


def test_the_demo_runs_the_local_beam_arguments():
    assert load_pipeline_config("configs/demo.yaml").beam_pipeline_args == LOCAL_BEAM_PIPELINE_ARGS


def test_local_beam_arguments_run_in_process_and_leave_nothing_in_the_temp_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(StandardOptions, "DEFAULT_RUNNER", "DirectRunner")  # Beam default, not conftest.s
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert isinstance(_run_doubling(list(LOCAL_BEAM_PIPELINE_ARGS)).runner, FnApiRunner)
    assert list(tmp_path.iterdir()) == []


def test_a_pipeline_without_a_runner_runs_in_process_within_beam_default_runner(tmp_path, monkeypatch):
    monkeypatch.setattr(StandardOptions, "DEFAULT_RUNNER", "DirectRunner")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with beam_default_runner():
        assert isinstance(_run_doubling([]).runner, FnApiRunner)  # as TFX's BeamDagRunner builds its own
    assert list(tmp_path.iterdir()) == []
    assert StandardOptions.DEFAULT_RUNNER == "DirectRunner"
