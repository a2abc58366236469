"""`yt8m lineage` and `yt8m report` on the ML Metadata of one tiny pipeline run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from components.artifacts import SoftLabelIndex
from pipeline import cli, lineage, report
from pipeline.metadata import latest_executions, open_store, property_value

pytestmark = pytest.mark.slow
L1_CONFIGS = {"tiny_gated_mlp": ("Video", "tiny_video.yaml"), "tiny_pooling": ("Frame", "tiny_frame.yaml")}
FOLDS = 3


@pytest.fixture(scope="module")
def store(tiny_run):
    return open_store(tiny_run.metadata_path)


@pytest.fixture(scope="module")
def soft_labels_lineage(store) -> lineage.Lineage:
    return lineage.trace(store, lineage.latest_artifact_id(store, SoftLabelIndex.TYPE_NAME))


def _producers(traced: lineage.Lineage) -> dict[str, lineage.Producer]:
    return {node.producer.node_id: node.producer for node in traced.artifacts.values() if node.producer}


def test_lineage_walks_back_to_the_input_files(tiny_run, soft_labels_lineage):
    producers = _producers(soft_labels_lineage)
    l1_nodes = {f"L1Assemble_{name}" for name in L1_CONFIGS} | {
        f"{kind}_{name}_fold{fold}"
        for kind in ("L1Trainer", "L1Predict")
        for name in L1_CONFIGS
        for fold in range(FOLDS)
    }
    inputs = {"VideoExampleGen", "FrameExampleGen", "VideoFoldSplit", "FrameFoldSplit"}
    base = inputs | {"VideoSchema", "Transform"}
    assert set(producers) == {"SoftLabels", "L2LightGBM", "L2Features", "L2Merge"} | l1_nodes | base
    assert soft_labels_lineage.artifacts[soft_labels_lineage.root_id].producer.node_id == "SoftLabels"
    for name, (level, config_file) in L1_CONFIGS.items():
        assert producers[f"L1Assemble_{name}"].properties["config_name"] == name
        for fold in range(FOLDS):
            trainer = producers[f"L1Trainer_{name}_fold{fold}"]
            assert trainer.properties["fold"] == fold
            assert Path(trainer.properties["l1_config_source"]).name == config_file
            predict = producers[f"L1Predict_{name}_fold{fold}"]
            assert (predict.properties["config_name"], predict.properties["fold"]) == (name, fold)
            assert set(predict.inputs) == {"examples", "model"}
            (model_id,) = predict.inputs["model"]
            assert soft_labels_lineage.artifacts[model_id].producer is trainer or (
                soft_labels_lineage.artifacts[model_id].producer.node_id == trainer.node_id
            )
            (examples_id,) = predict.inputs["examples"]
            assert soft_labels_lineage.artifacts[examples_id].producer.node_id == f"{level}FoldSplit"
            # Video-level trainers read the Transform graph, analysed on the video fold split
            expected_inputs = {"examples", "transform_graph"} if level == "Video" else {"examples"}
            assert set(trainer.inputs) == expected_inputs
    for layout, directory in (("Video", tiny_run.data.video_dir), ("Frame", tiny_run.data.frame_dir)):
        example_gen = producers[f"{layout}ExampleGen"]
        assert example_gen.inputs == {}
        assert example_gen.properties["input_base"] == directory
        assert example_gen.input_files == [
            f"{directory}/{s}*.tfrecord" for s in ("train", "validate", "test")
        ]
    fold_split = next(
        n for n in soft_labels_lineage.artifacts.values() if n.producer.node_id == "VideoFoldSplit"
    )
    assert set(fold_split.properties["split_counts"]) == {"fold_0", "fold_1", "fold_2", "holdout", "test"}
    transform_inputs = {
        key: {soft_labels_lineage.artifacts[i].producer.node_id for i in ids}
        for key, ids in producers["Transform"].inputs.items()
    }
    assert transform_inputs == {"examples": {"VideoFoldSplit"}, "schema": {"VideoSchema"}}
    merge = producers["L2Merge"]
    assert len([key for key in merge.inputs if key.startswith("predictions")]) == len(L1_CONFIGS)
    for producer in producers.values():
        assert producer.state == "COMPLETE" and producer.created_ms <= producer.updated_ms


def test_text_tree_prints_shared_artifacts_once(soft_labels_lineage):
    tree = lineage.text_tree(soft_labels_lineage)
    lines = tree.splitlines()
    root = soft_labels_lineage.root_id
    assert lines[0].startswith(f"artifact {root} {SoftLabelIndex.TYPE_NAME}  <- SoftLabels (execution ")
    printed = re.findall(r"artifact (\d+) \S+  (?:<-|\(no producing)", tree)
    assert sorted(map(int, printed)) == sorted(soft_labels_lineage.artifacts)
    fold_split_id = next(
        i for i, n in soft_labels_lineage.artifacts.items() if n.producer.node_id == "VideoFoldSplit"
    )
    assert tree.count(f"artifact {fold_split_id} Examples (shown above)") >= 2 * FOLDS
    assert "| input files " in tree and "train*.tfrecord" in tree


def test_dot_has_every_artifact_execution_and_input(soft_labels_lineage):
    dot = lineage.to_dot(soft_labels_lineage)
    assert dot.startswith("digraph lineage {") and dot.rstrip().endswith("}")
    artifact_nodes = re.findall(r"^  a(\d+) \[shape=ellipse", dot, flags=re.M)
    assert sorted(map(int, artifact_nodes)) == sorted(soft_labels_lineage.artifacts)
    producers = _producers(soft_labels_lineage)
    for node_id, producer in producers.items():
        assert f'label="{node_id}\\nexecution {producer.execution_id} COMPLETE' in dot
    trainer = producers["L1Trainer_tiny_pooling_fold2"]
    (model_id,) = producers["L1Predict_tiny_pooling_fold2"].inputs["model"]
    assert f"e{trainer.execution_id} -> a{model_id};" in dot
    predict_id = producers["L1Predict_tiny_pooling_fold2"].execution_id
    assert f'a{model_id} -> e{predict_id} [label="model"];' in dot
    assert len(re.findall(r"\[shape=note", dot)) == 6  # 3 split patterns x 2 ExampleGens


def test_lineage_cli_prints_the_tree_and_writes_dot(tiny_run, soft_labels_lineage, tmp_path, capsys):
    dot_file = tmp_path / "lineage.dot"
    argv = ["lineage", "--home", tiny_run.home, "--artifact", str(soft_labels_lineage.root_id)]
    assert cli.main([*argv, "--dot", str(dot_file)]) == 0
    assert capsys.readouterr().out == lineage.text_tree(soft_labels_lineage)
    assert dot_file.read_text() == lineage.to_dot(soft_labels_lineage)
    png = tmp_path / "lineage.png"
    if lineage.graphviz_available():
        assert cli.main([*argv, "--png", str(png)]) == 0
        assert png.read_bytes().startswith(b"\x89PNG")
    else:
        assert cli.main([*argv, "--png", str(png)]) == 2
        assert "graphviz `dot` is not on PATH" in capsys.readouterr().err
        assert not png.exists()


def test_lineage_errors_are_one_line(tiny_run, store, tmp_path, capsys):
    assert cli.main(["lineage", "--home", tiny_run.home, "--artifact", "987654"]) == 2
    assert capsys.readouterr().err.strip() == "yt8m: error: no artifact with id 987654 in ML Metadata"
    assert cli.main(["lineage", "--home", str(tmp_path)]) == 2
    message = capsys.readouterr().err.strip()
    assert (
        message
        == f"yt8m: error: no ML Metadata at {tmp_path / 'metadata.sqlite'} (run the pipeline first: yt8m run)"
    )
    pushed = store.get_artifacts_by_type(lineage.PUSHED_MODEL_TYPE)
    assert len(pushed) == 1  # the tiny run is blessed: its pushed model is traced back to the input files
    assert cli.main(["lineage", "--home", tiny_run.home, "--latest-pushed"]) == 0
    tree = capsys.readouterr().out
    assert tree.startswith(f"artifact {pushed[0].id} PushedModel  <- Pusher")
    assert "StudentExport" in tree and "VideoExampleGen" in tree
    empty = tmp_path / "empty"  # a real store in which nothing was pushed
    empty.mkdir()
    connection = metadata_store_pb2.ConnectionConfig()
    connection.sqlite.filename_uri = str(empty / "metadata.sqlite")
    metadata_store.MetadataStore(connection)  # creates the sqlite store (READWRITE_OPENCREATE)
    assert cli.main(["lineage", "--home", str(empty), "--latest-pushed"]) == 2
    message = "yt8m: error: no PushedModel artifact in ML Metadata (has the node that writes it run?)"
    assert capsys.readouterr().err.strip() == message


def test_report_shows_gaps_folds_timings_counts_and_lineage(tiny_run, store, tmp_path):
    out = tmp_path / "report.html"
    assert cli.main(["report", "--home", tiny_run.home, "--out", str(out)]) == 0
    page = out.read_text()
    executions = latest_executions(store, tiny_run.pipeline_name)
    metrics = executions["L2LightGBM"].outputs["metrics"][0]
    for fold, gap in property_value(metrics, "fold_gap").items():
        assert f'<td>fold {fold}</td><td class="number">{gap:.4f}</td>' in page
    counts = property_value(executions["VideoFoldSplit"].outputs["split_examples"][0], "split_counts")
    for split, count in counts.items():
        assert f'<td>{split}</td><td class="number">{int(count)}</td>' in page
    for node_id, execution in executions.items():
        assert f"<td>{node_id}</td><td>{execution.state}</td>" in page
    assert len(re.findall(r'<img alt="chart" src="data:image/png;base64,[A-Za-z0-9+/=]{200,}">', page)) >= 3
    assert "VideoExampleGen" in page.split("<h2>Lineage</h2>", 1)[1]
    evaluation = executions["StudentEvaluator"].outputs["evaluation"][0]
    holdout, roles = property_value(evaluation, "holdout"), property_value(evaluation, "roles")
    gaps = page.split("<h2>Holdout GAP@20 of every model</h2>", 1)[1].split("<h2>", 1)[0]
    students = page.split("<h2>Students (holdout)</h2>", 1)[1].split("<h2>", 1)[0]
    assert f"Split: holdout ({property_value(evaluation, 'holdout_videos')} videos" in gaps
    for name, scores in holdout.items():
        low, high = scores["gap_interval"]
        row = f'<td>{name}</td><td>{roles[name]}</td><td class="number">{scores["gap"]:.4f}</td>'
        assert gaps.count(f"<tr><td>{name}</td>") == 1 and f"{row}<td>[{low:.4f}, {high:.4f}]</td>" in gaps
        assert (row in students) == (roles[name].startswith("tower (") or name == "EnsembleModel")
    assert "L2 stack - best L1" in gaps and "EnsembleModel / L2 stack" in gaps


def _hand_built_evaluation() -> dict:
    roles = {
        "logistic": "L1",
        "moe": "L1",
        "mean of L1 models": "L1 mean",
        "L2 stack": "stack",
        "tower_a": "tower (5-fold mean)",
        "tower_a (refit)": "tower (served, refit)",
        "EnsembleModel": "EnsembleModel",
    }
    gaps = dict(zip(roles, (0.861, 0.874, 0.879, 0.868, 0.870, 0.865, 0.858), strict=True))
    holdout = {
        name: {
            "gap": gap,
            "gap_interval": [gap - 0.02, gap + 0.015],
            "hit_at_1": 0.9,
            "perr": 0.8,
            "map": 0.7,
        }
        for name, gap in gaps.items()
    }
    differences = {"L2 stack - best L1 (moe)": {"value": -0.006, "interval": [-0.02, 0.009]}}
    return {
        "roles": roles,
        "holdout": holdout,
        "differences": differences,
        "split": "holdout",
        "holdout_videos": 816,
        "bootstrap": {"resamples": 1000, "seed": 0},
        "blessed": 1,
        "reason": "EnsembleModel GAP 0.8580 >= floor",
    }


def test_every_model_is_one_row_of_its_kind_and_the_students_table_holds_only_students():
    evaluation = _hand_built_evaluation()
    stack_metrics = {"l1_holdout_gap": {"logistic": 0.86, "moe": 0.87}, "holdout_gap": 0.868}
    gaps = report._gap_section(stack_metrics, evaluation)
    rows = re.findall(
        r"<tr><td>([^<]+)</td><td>([^<]+)</td><td class=\"number\">([0-9.]+)</td><td>([^<]+)</td>", gaps
    )
    assert [(name, kind) for name, kind, _, _ in rows] == [
        ("moe", "L1"),
        ("logistic", "L1"),
        ("mean of L1 models", "L1 mean"),
        ("L2 stack", "stack"),
        ("tower_a", "tower (5-fold mean)"),
        ("tower_a (refit)", "tower (served, refit)"),
        ("EnsembleModel", "EnsembleModel"),
    ]
    assert rows[0][2:] == ("0.8740", "[0.8540, 0.8890]")
    assert "Split: holdout (816 videos" in gaps and "1000 resamples" in gaps
    assert (
        '<td>L2 stack - best L1 (moe)</td><td class="number">-0.0060</td><td>[-0.0200, 0.0090]</td>' in gaps
    )
    students = report._student_section(evaluation)
    names = re.findall(r"<tr><td>([^<]+)</td>", students)
    assert names == ["tower_a", "tower_a (refit)", "EnsembleModel"]
    assert "<th>holdout GAP@20</th><th>holdout 95% interval</th><th>holdout Hit@1</th>" in students
    assert "Gate on the holdout split (816 videos): <b>blessed</b>" in students
    without_students = report._gap_section(stack_metrics, None)
    rows = re.findall(r"<tr><td>([^<]+)</td><td>([^<]+)</td>", without_students)
    assert rows == [("moe", "L1"), ("logistic", "L1"), ("L2 stack", "stack")]


def test_the_gap_axis_is_zoomed_to_the_data():
    low, high = report.zoomed_limits([0.858 - 0.02, 0.879 + 0.015, 0.868])
    assert 0.83 <= low < 0.838 and 0.894 < high <= 0.91
    assert report.zoomed_limits([0.999, 0.5]) == (0.4501, 1.0)
