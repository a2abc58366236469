"""Run the pipeline locally: LocalDagRunner (default) or BeamDagRunner, sqlite ML Metadata under `home`."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from apache_beam.options.pipeline_options import StandardOptions

from pipeline.config import LOCAL_BEAM_RUNNER, PipelineConfig
from pipeline.home import home_lock
from pipeline.pipeline import create_pipeline
from pipeline.progress import node_progress

log = logging.getLogger("yt8m")
_KNOWN_NOISE = "ArtifactQuery.property_predicate is not supported"  # TFX warns on every cache lookup


class _QuietTfx(logging.Filter):
    """On stderr, TFX's (absl's) warnings and errors only: its INFO lines feed pipeline/progress.py."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "absl":
            return record.levelno >= logging.WARNING and _KNOWN_NOISE not in record.getMessage()
        return True


def configure_logging() -> None:
    """On stderr: yt8m's INFO lines (one per pipeline node, pipeline/progress.py) and every warning."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s", force=True)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_QuietTfx())
    log.setLevel(logging.INFO)
    # Beam logs every failed bundle with its traceback; the CLI reports the error itself.
    logging.getLogger("apache_beam.runners.common").setLevel(logging.CRITICAL)


@contextlib.contextmanager
def beam_default_runner(runner: str = LOCAL_BEAM_RUNNER) -> Iterator[None]:
    """Within: a Beam pipeline built without a runner runs on `runner` instead of Beam's DirectRunner (which
    first tries to download and run Prism, pipeline.config). TFX's BeamDagRunner builds its orchestration
    pipeline so, without options; the executors' pipelines take the config's `beam_pipeline_args`."""
    previous = StandardOptions.DEFAULT_RUNNER
    StandardOptions.DEFAULT_RUNNER = runner
    try:
        yield
    finally:
        StandardOptions.DEFAULT_RUNNER = previous


def check_home_writable(home: str) -> None:
    """Fail before anything runs when the home directory cannot hold the pipeline root and metadata."""
    path = Path(home)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path):
            pass
    except OSError as error:
        raise PermissionError(f"home directory {path.absolute()} is not writable: {error.strerror}") from None


def run_pipeline(config: PipelineConfig) -> list[str]:
    """Run every node (cached ones are reused), block until the pipeline ends; returns `stage_summary`."""
    from tfx.orchestration.beam.beam_dag_runner import BeamDagRunner
    from tfx.orchestration.local.local_dag_runner import LocalDagRunner

    from pipeline import input_resolution
    from pipeline.metadata import failures_recorded

    input_resolution.install()
    check_home_writable(config.home)
    with home_lock(config.home):
        pipeline = create_pipeline(config)
        previous = previous_durations(config)
        log.info(
            "running %s with %s runner; pipeline root %s; metadata %s",
            config.pipeline_name,
            config.runner,
            config.pipeline_root,
            config.metadata_path,
        )
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        node_ids = [node.id for node in pipeline.components]
        with node_progress(node_ids, previous), failures_recorded(config.metadata_path, config.pipeline_name):
            if config.runner == "beam":
                with beam_default_runner():
                    BeamDagRunner().run(pipeline)
            else:
                LocalDagRunner().run(pipeline)
    log.info("pipeline %s finished", config.pipeline_name)
    return stage_summary(config)


def previous_durations(config: PipelineConfig) -> dict[str, float]:
    """Node id -> seconds its execution took in the pipeline's latest run ({} before the first run)."""
    from pipeline.metadata import open_store, run_executions

    if not Path(config.metadata_path).exists():
        return {}
    executions = run_executions(open_store(config.metadata_path), config.pipeline_name)
    return {node_id: execution.seconds for node_id, execution in executions.items()}


def stage_summary(config: PipelineConfig) -> list[str]:
    """Holdout GAP@20 of every model (L1, stack, students), the blessing, the pushed model and the submission
    (with its GAP when data.test_truth is set), all from the latest run's own executions (cached ones
    included); a stage that run skipped is said to be skipped, never filled in from an earlier run."""
    from components.student_evaluator.executor import role_rank
    from pipeline.metadata import latest_run_id, open_store, property_value, run_executions

    store = open_store(config.metadata_path)
    run_id = latest_run_id(store, config.pipeline_name)
    executions = run_executions(store, config.pipeline_name, run_id)
    evaluator, stacker = executions.get("StudentEvaluator"), executions.get("L2LightGBM")
    if evaluator is not None and evaluator.outputs.get("evaluation"):
        evaluation = evaluator.outputs["evaluation"][0]
        roles = property_value(evaluation, "roles")
        ranked = sorted(
            property_value(evaluation, "holdout").items(),
            key=lambda item: (role_rank(roles[item[0]]), -item[1]["gap"]),
        )
        lines = [
            f"holdout GAP@20  {name:<28} {metrics['gap']:.4f} "
            f"[{metrics['gap_interval'][0]:.4f}, {metrics['gap_interval'][1]:.4f}]  ({roles[name]})"
            for name, metrics in ranked
        ]
        for label, difference in property_value(evaluation, "differences").items():
            low, high = difference["interval"]
            lines.append(f"holdout {label}: {difference['value']:+.4f} [{low:+.4f}, {high:+.4f}]")
        lines.append(f"blessing: {property_value(evaluation, 'reason')}")
    elif stacker is not None and stacker.outputs.get("metrics"):
        metrics = stacker.outputs["metrics"][0]
        l1_gaps = sorted(property_value(metrics, "l1_holdout_gap").items(), key=lambda item: -item[1])
        lines = [f"holdout GAP@20  {name:<28} {gap:.4f}" for name, gap in l1_gaps]
        lines.append(
            f"holdout GAP@20  {'L2 LightGBM stack':<28} {property_value(metrics, 'holdout_gap'):.4f}"
        )
    else:
        return []
    lines.insert(0, f"run {run_id}")
    if evaluator is None:
        return lines
    pusher, inference = executions.get("Pusher"), executions.get("BatchInference")
    if pusher is not None and pusher.outputs.get("pushed_model"):
        lines.append(
            f"pushed model: {property_value(pusher.outputs['pushed_model'][0], 'pushed_destination')}"
        )
    else:
        lines.append("pushed model: none, Pusher skipped in this run (the model is not blessed)")
    if inference is not None and inference.outputs.get("submission"):
        submission = property_value(inference.outputs["submission"][0], "file")
        lines.append(f"submission: {submission}")
        if config.data.test_truth:
            from trainer.submission import score_submission

            gap = score_submission(submission, config.data.test_truth)
            lines.append(f"submission GAP@20 against {config.data.test_truth}: {gap:.4f}")
    else:
        lines.append("submission: none, BatchInference skipped in this run")
    return lines
