"""`yt8m` command line: synth, run, predict, score, compile, submit, kfp-run, lineage, report."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import tensorflow as tf

from pipeline.home import HomeInUseError
from pipeline.kfp_run import KfpRunError
from pipeline.kubeflow import SubmitError
from pipeline.lineage import LineageError
from trainer.config_schema import ConfigError
from trainer.file_errors import FILE_LAYER_ERRORS, file_error_message
from trainer.records import InputDataError

log = logging.getLogger("yt8m")
# OSError: a missing, unwritable or full path; FILE_LAYER_ERRORS: the same, raised by TensorFlow's file layer.
USER_ERRORS = (
    ConfigError,
    InputDataError,
    HomeInUseError,
    OSError,
    *FILE_LAYER_ERRORS,
    SubmitError,
    LineageError,
    KfpRunError,
)


def _synth(args: argparse.Namespace) -> None:
    from pipeline.synth import SynthConfig, write_dataset

    config = SynthConfig(
        videos=args.videos,
        classes=args.classes,
        frames=args.frames,
        seed=args.seed,
        videos_per_shard=args.videos_per_shard,
        layouts=tuple(args.layouts.split(",")),
    )
    summary = write_dataset(config, Path(args.out))
    log.info("synth: %s videos %s into %s", config.videos, summary["split_videos"], args.out)
    if "test_gap" in summary["oracle"]:
        print(f"oracle test GAP@20 {summary['oracle']['test_gap']:.6f}")


def _run(args: argparse.Namespace) -> None:
    from pipeline.config import load_pipeline_config
    from pipeline.runner import run_pipeline

    config = load_pipeline_config(args.config)
    try:
        config = config.with_overrides(home=args.home, runner=args.runner)
    except ValueError as error:  # argparse checked --runner
        raise ConfigError(f"--home: {error}") from None
    for line in run_pipeline(config):
        print(line)


def _predict(args: argparse.Namespace) -> None:
    from trainer.submission import write_submission

    rows = write_submission(args.model, args.data, args.out)
    log.info("predict: wrote %d videos to %s", rows, args.out)


def _score(args: argparse.Namespace) -> None:
    from trainer.submission import score_submission

    print(f"GAP@20 {score_submission(args.submission, args.truth):.6f}")


def _compile(args: argparse.Namespace) -> None:
    from pipeline.config import load_pipeline_config
    from pipeline.kubeflow import compile_pipeline

    job = compile_pipeline(load_pipeline_config(args.config), args.out)
    tasks = job["pipelineSpec"]["root"]["dag"]["tasks"]
    log.info("compile: wrote %s (%d tasks) for Kubeflow Pipelines", args.out, len(tasks))


def _parameter(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def _submit(args: argparse.Namespace) -> None:
    from pipeline.kubeflow import submit_pipeline

    run_id = submit_pipeline(
        args.package,
        args.host,
        experiment=args.experiment,
        run_name=args.run_name,
        parameters=dict(args.param),
        pipeline_root=args.pipeline_root,
    )
    print(f"run {run_id}")


def _kfp_run(args: argparse.Namespace) -> None:
    from pipeline.kfp_run import run_package

    report = run_package(
        args.package,
        dict(args.param),
        pipeline_root=args.pipeline_root,
        metadata_path=args.metadata,
        run_id=args.run_id,
        parallelism=args.parallel,
        use_cache=not args.no_cache,
    )
    for line in report.lines():
        print(line)


def _lineage(args: argparse.Namespace) -> None:
    from pipeline import lineage
    from pipeline.metadata import open_store

    if args.png and not lineage.graphviz_available():
        raise LineageError(
            f"graphviz `dot` is not on PATH: cannot write {args.png} (use --dot and render it elsewhere)"
        )
    store = open_store(lineage.metadata_path(args.home, args.config))
    artifact_id = args.artifact if args.artifact is not None else lineage.latest_pushed_model_id(store)
    traced = lineage.trace(store, artifact_id)
    print(lineage.text_tree(traced), end="")
    dot = lineage.to_dot(traced)
    if args.dot:
        Path(args.dot).write_text(dot)
        log.info("lineage: wrote %s", args.dot)
    if args.png:
        Path(args.png).write_bytes(lineage.render_dot(dot, "png"))
        log.info("lineage: wrote %s", args.png)


def _report(args: argparse.Namespace) -> None:
    from pipeline.config import load_pipeline_config
    from pipeline.lineage import metadata_path
    from pipeline.report import write_report

    pipeline_name = load_pipeline_config(args.config).pipeline_name if args.config else None
    write_report(metadata_path(args.home, args.config), args.out, pipeline_name)
    log.info("report: wrote %s", args.out)


def _add_metadata_source(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--home", help="pipeline home holding metadata.sqlite (default yt8m_home)")
    source.add_argument("--config", help="pipeline config whose home to read")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="yt8m", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    synth = commands.add_parser(
        "synth", help="write synthetic YouTube-8M-format TFRecords; prints the oracle GAP of the test split"
    )
    synth.add_argument(
        "--out", required=True, help="output directory (video/, frame/, test_truth.csv, oracle.jsonl, ...)"
    )
    synth.add_argument("--videos", type=int, default=3000)
    synth.add_argument("--classes", type=int, default=100)
    synth.add_argument(
        "--frames", type=int, default=20, help="max frames per video (each has frames/2..frames)"
    )
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--videos-per-shard", type=int, default=1000)
    synth.add_argument("--layouts", default="video,frame", help="video, frame or video,frame")
    synth.set_defaults(handler=_synth)

    run = commands.add_parser("run", help="run the pipeline locally (sqlite ML Metadata, local Beam)")
    run.add_argument("--config", default="configs/demo.yaml")
    run.add_argument("--home", help="directory for the pipeline root and metadata (overrides the config)")
    run.add_argument("--runner", choices=["beam", "local"], help="orchestrator (overrides the config)")
    run.set_defaults(handler=_run)

    predict = commands.add_parser("predict", help="write a Kaggle submission CSV with an exported model")
    predict.add_argument(
        "--model", required=True, help="SavedModel directory (serving_default on serialized records)"
    )
    predict.add_argument(
        "--data", required=True, help="glob of TFRecord files, e.g. 'data/demo/video/test*.tfrecord'"
    )
    predict.add_argument("--out", required=True, help="CSV to write (VideoId,LabelConfidencePairs)")
    predict.set_defaults(handler=_predict)

    score = commands.add_parser("score", help="GAP@20 of a submission CSV against the ground truth")
    score.add_argument("submission")
    score.add_argument("--truth", required=True, help="VideoId,Labels CSV (e.g. data/demo/test_truth.csv)")
    score.set_defaults(handler=_score)

    compile_ = commands.add_parser("compile", help="compile the pipeline for Kubeflow Pipelines (TFX KFP V2)")
    compile_.add_argument(
        "--config", default="configs/kubeflow.yaml", help="pipeline config with a kubeflow section"
    )
    compile_.add_argument(
        "--out", required=True, help="pipeline.yaml (KFP PipelineSpec) or pipeline.json (Vertex AI)"
    )
    compile_.set_defaults(handler=_compile)

    submit = commands.add_parser(
        "submit", help="start a run of a compiled pipeline on a Kubeflow Pipelines server"
    )
    submit.add_argument(
        "--package", required=True, help="compiled pipeline YAML (yt8m compile --out ...yaml)"
    )
    submit.add_argument("--host", required=True, help="KFP API endpoint, e.g. http://localhost:8080")
    submit.add_argument("--experiment", default="Default", help="experiment to file the run under")
    submit.add_argument("--run-name", help="run display name (default: package name and time)")
    submit.add_argument(
        "--param",
        type=_parameter,
        action="append",
        default=[],
        help="runtime parameter NAME=VALUE (video_dir, frame_dir)",
    )
    submit.add_argument("--pipeline-root", help="override the compiled pipeline root (gs://...)")
    submit.set_defaults(handler=_submit)

    kfp_run = commands.add_parser(
        "kfp-run",
        help="execute a compiled package here, task by task, through its own container entrypoints",
    )
    kfp_run.add_argument("package", help="compiled pipeline (yt8m compile --out pipeline.yaml or .json)")
    kfp_run.add_argument(
        "--param", type=_parameter, action="append", default=[], help="runtime parameter NAME=VALUE"
    )
    kfp_run.add_argument("--pipeline-root", help="override the package's pipeline root (local or gs://)")
    kfp_run.add_argument(
        "--metadata",
        help="ML Metadata sqlite file (default: metadata.sqlite beside a local pipeline root, "
        "else yt8m_home/metadata.sqlite)",
    )
    kfp_run.add_argument("--run-id", help="run id, the folder under the pipeline root (default: name-time)")
    kfp_run.add_argument("--parallel", type=int, default=1, help="tasks run at once (default 1)")
    kfp_run.add_argument(
        "--no-cache",
        action="store_true",
        help="run every task, even where an earlier run of the package in the store has its outputs",
    )
    kfp_run.set_defaults(handler=_kfp_run)

    lineage = commands.add_parser(
        "lineage", help="trace an artifact back to the input files through ML Metadata"
    )
    _add_metadata_source(lineage)
    target = lineage.add_mutually_exclusive_group()
    target.add_argument("--artifact", type=int, help="artifact id (default: the latest pushed model)")
    target.add_argument(
        "--latest-pushed", action="store_true", help="the newest PushedModel artifact (default)"
    )
    lineage.add_argument("--dot", help="also write the lineage graph as Graphviz DOT")
    lineage.add_argument("--png", help="also render it as PNG (needs graphviz `dot` on PATH)")
    lineage.set_defaults(handler=_lineage)

    report = commands.add_parser(
        "report", help="write a static HTML report of the latest run (from ML Metadata)"
    )
    _add_metadata_source(report)
    report.add_argument("--out", required=True, help="HTML file to write")
    report.set_defaults(handler=_report)
    return parser


def _user_error(error: BaseException) -> BaseException | None:
    """The project's own error behind `error`, also when Beam re-raised it under another type."""
    seen = error
    while seen is not None:
        if isinstance(seen, USER_ERRORS):
            return seen
        seen = seen.__cause__ or seen.__context__
    marker = InputDataError.__name__ + ": "
    text = str(error)
    if marker in text:
        return InputDataError(text.split(marker, 1)[1].splitlines()[0].split(" [while running")[0])
    return None


def _one_line(error: BaseException) -> str:
    """The error's message on one line, without the step name Beam appends to errors raised in a transform
    nor the op TensorFlow names in its errors."""
    text = file_error_message(error) if isinstance(error, tf.errors.OpError) else str(error)
    return " ".join(text.split(" [while running")[0].split())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pipeline.runner import configure_logging

    configure_logging()
    try:
        args.handler(args)
    except Exception as error:  # noqa: BLE001 (user errors become one line, the rest keep their traceback)
        user_error = _user_error(error)
        if user_error is None:
            raise
        print(f"yt8m: error: {_one_line(user_error)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
