"""`yt8m` command line: synth, run, predict, score."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from trainer.config_schema import ConfigError
from trainer.records import InputDataError

log = logging.getLogger("yt8m")
USER_ERRORS = (ConfigError, InputDataError, FileNotFoundError, PermissionError)


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


def _run(args: argparse.Namespace) -> None:
    from pipeline.config import load_pipeline_config
    from pipeline.runner import run_pipeline

    config = load_pipeline_config(args.config).with_overrides(home=args.home, runner=args.runner)
    run_pipeline(config)


def _predict(args: argparse.Namespace) -> None:
    from pipeline.submission import write_submission

    rows = write_submission(args.model, args.data, args.out)
    log.info("predict: wrote %d videos to %s", rows, args.out)


def _score(args: argparse.Namespace) -> None:
    from pipeline.submission import score_submission

    print(f"GAP@20 {score_submission(args.submission, args.truth):.6f}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="yt8m", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    synth = commands.add_parser("synth", help="write synthetic YouTube-8M-format TFRecords")
    synth.add_argument("--out", required=True, help="output directory (video/, frame/, test_truth.csv)")
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
        print(f"yt8m: error: {user_error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
