"""Reliability (issue #8): bad input at every entry point, kill and resume, determinism, safe file formats,
concurrent runs and unusable home directories. The pipeline runs are the cheapest that show each property:
video-level data only, no L1 model (the run stops after the fold split) unless the property needs one."""

from __future__ import annotations

import ast
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
import yaml
from ml_metadata import errors as mlmd_errors

from pipeline import cli
from pipeline.home import home_lock
from pipeline.metadata import NodeExecution, latest_executions, node_executions, open_store, property_value
from pipeline.synth import SynthConfig, write_dataset
from tests import builders
from tests.conftest import LIGHTGBM_CONFIG, TINY
from trainer.l1_config import parse_l1_config
from trainer.l1_run import export_model
from trainer.predictions import decode_prediction
from trainer.readers import read_records
from trainer.records import video_id_of

REPO = Path(__file__).resolve().parents[1]
TINY_VIDEO_L1 = str(REPO / "tests" / "configs" / "tiny_video.yaml")
PIPELINE = "yt8m-reliability"
RUN_TIMEOUT_S = 600
L1 = "tiny_gated_mlp"
FOLDS_ONLY_NODES = {
    "VideoExampleGen",
    "StatisticsGen",
    "SchemaGen",
    "VideoFoldSplit",
    "VideoSchema",
    "Transform",
}


def _write_config(
    path: Path, home: Path, data: Path, *, frames: bool = False, l1: tuple[str, ...] = (), **folds
) -> str:
    """A pipeline config on `data`: video level (and frame level if asked), no L1 model unless given."""
    config = {
        "pipeline_name": PIPELINE,
        "home": str(home),
        "data": {
            "video_dir": str(data / "video"),
            "frame_dir": str(data / "frame") if frames else None,
            "num_classes": TINY.classes,
        },
        "folds": {"num_folds": 3, "holdout_fraction": 0.1, "seed": 1, **folds},
        "l1": {"configs": list(l1)},
        "l2": {"lightgbm_config": LIGHTGBM_CONFIG},
    }
    path.write_text(yaml.safe_dump(config))
    return str(path)


def _cli_error(argv: list[str], capsys) -> str:
    """Run the CLI in this process: exit code 2 and one `yt8m: error:` line, no traceback."""
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("yt8m: error: ")
    return last


def _assert_failed_without_outputs(home: Path, node_id: str) -> None:
    """The node's only execution FAILED and published nothing; no node downstream of it ran."""
    executions = node_executions(open_store(str(home / "metadata.sqlite")), PIPELINE)
    failed = [e for e in executions if e.node_id == node_id]
    assert [(e.state, e.outputs) for e in failed] == [("FAILED", {})]
    assert all(e.state == "COMPLETE" for e in executions if e.node_id != node_id)


# --- Bad input: `yt8m run` on broken data -------------------------------------------------------------------


def _flip_payload_byte(data: Path) -> None:
    victim = data / "video" / "validate0000.tfrecord"
    content = bytearray(victim.read_bytes())
    content[100] ^= 0xFF  # inside the first record's payload: its CRC no longer matches
    victim.write_bytes(bytes(content))


def _add_video_shard(data: Path, proto: tf.train.Example) -> None:
    builders.write_tfrecord(data / "video" / "train0009.tfrecord", [proto.SerializeToString()])


def _without_mean_audio(data: Path) -> None:
    proto = builders.video_proto(video_id="noaudio")
    del proto.features.feature["mean_audio"]
    _add_video_shard(data, proto)


def _float_labels(data: Path) -> None:
    proto = builders.video_proto(video_id="floatlab")
    proto.features.feature["labels"].ClearField("int64_list")
    proto.features.feature["labels"].float_list.value.extend([1.0, 4.0])
    _add_video_shard(data, proto)


def _negative_label(data: Path) -> None:
    _add_video_shard(data, builders.video_proto(video_id="negative", labels=(2, -1)))


def _short_audio_frame(data: Path) -> None:
    proto = builders.frame_proto(video_id="shortframe")
    proto.feature_lists.feature_list["audio"].feature[1].bytes_list.value[0] = b"\x01" * 64
    builders.write_tfrecord(data / "frame" / "train0009.tfrecord", [proto.SerializeToString()])


@dataclass(frozen=True)
class BadData:
    """A defect made in a copy of the tiny data set, the node that must fail and what its error must say."""

    defect: Callable[[Path], None]
    failing_node: str
    message: str  # a part of the one-line error; {data} stands for the data directory
    frames: bool = False


BAD_DATA = {
    "bad CRC": BadData(
        _flip_payload_byte,
        "VideoExampleGen",
        "{data}/video/validate0000.tfrecord: corrupted or truncated TFRecord after record 0",
    ),
    "empty file": BadData(
        lambda data: (data / "video" / "train0001.tfrecord").write_bytes(b""),
        "VideoExampleGen",
        "{data}/video/train0001.tfrecord: file holds no records",
    ),
    "split without files": BadData(
        lambda data: [path.unlink() for path in (data / "video").glob("validate*")],
        "VideoExampleGen",
        "no input files match {data}/video/validate*.tfrecord",
    ),
    "missing feature": BadData(
        _without_mean_audio,
        "VideoExampleGen",
        "{data}/video/train0009.tfrecord: record 0: video 'noaudio': missing feature 'mean_audio'",
    ),
    "wrong feature dtype": BadData(
        _float_labels,
        "VideoExampleGen",
        "{data}/video/train0009.tfrecord: record 0: video 'floatlab': feature 'labels': expected int64_list, "
        "got float_list of 2",
    ),
    "negative label id": BadData(
        _negative_label,
        "VideoExampleGen",
        "{data}/video/train0009.tfrecord: record 0: video 'negative': feature 'labels': "
        "class id -1 outside [0, 30)",
    ),
    "frame bytes of wrong size": BadData(
        _short_audio_frame,
        "FrameExampleGen",
        "{data}/frame/train0009.tfrecord: record 0: video 'shortframe': feature_list 'audio' frame 1: "
        "expected 128 uint8 bytes, got 64 bytes",
        frames=True,
    ),
}


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_run_on_bad_data_fails_in_its_node_with_one_line(case, tiny_data, tmp_path, capsys):
    bad = BAD_DATA[case]
    data = tmp_path / "data"
    for layout in ("video", "frame") if bad.frames else ("video",):
        shutil.copytree(tiny_data / layout, data / layout)
    bad.defect(data)
    config = _write_config(tmp_path / "config.yaml", tmp_path / "home", data, frames=bad.frames)
    error = _cli_error(["run", "--config", config], capsys)
    assert bad.message.format(data=data) in error
    _assert_failed_without_outputs(tmp_path / "home", bad.failing_node)


def test_fold_without_videos_fails_the_fold_split(tmp_path, capsys):
    data = tmp_path / "data"
    write_dataset(SynthConfig(videos=6, classes=TINY.classes, frames=2, layouts=("video",)), data)
    config = _write_config(tmp_path / "config.yaml", tmp_path / "home", data, num_folds=8)
    error = _cli_error(["run", "--config", config], capsys)
    assert "got no videos: 5 labelled videos are too few for folds.num_folds=8" in error
    _assert_failed_without_outputs(tmp_path / "home", "VideoFoldSplit")


# --- Bad input: configs, home directory, predict, score, synth ----------------------------------------------


def _config_with(tmp_path: Path, tiny_data: Path, **changes) -> Path:
    path = tmp_path / "config.yaml"
    config = yaml.safe_load(Path(_write_config(path, tmp_path / "home", tiny_data)).read_text())
    for dotted, value in changes.items():
        *parents, key = dotted.split("__")
        node = config
        for parent in parents:
            node = node[parent]
        node[key] = value
    path.write_text(yaml.safe_dump(config))
    return path


def _l1_config_without_model(tmp_path: Path) -> dict:
    path = tmp_path / "no_model.yaml"
    path.write_text("name: nomodel\nparams: {hidden_units: [8]}\n")
    return {"l1__configs": [str(path)]}


def _l1_config(text: bytes) -> Callable[[Path], dict]:
    """Changes that add an L1 config file `l1.yaml` holding `text`."""

    def changes(tmp_path: Path) -> dict:
        (tmp_path / "l1.yaml").write_bytes(text)
        return {"l1__configs": [str(tmp_path / "l1.yaml")]}

    return changes


def _lightgbm_config(text: bytes) -> Callable[[Path], dict]:
    """Changes that add the tiny L1 model and a LightGBM config file `l2.yaml` holding `text`."""

    def changes(tmp_path: Path) -> dict:
        (tmp_path / "l2.yaml").write_bytes(text)
        return {"l1__configs": [TINY_VIDEO_L1], "l2__lightgbm_config": str(tmp_path / "l2.yaml")}

    return changes


def _students_config(text: bytes, tower: bytes = b"") -> Callable[[Path], dict]:
    """Changes that add the tiny L1 model and a students directory holding `text` as head.yaml (and
    `tower` as tower.yaml)."""

    def changes(tmp_path: Path) -> dict:
        (tmp_path / "students").mkdir()
        (tmp_path / "students" / "head.yaml").write_bytes(text)
        if tower:
            (tmp_path / "students" / "tower.yaml").write_bytes(tower)
        return {"l1__configs": [TINY_VIDEO_L1], "students": {"configs": str(tmp_path / "students")}}

    return changes


CONFIG_ERRORS = {  # (changes to the config as nested keys joined by "__", a part of the error)
    "unknown key": (lambda _: {"folds__num_fold": 3}, "config.yaml: folds.num_fold: unknown key"),
    "wrong type": (
        lambda _: {"folds__num_folds": "three"},
        "config.yaml: folds.num_folds: expected int, got str 'three'",
    ),
    "number as key": (lambda _: {"data__7": "x"}, "config.yaml: data.7: unknown key"),
    "invalid value": (
        lambda _: {"folds__holdout_fraction": 1.5},
        "config.yaml: folds: holdout_fraction must be in (0, 1)",
    ),
    "empty holdout": (
        lambda _: {"folds__holdout_fraction": 0.0},
        "config.yaml: folds: holdout_fraction must be in (0, 1), got 0.0",
    ),
    "infinite number": (
        lambda _: {"join_shard_mb": float("inf")},
        "config.yaml: join_shard_mb: expected a finite number, got inf",
    ),
    "NaN": (
        lambda _: {"folds__holdout_fraction": float("nan")},
        "config.yaml: folds.holdout_fraction: expected a finite number, got nan",
    ),
    "home with a glob character": (
        lambda _: {"home": "runs/home[1]"},
        "config.yaml: top level: home 'runs/home[1]' contains a glob character (* ? [ ]): Beam's file",
    ),
    "L1 models without a LightGBM config": (
        lambda _: {"l1__configs": [TINY_VIDEO_L1], "l2": {"top_k": 5}},
        "config.yaml: top level: l2.lightgbm_config is required with l1.configs",
    ),
    "students directory that does not exist": (
        lambda tmp_path: {"l1__configs": [TINY_VIDEO_L1], "students": {"configs": str(tmp_path / "nowhere")}},
        "config.yaml: students.configs: no such directory {tmp_path}/nowhere",
    ),
    "L1 config without model": (_l1_config_without_model, "no_model.yaml: model: missing required key"),
    "L1 config with a duplicate key": (
        _l1_config(b"name: a\nmodel: logistic\ntraining:\n  epochs: 2\n  epochs: 3\n"),
        "l1.yaml: epochs: duplicate key (lines 4 and 5)",
    ),
    "L1 config with an infinite number": (
        _l1_config(b"name: a\nmodel: logistic\ntraining: {learning_rate: .inf}\n"),
        "l1.yaml: training.learning_rate: expected a finite number, got inf",
    ),
    "L1 config not UTF-8": (
        _l1_config(b"name: caf\xe9\nmodel: logistic\n"),
        "l1.yaml: not a UTF-8 text file",
    ),
    "LightGBM parameter typo": (
        _lightgbm_config(b"params: {num_leave: 31}\n"),
        "l2.yaml: params.num_leave: unknown LightGBM parameter (did you mean num_leaves",
    ),
    "LightGBM parameter value": (
        _lightgbm_config(b"params: {num_leaves: 1}\n"),
        "l2.yaml: params.num_leaves: LightGBM rejects 1: Check failed: (num_leaves) > (1)",
    ),
    "LightGBM parameter set twice by aliases": (
        _lightgbm_config(b"params: {lambda_l2: 1.0, reg_lambda: 2.0}\n"),
        "l2.yaml: params.reg_lambda: the same LightGBM parameter as params.lambda_l2",
    ),
    "LightGBM parameter the component sets, by an alias": (
        _lightgbm_config(b"params: {random_seed: 3}\n"),
        "l2.yaml: params.random_seed: set by the component (seed)",
    ),
    "LightGBM config with a duplicate key": (
        _lightgbm_config(b"seed: 1\nseed: 2\n"),
        "l2.yaml: seed: duplicate key (lines 1 and 2)",
    ),
    "LightGBM negative_fraction out of range": (
        _lightgbm_config(b"negative_fraction: 0\n"),
        "l2.yaml: top level: negative_fraction must be in (0, 1], got 0",
    ),
    "LightGBM config not UTF-8": (_lightgbm_config(b"seed: 1 # \xff\n"), "l2.yaml: not a UTF-8 text file"),
    "student config not UTF-8": (
        _students_config(b"name: h\xe9ad\nmodel: ensemble\n"),
        "head.yaml: not a UTF-8 text file",
    ),
    "tower named like an L1 model": (
        _students_config(b"name: head\nmodel: ensemble\n", tower=b"name: tiny_gated_mlp\nmodel: A\n"),
        f"tower.yaml: name: 'tiny_gated_mlp' clashes with 'tiny_gated_mlp' ({TINY_VIDEO_L1})",
    ),
    "head named like a tower, but for punctuation": (
        _students_config(b"name: tower.a\nmodel: ensemble\n", tower=b"name: tower_a\nmodel: A\n"),
        "head.yaml: name: 'tower.a' clashes with 'tower_a' ({tmp_path}/students/tower.yaml)",
    ),
    "L1 model named like a reserved row": (
        _l1_config(b"name: EnsembleModel\nmodel: logistic\n"),
        "l1.yaml: name: 'EnsembleModel' clashes with 'EnsembleModel' (reserved for the distilled student",
    ),
}


@pytest.mark.parametrize("case", list(CONFIG_ERRORS))
def test_bad_config_fails_before_anything_runs(case, tiny_data, tmp_path, capsys):
    changes, message = CONFIG_ERRORS[case]
    config = _config_with(tmp_path, tiny_data, **changes(tmp_path))
    assert message.format(tmp_path=tmp_path) in _cli_error(["run", "--config", str(config)], capsys)
    assert not (tmp_path / "home" / "metadata.sqlite").exists()


def test_home_option_with_a_glob_character_fails_before_anything_runs(tiny_data, tmp_path, capsys):
    home = tmp_path / "home[1]"
    config = str(_config_with(tmp_path, tiny_data))
    error = _cli_error(["run", "--config", config, "--home", str(home)], capsys)
    assert error == (
        f"yt8m: error: --home: home '{home}' contains a glob character (* ? [ ]): Beam's file writers match "
        "the paths they write as patterns"
    )
    assert not home.exists()


def test_missing_or_binary_config_file(tmp_path, capsys):
    missing = str(tmp_path / "nowhere.yaml")
    assert _cli_error(["run", "--config", missing], capsys) == f"yt8m: error: {missing}: no such config file"
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    assert "binary.yaml: not a UTF-8 text file" in _cli_error(["run", "--config", str(binary)], capsys)


def test_unwritable_home_fails_before_the_pipeline_starts(tiny_data, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    home = blocker / "home"  # not a directory for anyone, root included
    config = _config_with(tmp_path, tiny_data, home=str(home))
    error = _cli_error(["run", "--config", str(config)], capsys)
    assert error == f"yt8m: error: home directory {home} is not writable: Not a directory"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_home_fails_before_the_pipeline_starts(tiny_data, tmp_path, capsys):
    home = tmp_path / "home"
    home.mkdir(mode=0o555)
    config = _config_with(tmp_path, tiny_data, home=str(home))
    assert "is not writable: Permission denied" in _cli_error(["run", "--config", str(config)], capsys)
    assert list(home.iterdir()) == []


def test_home_in_use_by_another_run_is_refused(tiny_data, tmp_path, capsys):
    home = tmp_path / "home"
    home.mkdir()
    config = _config_with(tmp_path, tiny_data)
    with home_lock(home):
        error = _cli_error(["run", "--config", str(config)], capsys)
    assert error == f"yt8m: error: home directory {home} is used by another yt8m run (pid {os.getpid()})"
    assert not (home / "metadata.sqlite").exists()


@pytest.fixture(scope="module")
def exported_model(tmp_path_factory) -> str:
    """An untrained logistic model exported like an L1 model (`Format-Serving`)."""
    config = parse_l1_config("name: csv_model\nmodel: logistic\ntraining: {seed: 1}\n", "inline.yaml")
    path = str(tmp_path_factory.mktemp("model") / "export")
    export_model(config.build_model(TINY.classes), config, TINY.classes, path, {})
    return path


def test_predict_on_bad_input_names_the_file_and_writes_nothing(exported_model, tiny_data, tmp_path, capsys):
    out = tmp_path / "submission.csv"
    predict = ["predict", "--model", exported_model, "--out", str(out), "--data"]
    pattern = str(tmp_path / "nothing*.tfrecord")
    assert _cli_error([*predict, pattern], capsys) == f"yt8m: error: no files match {pattern}"

    data = tmp_path / "data"
    shutil.copytree(tiny_data / "video", data)
    victim = data / "test0000.tfrecord"
    victim.write_bytes(victim.read_bytes()[:-50])
    error = _cli_error([*predict, str(data / "test*.tfrecord")], capsys)
    assert f"{victim}: corrupted or truncated TFRecord after record 0" in error
    (data / "test0000.tfrecord").write_bytes(b"")
    assert f"{victim}: file holds no records" in _cli_error([*predict, str(data / "test*.tfrecord")], capsys)

    no_model = str(tmp_path / "no_model")
    error = _cli_error(["predict", "--model", no_model, "--out", str(out), "--data", str(victim)], capsys)
    assert "SavedModel file does not exist at: " + no_model in error
    assert list(tmp_path.glob("submission.csv*")) == []  # no partial CSV left behind


SCORE_ERRORS = {
    "malformed row": (b"VideoId,LabelConfidencePairs\na,1 0.9,extra\n", "line 2: expected 2 columns, got 3"),
    "unknown video id": (
        b"VideoId,LabelConfidencePairs\na,1 0.9\nzz,1 0.5\n",
        "line 3: unknown video id 'zz'",
    ),
    "not text": (b"VideoId,LabelConfidencePairs\n\x00\xff\xfe\n", "not UTF-8 text (invalid start byte)"),
    "header only": (b"VideoId,LabelConfidencePairs\n", "no rows after the header"),
    "NaN confidence": (b"VideoId,LabelConfidencePairs\na,1 nan\n", "line 2: confidences must be finite"),
}


@pytest.mark.parametrize("case", list(SCORE_ERRORS))
def test_score_on_bad_submission_names_file_and_line(case, tmp_path, capsys):
    content, message = SCORE_ERRORS[case]
    truth = tmp_path / "truth.csv"
    truth.write_text("VideoId,Labels\na,1 2\nb,3\n")
    submission = tmp_path / "submission.csv"
    submission.write_bytes(content)
    error = _cli_error(["score", str(submission), "--truth", str(truth)], capsys)
    assert error.startswith(f"yt8m: error: {submission}: {message}")


def test_synth_with_bad_settings_or_output(tmp_path, capsys):
    error = _cli_error(["synth", "--out", str(tmp_path / "x"), "--videos", "0"], capsys)
    assert error == "yt8m: error: synth: --videos >= 1, --classes >= 2 and --frames >= 1 are required"
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    error = _cli_error(["synth", "--out", str(blocker / "data"), "--videos", "4"], capsys)
    assert "Not a directory" in error and str(blocker) in error


# --- Concurrent runs, kill and resume, determinism: `yt8m run` in subprocesses --------------------------


@dataclass(frozen=True)
class Run:
    """One `yt8m run --config config --home home`, its output in `log`."""

    config: str
    home: Path
    log: Path

    def executions(self) -> list[NodeExecution]:
        return node_executions(open_store(str(self.home / "metadata.sqlite")), PIPELINE)

    def latest(self) -> dict[str, NodeExecution]:
        return latest_executions(open_store(str(self.home / "metadata.sqlite")), PIPELINE)

    def start(self) -> subprocess.Popen:
        """The run in a new process group (so that a kill reaches every process it started)."""
        with open(self.log, "ab") as log:
            return subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "pipeline.cli",
                    "run",
                    "--config",
                    self.config,
                    "--home",
                    str(self.home),
                ],
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )


def _kill(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _store_now(run: Run) -> list[NodeExecution]:
    """The run's executions so far, read while its process writes them (a busy store reads as empty)."""
    if not (run.home / "metadata.sqlite").exists():
        return []
    try:
        return run.executions()
    except mlmd_errors.StatusError:
        return []


def _wait_for_a_running_trainer(run: Run, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not any(e.node_id.startswith("L1Trainer_") and e.state == "RUNNING" for e in _store_now(run)):
        assert process.poll() is None, "the run ended before an L1Trainer started: " + run.log.read_text()
        assert time.monotonic() < deadline, "no L1Trainer started in time"
        time.sleep(0.5)


@dataclass(frozen=True)
class Runs:
    """Three `yt8m run` at the same time on the tiny data, each in its own home (video level, 2 folds).

    stacked: the tiny video L1 model and the L2 stage, fold seed 1.
    folds_only: no L1 model (the run stops after the fold split), fold seed 2.
    resumed: the stacked config, killed (SIGKILL to its process group) as soon as an L1Trainer runs, then
    run again to the end; at_kill holds the executions ML Metadata had right after the kill.
    """

    stacked: Run
    folds_only: Run
    resumed: Run
    at_kill: list[NodeExecution]


@pytest.fixture(scope="module")
def runs(tiny_data, tmp_path_factory) -> Runs:
    base = tmp_path_factory.mktemp("runs")
    stacked_config = _write_config(
        base / "stacked.yaml", base / "unused", tiny_data, l1=(TINY_VIDEO_L1,), num_folds=2
    )
    stacked = Run(stacked_config, base / "stacked", base / "stacked.log")
    folds_only = Run(
        _write_config(base / "folds_only.yaml", base / "unused", tiny_data, num_folds=2, seed=2),
        base / "folds_only",
        base / "folds_only.log",
    )
    resumed = Run(stacked_config, base / "resumed", base / "resumed.log")
    processes = {run: run.start() for run in (stacked, folds_only, resumed)}
    try:
        _wait_for_a_running_trainer(resumed, processes[resumed])
        _kill(processes[resumed])
        at_kill = resumed.executions()
        processes[resumed] = resumed.start()
        for run, process in processes.items():
            assert process.wait(timeout=RUN_TIMEOUT_S) == 0, run.log.read_text()[-4000:]
    finally:
        for process in processes.values():
            if process.poll() is None:
                _kill(process)
    return Runs(stacked, folds_only, resumed, at_kill)


@pytest.mark.slow
def test_runs_in_separate_homes_do_not_interfere(runs):
    stacked_nodes = FOLDS_ONLY_NODES | {
        *(f"{kind}_{L1}_fold{fold}" for kind in ("L1Trainer", "L1Predict") for fold in (0, 1)),
        f"L1Assemble_{L1}",
        "L2Merge",
        "L2Features",
        "L2LightGBM",
        "SoftLabels",
    }
    for run, nodes in ((runs.stacked, stacked_nodes), (runs.folds_only, FOLDS_ONLY_NODES)):
        executions = run.executions()
        assert sorted(e.node_id for e in executions) == sorted(nodes)  # each once, none of the other run
        assert {e.state for e in executions} == {"COMPLETE"}
        uris = [
            artifact.uri for e in executions for artifacts in e.outputs.values() for artifact in artifacts
        ]
        assert uris and all(uri.startswith(f"{run.home / 'pipeline_root'}/") for uri in uris)


@pytest.mark.slow
def test_class_without_positives_in_a_split_is_a_recorded_warning(runs):
    stacked = runs.stacked
    executions = stacked.latest()
    coverage = property_value(executions["VideoFoldSplit"].outputs["split_examples"][0], "label_coverage")
    assert coverage["holdout"] < 1  # 19 holdout videos do not cover the 30 classes
    missing = round((1 - coverage["holdout"]) * TINY.classes)
    assert f"holdout has no positive video for {missing} of {TINY.classes} classes" in stacked.log.read_text()
    metrics = executions["L2LightGBM"].outputs["metrics"][0]
    assert 0 < property_value(metrics, "holdout_gap") <= 1  # L1 and L2 trained and scored it anyway


@pytest.mark.slow
def test_killed_run_resumes_from_the_cache(runs):
    run, at_kill = runs.resumed, runs.at_kill
    killed = [e for e in at_kill if e.state == "RUNNING"]
    assert len(killed) == 1 and killed[0].node_id.startswith("L1Trainer_")
    finished = {e.node_id for e in at_kill if e.state == "COMPLETE"}
    assert "VideoFoldSplit" in finished and len(finished) == len(at_kill) - 1

    executions = run.executions()
    rerun = executions[len(at_kill) :]
    assert {e.node_id for e in rerun if e.state == "CACHED"} == finished
    assert {e.state for e in rerun} == {"CACHED", "COMPLETE"}
    assert {e.node_id for e in rerun if e.state == "COMPLETE"} >= {killed[0].node_id, "L2LightGBM"}
    assert len(rerun) == len({e.node_id for e in rerun})
    assert [e.state for e in executions if e.execution_id == killed[0].execution_id] == ["RUNNING"]

    def holdout_gap(run: Run) -> float:
        return property_value(run.latest()["L2LightGBM"].outputs["metrics"][0], "holdout_gap")

    assert holdout_gap(run) == holdout_gap(runs.stacked)


def _gzip_records(uri: str, split: str) -> list[bytes]:
    files = tf.io.gfile.glob(os.path.join(uri, f"Split-{split}", "*"))
    return [record.numpy() for record in read_records(files)]


def _fold_ids(run: Run) -> dict[str, list[str]]:
    folds = run.latest()["VideoFoldSplit"].outputs["split_examples"][0]
    splits = property_value(folds, "split_counts")
    return {
        split: sorted(video_id_of(r, "video") for r in _gzip_records(folds.uri, split)) for split in splits
    }


def _parquet(run: Run, node: str, output: str, split: str):
    table = pq.read_table(os.path.join(run.latest()[node].outputs[output][0].uri, f"Split-{split}"))
    return table.to_pandas().sort_values(["video_id", "class_id"]).reset_index(drop=True)


def _l1_predictions(run: Run, split: str) -> dict[str, tuple[int, np.ndarray]]:
    """Video id -> (fold, scores) of the assembled L1 predictions."""
    uri = run.latest()[f"L1Assemble_{L1}"].outputs["predictions"][0].uri
    return {vid: (fold, scores) for vid, fold, scores in map(decode_prediction, _gzip_records(uri, split))}


L1_TOLERANCE = 1e-3  # neural L1 scores on CPU; they came out bit-identical here


@pytest.mark.slow
def test_same_seed_gives_identical_folds_features_and_scores(runs):
    """The resumed run against the uninterrupted one: same config and seeds, different homes and histories."""
    resumed, stacked, folds_only = runs.resumed, runs.stacked, runs.folds_only
    stacked_folds = _fold_ids(stacked)
    assert _fold_ids(resumed) == stacked_folds
    for split in ("oof", "holdout", "test"):
        ours, theirs = _l1_predictions(resumed, split), _l1_predictions(stacked, split)
        assert {vid: fold for vid, (fold, _) in ours.items()} == {
            vid: fold for vid, (fold, _) in theirs.items()
        }
        for vid, (_, scores) in ours.items():
            np.testing.assert_allclose(scores, theirs[vid][1], atol=L1_TOLERANCE)
        for node, output in (("L2Features", "features"), ("L2LightGBM", "scores")):
            pd.testing.assert_frame_equal(
                _parquet(resumed, node, output, split),
                _parquet(stacked, node, output, split),
                check_exact=True,
            )

    other_seed = _fold_ids(folds_only)  # fold seed 2 instead of 1, same data and settings
    assert other_seed["test"] == stacked_folds["test"]
    assert other_seed["fold_0"] != stacked_folds["fold_0"]

    def labelled(folds: dict[str, list[str]]) -> list[str]:
        return sorted(vid for split, ids in folds.items() if split != "test" for vid in ids)

    assert labelled(other_seed) == labelled(stacked_folds)


# --- Safe formats: nothing that executes code on load ------------------------------------------------

UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}
UNSAFE_YAML = {"load", "unsafe_load", "full_load", "load_all", "unsafe_load_all", "full_load_all"}
UNSAFE_YAML_LOADERS = {"Loader", "UnsafeLoader", "FullLoader"}
SCANNED = ("pipeline", "components", "trainer", "benchmarks", "tests")


def _keyword_is(call: ast.Call, name: str, value: object) -> bool:
    return any(
        k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is value for k in call.keywords
    )


def unsafe_loads(source: str) -> list[str]:
    """Lines of Python source that import pickle-like modules, load YAML unsafely or let NumPy unpickle."""
    found = []
    for node in ast.walk(ast.parse(source)):
        line = f"line {getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import | ast.ImportFrom):
            modules = (
                [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            )
            found += [f"{line}: imports {m}" for m in modules if m.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.Attribute):
            owner = node.value.id if isinstance(node.value, ast.Name) else ""
            if owner == "yaml" and node.attr in UNSAFE_YAML_LOADERS:
                found.append(f"{line}: yaml.{node.attr}")
            if node.attr in ("read_pickle", "to_pickle"):
                found.append(f"{line}: {node.attr}")
        elif isinstance(node, ast.Call):
            func = node.func
            owner = (
                func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
            )
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if _keyword_is(node, "allow_pickle", True):
                found.append(f"{line}: allow_pickle=True")
            if owner == "yaml" and name in UNSAFE_YAML:
                found.append(f"{line}: yaml.{name}(")
            if owner in ("np", "numpy") and name == "load" and not _keyword_is(node, "allow_pickle", False):
                found.append(f"{line}: np.load without allow_pickle=False")
            if _keyword_is(node, "safe_mode", False):
                found.append(f"{line}: safe_mode=False")
    return found


@pytest.mark.parametrize(
    "source",
    [
        "import pickle",
        "from joblib import load",
        "import yaml\nyaml.load(text, Loader=yaml.Loader)",
        "yaml.unsafe_load(text)",
        "np.load(path)",
        "numpy.load(path, allow_pickle=True)",
        "frame = pd.read_pickle(path)",
        "keras.models.load_model(path, safe_mode=False)",
    ],
)
def test_scanner_finds_unsafe_loads(source):
    assert unsafe_loads(source)


def test_project_source_loads_nothing_unsafely():
    own = Path(__file__).resolve()
    files = [path for folder in SCANNED for path in sorted((REPO / folder).rglob("*.py")) if path != own]
    assert len(files) > 50
    offenders = {
        str(path.relative_to(REPO)): found for path in files if (found := unsafe_loads(path.read_text()))
    }
    assert offenders == {}
    assert unsafe_loads("yaml.safe_load(text)\nnp.load(path, allow_pickle=False)") == []
