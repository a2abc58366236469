"""Run the pipeline locally: BeamDagRunner (default) or LocalDagRunner, sqlite ML Metadata under `home`."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from pipeline.config import PipelineConfig
from pipeline.home import home_lock
from pipeline.pipeline import create_pipeline

log = logging.getLogger("yt8m")
_KNOWN_NOISE = "ArtifactQuery.property_predicate is not supported"  # TFX warns on every cache lookup
_PROGRESS_MARKERS = ("is running.", "is finished.", "cached execution")


class _ProgressFilter(logging.Filter):
    """Keep TFX's per-component start/finish lines; drop the rest of its INFO chatter."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if _KNOWN_NOISE in message:
            return False
        if record.levelno >= logging.WARNING or record.name.startswith("yt8m"):
            return True
        return any(marker in message for marker in _PROGRESS_MARKERS)


def configure_logging() -> None:
    """yt8m INFO lines plus TFX component progress on stderr."""
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.INFO)
    logging.getLogger("absl").addFilter(_ProgressFilter())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", force=True)
    for noisy in ("apache_beam", "tensorflow", "root"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Beam logs every failed bundle with its traceback; the CLI reports the error itself.
    logging.getLogger("apache_beam.runners.common").setLevel(logging.CRITICAL)


def check_home_writable(home: str) -> None:
    """Fail before anything runs when the home directory cannot hold the pipeline root and metadata."""
    path = Path(home)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path):
            pass
    except OSError as error:
        raise PermissionError(f"home directory {path.absolute()} is not writable: {error.strerror}") from None


def run_pipeline(config: PipelineConfig) -> None:
    """Run every node (cached ones are reused) and block until the pipeline ends."""
    from tfx import v1 as tfx
    from tfx.orchestration.beam.beam_dag_runner import BeamDagRunner

    check_home_writable(config.home)
    with home_lock(config.home):
        pipeline = create_pipeline(config)
        log.info(
            "running %s with %s runner; pipeline root %s; metadata %s",
            config.pipeline_name,
            config.runner,
            config.pipeline_root,
            config.metadata_path,
        )
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        if config.runner == "beam":
            BeamDagRunner().run(pipeline)
        else:
            tfx.orchestration.LocalDagRunner().run(pipeline)
    log.info("pipeline %s finished", config.pipeline_name)
    for line in stage_summary(config):
        log.info(line)


def stage_summary(config: PipelineConfig) -> list[str]:
    """Holdout GAP@20 of every L1 model and of the L2 stack, from the latest run's ML Metadata."""
    from pipeline.metadata import latest_executions, open_store, property_value

    stacker = latest_executions(open_store(config.metadata_path), config.pipeline_name).get("L2LightGBM")
    if stacker is None or not stacker.outputs.get("metrics"):
        return []
    metrics = stacker.outputs["metrics"][0]
    l1_gaps = sorted(property_value(metrics, "l1_holdout_gap").items(), key=lambda item: -item[1])
    lines = [f"holdout GAP@20  {name:<28} {gap:.4f}" for name, gap in l1_gaps]
    lines.append(f"holdout GAP@20  {'L2 LightGBM stack':<28} {property_value(metrics, 'holdout_gap'):.4f}")
    return lines
