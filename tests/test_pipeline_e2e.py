"""End-to-end runs of the pipeline on tiny data, asserted through ML Metadata."""

from __future__ import annotations

import _thread
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
import yaml

from pipeline import cli
from pipeline.config import load_pipeline_config
from pipeline.metadata import (
    latest_executions,
    latest_run_id,
    node_executions,
    open_store,
    property_value,
    run_executions,
)
from pipeline.runner import run_pipeline, stage_summary
from tests import builders
from tests.conftest import LIGHTGBM_CONFIG, TINY_L1_CONFIGS
from trainer.l1_run import EPOCH_LOG
from trainer.predictions import AVERAGED, decode_prediction, prediction_video_id
from trainer.readers import read_records
from trainer.records import video_id_of
from trainer.soft_labels import decode_soft_labels
from trainer.submission import score_submission

L1_NAMES = ("tiny_gated_mlp", "tiny_pooling")

FOLDS = 3
SPLITS = [f"fold_{k}" for k in range(FOLDS)] + ["holdout"]
BASE_NODES = {
    "VideoExampleGen",
    "FrameExampleGen",
    "StatisticsGen",
    "SchemaGen",
    "VideoFoldSplit",
    "FrameFoldSplit",
    "VideoSchema",
    "Transform",
}
L1_NODES = {
    f"{kind}_{name}_fold{k}" for kind in ("L1Trainer", "L1Predict") for name in L1_NAMES for k in range(FOLDS)
} | {f"L1Assemble_{name}" for name in L1_NAMES}
L2_NODES = {"L2Merge", "L2Features", "L2LightGBM", "SoftLabels"}
TOWER_NAMES = ("tiny_tower_a", "tiny_tower_c")
STUDENT_NODES = (
    {
        f"{kind}_{name}_fold{k}"
        for kind in ("StudentTrainer", "StudentPredict")
        for name in TOWER_NAMES
        for k in range(FOLDS)
    }
    | {f"StudentAssemble_{name}" for name in TOWER_NAMES}
    | {f"StudentTrainer_{name}_refit" for name in TOWER_NAMES}
    | {"HeadExamples", "StudentTrainer_head", "StudentExport", "StudentEvaluator", "Pusher", "BatchInference"}
)
pytestmark = pytest.mark.slow


def _records(uri: str, split: str) -> list[bytes]:
    files = tf.io.gfile.glob(os.path.join(uri, f"Split-{split}", "*"))
    return [record.numpy() for record in read_records(files)]


def _split_ids(artifact, split: str) -> list[str]:
    level = "frame" if "Frame" in artifact.uri else "video"
    return sorted(video_id_of(record, level) for record in _records(artifact.uri, split))


def test_pipeline_runs_every_stage_over_folds(tiny_run):
    config = tiny_run
    executions = latest_executions(open_store(config.metadata_path), config.pipeline_name)
    assert set(executions) == BASE_NODES | L1_NODES | L2_NODES | STUDENT_NODES
    assert {e.state for e in executions.values()} == {"COMPLETE"}

    video, frame = (executions[n].outputs["split_examples"][0] for n in ("VideoFoldSplit", "FrameFoldSplit"))
    video_ids = {split: _split_ids(video, split) for split in [*SPLITS, "test"]}
    assert video_ids == {split: _split_ids(frame, split) for split in [*SPLITS, "test"]}  # one fold map
    labelled = [vid for split in SPLITS for vid in video_ids[split]]
    assert len(labelled) == len(set(labelled)) == 204  # train + validate of the 240 tiny videos, once each
    assert len(video_ids["test"]) == 36 and all(video_ids[split] for split in SPLITS)
    assert property_value(video, "split_counts") == {split: len(ids) for split, ids in video_ids.items()}
    coverage = property_value(video, "label_coverage")
    assert set(coverage) == set(SPLITS) and all(0 < share <= 1 for share in coverage.values())
    assert property_value(frame, "seed") == 7 and property_value(frame, "num_folds") == FOLDS
    assert video.custom_properties["fold_map_fingerprint"] == frame.custom_properties["fold_map_fingerprint"]

    split_of = {vid: split for split in SPLITS for vid in video_ids[split]}
    fold_videos = sorted(vid for vid in labelled if split_of[vid] != "holdout")
    for name in L1_NAMES:
        assembled = executions[f"L1Assemble_{name}"].outputs["predictions"][0]
        fold_models = property_value(assembled, "fold_models")
        assert sorted(fold_models) == [str(k) for k in range(FOLDS)]
        for fold, model in fold_models.items():
            assert f"fold_{fold}" not in model["train_splits"] and len(model["train_splits"]) == FOLDS - 1
        oof = [decode_prediction(r) for r in _records(assembled.uri, "oof")]
        assert sorted(vid for vid, _, _ in oof) == fold_videos  # every fold video exactly once
        for vid, fold, scores in oof:
            assert (
                split_of[vid] == f"fold_{fold}"
                and split_of[vid] not in fold_models[str(fold)]["train_splits"]
            )
            assert scores.shape == (30,) and 0 <= scores.min() and scores.max() <= 1
        for split in ("holdout", "test"):
            averaged = [decode_prediction(r) for r in _records(assembled.uri, split)]
            assert sorted(vid for vid, _, _ in averaged) == video_ids[split]
            assert {fold for _, fold, _ in averaged} == {AVERAGED}

    graph = executions["Transform"].outputs["transform_graph"][0].uri
    for node, transformed in (
        ("L1Trainer_tiny_gated_mlp_fold0", graph),
        ("L1Trainer_tiny_pooling_fold0", None),
    ):
        model = executions[node].outputs["model"][0].uri
        with tf.io.gfile.GFile(
            os.path.join(model, "Format-Serving", "assets.extra", "training_info.json")
        ) as f:
            assert json.load(f)["transform_graph"] == transformed, node  # video-level models only

    _assert_l2_stage(executions, fold_videos)
    _assert_student_stage(executions, config, fold_videos)
    summary = stage_summary(config)
    named = [
        name for name in ("L2 stack", "EnsembleModel", *L1_NAMES, *TOWER_NAMES) if name in "\n".join(summary)
    ]
    assert len(named) == 6 and any(line.startswith("holdout L2 stack - best L1") for line in summary)
    assert summary[-1].startswith("submission GAP@20 against") and 0 < float(summary[-1].split()[-1]) <= 1


def _copy_sources(destination: Path) -> Path:
    """The project's packages and README, copied so that a test can edit them."""
    root = Path(__file__).parents[1]
    for package in ("components", "pipeline", "trainer"):
        shutil.copytree(root / package, destination / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(root / "README.md", destination)
    return destination


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, path
    path.write_text(text.replace(old, new, 1))


def _run_from(source: Path, config_path: Path) -> list[str]:
    """`yt8m run` in a fresh process that imports the project from `source`; its progress lines."""
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "run", "--config", str(config_path)],
        cwd=source,
        env={**os.environ, "PYTHONPATH": str(source)},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Epoch 1/" not in result.stderr  # Keras's epoch lines go to each Trainer's epochs.log
    return re.findall(r"\[\d+/\d+\] .*", result.stderr)


def test_rerun_is_cached_until_a_config_or_a_line_of_code_the_node_runs_changes(tiny_data, tmp_path):
    source = _copy_sources(tmp_path / "source")
    l1_configs = [shutil.copy(path, tmp_path) for path in TINY_L1_CONFIGS]
    config_path = tmp_path / "pipeline.yaml"
    config_path.write_text(
        yaml.safe_dump(
            {
                "pipeline_name": "yt8m-test",
                "home": str(tmp_path / "home"),
                "data": {
                    "video_dir": str(tiny_data / "video"),
                    "frame_dir": str(tiny_data / "frame"),
                    "num_classes": 30,
                },
                "folds": {"num_folds": FOLDS, "holdout_fraction": 0.1, "seed": 7},
                "l1": {"configs": l1_configs},
                "l2": {"lightgbm_config": LIGHTGBM_CONFIG},
            }
        )
    )
    config = load_pipeline_config(config_path)
    progress = _run_from(source, config_path)
    executions = latest_executions(open_store(config.metadata_path), config.pipeline_name)
    assert set(executions) == BASE_NODES | L1_NODES | L2_NODES
    total = len(executions)
    assert [line.split()[0] for line in progress] == [f"[{k}/{total}]" for k in range(1, total + 1)]
    assert all(line.split()[4] == "ran;" and "left" not in line for line in progress)  # no earlier run
    trainer = executions["L1Trainer_tiny_pooling_fold0"].outputs["model_run"][0]
    epochs = (Path(trainer.uri) / EPOCH_LOG).read_text().splitlines()
    assert len(epochs) == 2
    assert re.fullmatch(r"epoch 1/2  .*loss \d\.\d{4}  val_gap \d\.\d{4}  \(\d+\.\d s\)", epochs[0])
    first_run = latest_run_id(open_store(config.metadata_path), config.pipeline_name)

    def rerun() -> set[str]:
        """Runs again; the ids of the nodes that ran (every other node of the run is CACHED, and the progress
        lines say the same, with an estimate from the previous run)."""
        done = len(node_executions(open_store(config.metadata_path), config.pipeline_name))
        progress = _run_from(source, config_path)
        new = node_executions(open_store(config.metadata_path), config.pipeline_name)[done:]
        assert len(new) == total and {e.state for e in new} <= {"COMPLETE", "CACHED"}
        said = {line.split()[1]: line.split()[4] for line in progress}
        assert said == {e.node_id: "ran;" if e.state == "COMPLETE" else "cached;" for e in new}
        assert all("left" in line for line in progress[:-1])
        return {e.node_id for e in new if e.state == "COMPLETE"}

    # A changed README is code no node runs: everything comes from the cache.
    _edit(source / "README.md", "# yt8m-tfx", "# yt8m-tfx (edited)")
    assert rerun() == set()
    store = open_store(config.metadata_path)
    second_run = latest_run_id(store, config.pipeline_name)  # the cached executions belong to this run
    assert second_run != first_run and len(run_executions(store, config.pipeline_name)) == len(executions)
    summary = stage_summary(config)  # this run's (cached) stack, no student stage in this pipeline
    assert summary[0] == f"run {second_run}" and summary[-1].startswith("holdout GAP@20  L2 LightGBM stack")

    # Editing one L1 config reruns that model's nodes and everything downstream, nothing else.
    _edit(Path(l1_configs[1]), "epochs: 2", "epochs: 1")
    assert rerun() == {n for n in L1_NODES if "tiny_pooling" in n} | L2_NODES

    # A changed line of SoftLabels' executor reruns SoftLabels (the last node) and nothing else.
    _edit(source / "components/soft_labels/executor.py", "\n\n\n", "\n\n# edited\n\n")
    assert rerun() == {"SoftLabels"}


def _assert_l2_stage(executions, fold_videos: list[str]) -> None:
    """Stacker scores are out-of-fold, the stage report is in MLMD, soft labels cover every fold video."""
    scores = executions["L2LightGBM"].outputs["scores"][0]
    oof = pq.read_table(os.path.join(scores.uri, "Split-oof")).to_pandas()
    assert oof["score"].between(0, 1).all() and oof["score"].nunique() > 2  # probabilities, not 0/1
    # Each OOF score is what the saved booster of the row's own fold gives its features, and that booster
    # trained on the other folds only.
    model = executions["L2LightGBM"].outputs["model"][0]
    with open(os.path.join(model.uri, "folds.json")) as handle:
        folds = json.load(handle)
    features = pq.read_table(
        os.path.join(executions["L2Features"].outputs["features"][0].uri, "Split-oof")
    ).to_pandas()
    rows = features.merge(oof[["video_id", "class_id", "score"]], on=["video_id", "class_id"], validate="1:1")
    assert len(rows) == len(oof) == len(features) and sorted(rows["fold"].unique()) == list(range(FOLDS))
    for fold, part in rows.groupby("fold"):
        assert folds["folds"][str(fold)]["train_folds"] == sorted(set(range(FOLDS)) - {fold})
        booster = lgb.Booster(model_file=os.path.join(model.uri, f"fold_{fold}.txt"))
        np.testing.assert_allclose(part["score"], booster.predict(part[folds["feature_columns"]]), rtol=1e-5)
    metrics = executions["L2LightGBM"].outputs["metrics"][0]
    assert set(property_value(metrics, "l1_holdout_gap")) == set(L1_NAMES)
    assert 0 < property_value(metrics, "holdout_gap") <= 1
    assert sorted(property_value(metrics, "fold_gap")) == [str(k) for k in range(FOLDS)]
    features = executions["L2Features"].outputs["features"][0]
    assert 0 < property_value(features, "candidate_recall")["oof"] <= 1
    soft_labels = executions["SoftLabels"].outputs["soft_labels"][0]
    decoded = [decode_soft_labels(r) for r in _records(soft_labels.uri, "train")]
    assert sorted(video_id for video_id, _, _ in decoded) == fold_videos
    assert all(ids.size > 0 and ((scores >= 0) & (scores <= 1)).all() for _, ids, scores in decoded)


def _training_info(model) -> dict:
    with open(os.path.join(model.uri, "Format-Serving", "assets.extra", "training_info.json")) as handle:
        return json.load(handle)


def _assert_student_stage(executions, config, fold_videos: list[str]) -> None:
    """Towers OOF + refit, head on OOF tower outputs, one exported graph, evaluation, push and submission."""
    all_folds = [f"fold_{k}" for k in range(FOLDS)]
    for name in TOWER_NAMES:
        refit = _training_info(executions[f"StudentTrainer_{name}_refit"].outputs["model"][0])
        assert refit["fold"] == -1 and refit["train_splits"] == all_folds and refit["config"] == name
        assembled = executions[f"StudentAssemble_{name}"].outputs["predictions"][0]
        assert sorted(prediction_video_id(r) for r in _records(assembled.uri, "oof")) == fold_videos

    head_examples = executions["HeadExamples"].outputs["head_examples"][0]
    assert property_value(head_examples, "tower_names") == list(TOWER_NAMES)
    for name, fold_models in property_value(head_examples, "tower_fold_models").items():
        assert sorted(fold_models) == [str(k) for k in range(FOLDS)], name
        for (
            fold,
            model,
        ) in fold_models.items():  # each fold's tower outputs come from a model that did not see it
            assert f"fold_{fold}" not in model["train_splits"]
    head = executions["StudentTrainer_head"]
    assert head.inputs["examples"][0].id == head_examples.id
    head_info = _training_info(head.outputs["model"][0])
    assert head_info["tower_names"] == list(TOWER_NAMES) and head_info["train_splits"] == all_folds

    exported = executions["StudentExport"].outputs["model"][0]
    assert property_value(exported, "tower_names") == list(TOWER_NAMES)
    assert property_value(exported, "parameter_count") > 0 and property_value(exported, "size_bytes") > 0

    evaluation = executions["StudentEvaluator"].outputs["evaluation"][0]
    holdout, roles = property_value(evaluation, "holdout"), property_value(evaluation, "roles")
    served = [f"{name} (refit)" for name in TOWER_NAMES]
    assert set(holdout) == {
        *L1_NAMES,
        "mean of L1 models",
        *TOWER_NAMES,
        *served,
        "L2 stack",
        "EnsembleModel",
    }
    assert {roles[name] for name in served} == {"tower (served, refit)"}
    assert {roles[name] for name in TOWER_NAMES} == {f"tower ({FOLDS}-fold mean)"}
    for metrics in holdout.values():
        assert set(metrics) == {"gap", "gap_interval", "hit_at_1", "perr", "map"}
        low, high = metrics["gap_interval"]
        assert 0 <= low <= high <= 1
        assert all(0 <= metrics[key] <= 1 for key in ("hit_at_1", "perr", "map"))
    assert property_value(evaluation, "split") == "holdout"
    assert len(property_value(evaluation, "differences")) == 4
    assert property_value(evaluation, "blessed") == 1
    assert property_value(executions["StudentEvaluator"].outputs["blessing"][0], "blessed") == 1

    pushed = executions["Pusher"].outputs["pushed_model"][0]
    destination = property_value(pushed, "pushed_destination")
    assert property_value(pushed, "pushed") == 1 and destination.startswith(config.push_directory)
    assert os.path.exists(os.path.join(destination, "saved_model.pb"))

    submission = executions["BatchInference"].outputs["submission"][0]
    assert property_value(submission, "rows") == 36
    with open(property_value(submission, "file")) as handle:
        lines = handle.read().splitlines()
    assert lines[0] == "VideoId,LabelConfidencePairs" and len(lines) == 37
    for line in lines[1:]:
        video_id, pairs = line.split(",")
        values = pairs.split(" ")
        classes, scores = [int(c) for c in values[::2]], [float(v) for v in values[1::2]]
        assert len(classes) == 20 == len(set(classes)) and all(0 <= c < 30 for c in classes)
        assert scores == sorted(scores, reverse=True) and all(0 <= v <= 1 for v in scores)


def test_pushed_model_predicts_and_scores_in_a_fresh_process(tiny_run, tiny_data, tmp_path):
    executions = latest_executions(open_store(tiny_run.metadata_path), tiny_run.pipeline_name)
    destination = property_value(executions["Pusher"].outputs["pushed_model"][0], "pushed_destination")
    out = tmp_path / "submission.csv"
    command = [sys.executable, "-m", "pipeline.cli"]
    data = str(tiny_data / "video" / "test*.tfrecord")
    subprocess.run(
        [*command, "predict", "--model", destination, "--data", data, "--out", str(out)], check=True
    )
    scored = subprocess.run(
        [*command, "score", str(out), "--truth", str(tiny_data / "test_truth.csv")],
        check=True,
        capture_output=True,
        text=True,
    )
    gap = float(scored.stdout.split()[-1])
    batch = property_value(executions["BatchInference"].outputs["submission"][0], "file")
    assert sorted(out.read_text().splitlines()) == sorted(Path(batch).read_text().splitlines())
    assert (
        gap == pytest.approx(score_submission(batch, tiny_data / "test_truth.csv"), abs=1e-6) and 0 < gap <= 1
    )


def _write_config(tmp_path, data_dir, frame: bool = False) -> str:
    config = {
        "pipeline_name": "yt8m-bad",
        "home": str(tmp_path / "home"),
        "data": {
            "video_dir": str(data_dir / "video"),
            "frame_dir": str(data_dir / "frame") if frame else None,
            "num_classes": 30,
        },
        "folds": {"num_folds": 3, "holdout_fraction": 0.1, "seed": 1},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def _failed_node(tmp_path, node_id: str):
    executions = node_executions(open_store(str(tmp_path / "home" / "metadata.sqlite")), "yt8m-bad")
    failed = [e for e in executions if e.node_id == node_id]
    assert [e.state for e in failed] == ["FAILED"]
    assert failed[0].outputs == {}  # nothing published
    return executions


def test_corrupted_tfrecord_fails_ingestion_naming_the_file(tiny_data, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(tiny_data / "video", data / "video")
    victim = data / "video" / "validate0000.tfrecord"
    victim.write_bytes(victim.read_bytes()[:-50])
    assert cli.main(["run", "--config", _write_config(tmp_path, data)]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert (
        error.startswith("yt8m: error: ")
        and "validate0000.tfrecord: corrupted or truncated TFRecord" in error
    )
    executions = _failed_node(tmp_path, "VideoExampleGen")
    assert {e.node_id for e in executions} == {"VideoExampleGen"}


def test_video_id_that_is_not_utf8_fails_ingestion_naming_file_and_record(tiny_data, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(tiny_data / "video", data / "video")
    records = [r.numpy() for r in tf.data.TFRecordDataset(str(data / "video" / "validate0000.tfrecord"))]
    broken = tf.train.Example.FromString(records[1])
    broken.features.feature["id"].bytes_list.value[0] = b"\xff\xfe"
    records[1] = broken.SerializeToString()
    builders.write_tfrecord(data / "video" / "validate0000.tfrecord", records)
    assert cli.main(["run", "--config", _write_config(tmp_path, data)]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    path = data / "video" / "validate0000.tfrecord"
    assert error == f"yt8m: error: {path}: record 1: feature 'id': b'\\xff\\xfe' is not valid UTF-8"
    executions = _failed_node(tmp_path, "VideoExampleGen")
    assert {e.node_id for e in executions} == {"VideoExampleGen"}


def test_an_input_that_is_a_directory_is_one_line_and_its_node_failed(tiny_data, tmp_path, capsys):
    """TensorFlow's file-layer errors are not OSErrors: the CLI still reports one line, and ML Metadata
    records the node FAILED with the error, nothing published."""
    data = tmp_path / "data"
    shutil.copytree(tiny_data / "video", data / "video")
    (data / "video" / "validate0009.tfrecord").mkdir()
    assert cli.main(["run", "--config", _write_config(tmp_path, data)]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error == f"yt8m: error: {data / 'video' / 'validate0009.tfrecord'}; Is a directory"
    executions = _failed_node(tmp_path, "VideoExampleGen")
    assert {e.node_id for e in executions} == {"VideoExampleGen"}
    store = open_store(str(tmp_path / "home" / "metadata.sqlite"))
    (failed,) = store.get_executions_by_id([executions[0].execution_id])
    assert failed.custom_properties["error"].string_value == (
        f"FailedPreconditionError: {data / 'video' / 'validate0009.tfrecord'}; Is a directory"
    )


def _interrupt_when_a_node_runs(metadata: Path) -> None:
    """Ctrl-C (KeyboardInterrupt in the main thread) once an execution in `metadata` is RUNNING."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            running = [
                e for e in node_executions(open_store(str(metadata)), "yt8m-bad") if e.state == "RUNNING"
            ]
        except Exception:  # noqa: BLE001 (the store is still being created)
            running = []
        if running:
            _thread.interrupt_main()
            return
        time.sleep(0.05)


def test_an_interrupted_run_leaves_no_execution_running(tiny_data, tmp_path):
    """TFX marks FAILED only a node whose executor raised an Exception: after Ctrl-C its execution would stay
    RUNNING for ever. The runner marks the run's unfinished executions FAILED, with the error."""
    config = load_pipeline_config(_write_config(tmp_path, tiny_data))
    # A shell starts background jobs with SIGINT ignored, and interrupt_main() then does nothing.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    watcher = threading.Thread(target=_interrupt_when_a_node_runs, args=(Path(config.metadata_path),))
    watcher.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            run_pipeline(config)
    finally:
        watcher.join()
        signal.signal(signal.SIGINT, previous)
    store = open_store(config.metadata_path)
    executions = node_executions(store, "yt8m-bad")
    assert [(e.node_id, e.state, e.outputs) for e in executions] == [("VideoExampleGen", "FAILED", {})]
    (failed,) = store.get_executions_by_id([executions[0].execution_id])
    assert failed.custom_properties["error"].string_value == "KeyboardInterrupt"


def test_duplicate_video_id_fails_fold_split_with_beam_dag_runner(tiny_data, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(tiny_data / "video", data / "video")
    first_train = next(iter(tf.data.TFRecordDataset(str(data / "video" / "train0000.tfrecord")))).numpy()
    builders.write_tfrecord(data / "video" / "validate0009.tfrecord", [first_train])
    duplicate = tf.train.Example.FromString(first_train).features.feature["id"].bytes_list.value[0].decode()
    assert cli.main(["run", "--config", _write_config(tmp_path, data), "--runner", "beam"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"video id '{duplicate}' appears 2 times in the input (splits: train, validate)" in error
    executions = _failed_node(tmp_path, "VideoFoldSplit")
    assert {e.node_id: e.state for e in executions}["VideoExampleGen"] == "COMPLETE"
