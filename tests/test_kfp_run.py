"""`yt8m kfp-run`: compiled Kubeflow packages executed here through their own container entrypoints, the
CEL subset of their trigger conditions, and the conditions of the compiled packages themselves."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import yaml

from pipeline import cli
from pipeline.config import KubeflowSettings, StudentSettings
from pipeline.kfp_cel import ConditionError, parse_condition
from pipeline.kfp_run import KfpRunError, read_tasks
from pipeline.kubeflow import compile_pipeline
from pipeline.metadata import (
    latest_executions,
    node_executions,
    open_store,
    property_value,
    run_executions,
)
from pipeline.runner import stage_summary
from tests.conftest import TINY_L1_CONFIGS, TINY_STUDENTS, tiny_pipeline_config
from tests.test_kubeflow import RESOURCES
from trainer.submission import score_submission

BLESSED = "(inputs.artifacts['model_blessing'].artifacts[0].metadata['blessed'] == 1.0)"
RUN_ID, REFUSED_RUN_ID = "kfp-test", "kfp-refused"
ROOT, SERVING = "pipeline_root", "serving"  # in the emulated bucket
REPO = Path(__file__).parents[1]
# Holdout GAPs of kfp-run and LocalDagRunner agree to float noise: the same records and seeds reach every
# trainer (L1 and student inputs come out of Beam in the same order; L2LightGBM sorts its rows, since the
# feature rows' order differs between the two runs and LightGBM's bagging draws rows by position).
GAP_TOLERANCE = 1e-6
# The first test to use `kfp_tiny_run` pays for the run: ~46 task subprocesses of ~7.5 s of imports each.
RUN_TIMEOUT = pytest.mark.timeout(3000)


def _blessing(blessed: float) -> dict[str, list[dict]]:
    return {"model_blessing": [{"uri": "/b", "metadata": {"blessed": blessed}}]}


# ---------------------------------------------------------------------------------------------- CEL subset


def test_condition_true_and_false_on_the_blessing():
    condition = parse_condition(BLESSED)
    assert condition.references == {("artifacts", "model_blessing")}
    assert condition.evaluate(_blessing(1.0), {}) is True
    assert condition.evaluate(_blessing(0.0), {}) is False


def test_condition_operators_parameters_and_precedence():
    condition = parse_condition(
        "!(inputs.parameter_values['floor'] < 0.5) && "
        "(inputs.artifacts['model_blessing'].artifacts[0].uri + '/x' == '/b/x') || false"
    )
    assert condition.references == {("parameter_values", "floor"), ("artifacts", "model_blessing")}
    assert condition.evaluate(_blessing(1.0), {"floor": 0.7}) is True
    assert condition.evaluate(_blessing(1.0), {"floor": 0.2}) is False
    assert parse_condition("1 < 2 && 2 >= 2.0 && 'a' != 'b' || 1 == 0").evaluate({}, {}) is True
    assert parse_condition("true || 1 == 'x'").evaluate({}, {}) is True  # || short-circuits


@pytest.mark.parametrize(
    "text",
    [
        "inputs.artifacts['model_blessing'].artifacts[0].metadata['blessed'] ==",
        "inputs.artifacts[model_blessing] == 1.0",
        "inputs.outputs['x'] == 1.0",
        "inputs.artifacts.model_blessing == 1.0",
        "1.0 == 1.0 == 1.0",
        "blessed == 1.0",
        "(1.0 == 1.0",
        "1.0 == 1.0;",
    ],
)
def test_unparseable_condition_is_an_error(text):
    with pytest.raises(ConditionError, match="cannot parse"):
        parse_condition(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("inputs.artifacts['model_blessing'].artifacts[0].metadata['pushed'] == 1.0", "no key 'pushed'"),
        ("inputs.artifacts['model_blessing'].artifacts[1].metadata['blessed'] == 1.0", "out of range"),
        ("inputs.artifacts['model_blessing'].artifacts[0].metadata['blessed'] == 'yes'", "no overload"),
        ("inputs.artifacts['model_blessing'].artifacts[0].metadata['blessed'] + 1.0", "not a bool"),
    ],
)
def test_condition_that_cannot_be_evaluated_is_an_error(text, message):
    with pytest.raises(ConditionError, match=message):
        parse_condition(text).evaluate(_blessing(1.0), {})


def _spec(condition: str, declared: tuple[str, ...] = ("model", "model_blessing")) -> dict:
    """A two-task package: Pusher (with `condition`) consuming the evaluator's blessing."""
    artifact_type = {"artifactType": {"schemaTitle": "tfx.ModelBlessing"}}
    return {
        "pipelineInfo": {"name": "p"},
        "deploymentSpec": {"executors": {e: {"container": {"command": ["python"]}} for e in ("E", "P")}},
        "components": {
            "Evaluator": {
                "executorLabel": "E",
                "outputDefinitions": {"artifacts": {"blessing": artifact_type}},
            },
            "Pusher": {
                "executorLabel": "P",
                "inputDefinitions": {"artifacts": {key: artifact_type for key in declared}},
            },
        },
        "root": {
            "dag": {
                "tasks": {
                    "Evaluator": {"componentRef": {"name": "Evaluator"}},
                    "Pusher": {
                        "componentRef": {"name": "Pusher"},
                        "inputs": {
                            "artifacts": {
                                key: {
                                    "taskOutputArtifact": {
                                        "producerTask": "Evaluator",
                                        "outputArtifactKey": "blessing",
                                    }
                                }
                                for key in declared
                            }
                        },
                        "triggerPolicy": {"condition": condition},
                    },
                }
            }
        },
    }


def test_condition_on_declared_input_is_accepted():
    tasks = read_tasks(_spec(BLESSED))
    assert tasks["Pusher"].condition.references == {("artifacts", "model_blessing")}
    assert tasks["Pusher"].upstream == {"Evaluator"}


def test_condition_on_undeclared_input_is_an_error_naming_the_task():
    undeclared = BLESSED.replace("model_blessing", "_Evaluator.blessing")
    with pytest.raises(
        KfpRunError, match=r"task Pusher: .*\['_Evaluator\.blessing'\], which the task does not declare"
    ):
        read_tasks(_spec(undeclared))


def test_unparseable_condition_in_a_package_is_an_error_naming_the_task():
    with pytest.raises(KfpRunError, match="task Pusher: condition cannot parse"):
        read_tasks(_spec(BLESSED.replace("==", "=")))


# ------------------------------------------------------------------------------ conditions of the packages


def _conditions_read_declared_inputs(spec: dict) -> set[str]:
    """The tasks with a condition, after checking that each reads only inputs its component declares."""
    conditional = set()
    for name, task in spec["root"]["dag"]["tasks"].items():
        text = task.get("triggerPolicy", {}).get("condition")
        if not text:
            continue
        conditional.add(name)
        definitions = spec["components"][task["componentRef"]["name"]].get("inputDefinitions", {})
        declared = {
            "artifacts": set(definitions.get("artifacts", {})),
            "parameter_values": set(definitions.get("parameters", {})),
        }
        references = parse_condition(text).references
        assert references, name
        for group, key in references:
            assert key in declared[group], f"{name}: condition reads {group}[{key!r}], declared {declared}"
            if group == "artifacts":  # and the task wires that input from a producer
                assert "taskOutputArtifact" in task["inputs"]["artifacts"][key], name
    return conditional


def test_every_condition_of_the_kubeflow_config_package_reads_declared_inputs(tmp_path):
    out = tmp_path / "pipeline.yaml"
    assert cli.main(["compile", "--config", "configs/kubeflow.yaml", "--out", str(out)]) == 0
    spec = yaml.safe_load(out.read_text())
    assert _conditions_read_declared_inputs(spec) == {"Pusher", "BatchInference"}
    assert spec["root"]["dag"]["tasks"]["Pusher"]["triggerPolicy"]["condition"] == BLESSED


# ------------------------------------------------------------------------------------- executed packages


def _kubeflow(config, pipeline_root: str):
    """`config` compiled for `pipeline_root`, its Beam nodes on the in-memory DirectRunner."""
    worker_image = "--sdk_container_image="
    (beam_image,) = [
        a.removeprefix(worker_image) for a in config.beam_pipeline_args if a.startswith(worker_image)
    ]
    settings = KubeflowSettings(
        image="yt8m-tfx:test",
        beam_image=beam_image,  # compiled back into --sdk_container_image (DirectRunner: no sdist build)
        pipeline_root=pipeline_root,
        resources=RESOURCES,
        beam_pipeline_args=tuple(a for a in config.beam_pipeline_args if not a.startswith(worker_image)),
    )
    return replace(config, kubeflow=settings)


@dataclass(frozen=True)
class KfpHome:
    """Where the gs:// runs of the tiny package keep their local state: ML Metadata, logs, working dir."""

    home: Path
    cwd: Path

    @property
    def metadata(self) -> str:
        return str(self.home / "metadata.sqlite")

    def executions(self, run_id: str) -> dict:
        return run_executions(open_store(self.metadata), "yt8m-test", run_id)


def _tiny_package(tiny_data, home: Path, pipeline_root: str, push_directory: str, gap_floor: float) -> Path:
    """The pipeline of `tiny_run` (same data, folds, models, seeds, gate) compiled for `pipeline_root`."""
    config = tiny_pipeline_config(
        tiny_data,
        home,
        l1_configs=TINY_L1_CONFIGS,
        num_folds=3,
        students=StudentSettings(
            configs=TINY_STUDENTS, stack_fraction=0.5, gap_floor=gap_floor, push_directory=push_directory
        ),
    )
    package = home.parent / f"pipeline-floor-{gap_floor}.yaml"
    compile_pipeline(_kubeflow(config, pipeline_root), package)
    return package


@pytest.fixture(scope="module")
def tiny_package(tiny_data, gcs, tmp_path_factory) -> Path:
    """The tiny package, its pipeline root and push directory in the emulated bucket."""
    home = tmp_path_factory.mktemp("kfp_tiny") / "home"
    return _tiny_package(tiny_data, home, gcs.url(ROOT), gcs.url(SERVING), gap_floor=0.0)


def test_every_condition_of_the_tiny_package_reads_declared_inputs(tiny_package):
    spec = yaml.safe_load(tiny_package.read_text())
    assert _conditions_read_declared_inputs(spec) == {"Pusher", "BatchInference"}


def _kfp_run_in_bucket(gcs, kfp: KfpHome, argv: list[str]) -> list[str]:
    """The lines `yt8m kfp-run ARGV` prints, run in a process whose GCS clients reach the emulator; it must
    succeed."""
    env = {
        **os.environ,
        **gcs.env,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, "-m", "pipeline.cli", "kfp-run", *argv, "--metadata", kfp.metadata]
    run = subprocess.run(command, cwd=kfp.cwd, env=env, capture_output=True, text=True, timeout=2400)
    assert run.returncode == 0, run.stderr[-4000:]
    return run.stdout.splitlines()


@pytest.fixture(scope="module")
def kfp_tiny_run(tiny_package, gcs, tmp_path_factory) -> tuple[KfpHome, list[str]]:
    """`yt8m kfp-run` of the tiny package on the bucket, two tasks at a time: (its home, printed lines)."""
    work = tmp_path_factory.mktemp("kfp_run")
    kfp = KfpHome(work / "home", work / "cwd")
    kfp.cwd.mkdir()
    return kfp, _kfp_run_in_bucket(gcs, kfp, [str(tiny_package), "--run-id", RUN_ID, "--parallel", "2"])


@pytest.fixture(scope="module")
def kfp_refused_run(kfp_tiny_run, tiny_data, gcs) -> tuple[list[str], dict[str, bytes]]:
    """The same pipeline with its gap floor out of reach (1.0), run after `kfp_tiny_run` on the same store:
    (printed lines, the push directory's objects before it ran)."""
    kfp, _ = kfp_tiny_run
    package = _tiny_package(tiny_data, kfp.home, gcs.url(ROOT), gcs.url(SERVING), gap_floor=1.0)
    pushed_before = gcs.objects(f"{SERVING}/")
    return _kfp_run_in_bucket(gcs, kfp, [str(package), "--run-id", REFUSED_RUN_ID]), pushed_before


def _holdout(executions) -> dict:
    return property_value(executions["StudentEvaluator"].outputs["evaluation"][0], "holdout")


def _bucket_path(uri: str, gcs) -> str:
    prefix = f"gs://{gcs.bucket}/"
    assert uri.startswith(prefix), uri
    return uri.removeprefix(prefix)


def _no_local_gs_folder(*directories: Path) -> None:
    for directory in directories:
        assert not [path for path in directory.rglob("gs:*")], directory


@pytest.mark.slow
@RUN_TIMEOUT
def test_kfp_run_on_a_bucket_matches_the_local_dag_runner(
    kfp_tiny_run, tiny_run, tiny_data, tiny_package, gcs, tmp_path
):
    kfp, lines = kfp_tiny_run
    spec = yaml.safe_load(tiny_package.read_text())
    tasks = spec["root"]["dag"]["tasks"]
    assert lines[-1].startswith(f"run {RUN_ID}: {len(tasks)} tasks complete, 0 cached, 0 skipped")
    assert f"artifacts under {gcs.url(ROOT, RUN_ID)};" in lines[-1]

    executions = kfp.executions(RUN_ID)
    local = latest_executions(open_store(tiny_run.metadata_path), tiny_run.pipeline_name)
    assert set(executions) == set(local) == set(tasks)
    assert {execution.state for execution in executions.values()} == {"COMPLETE"}

    kfp_gaps, local_gaps = _holdout(executions), _holdout(local)
    assert kfp_gaps.keys() == local_gaps.keys() >= {"L2 stack", "EnsembleModel"}
    for model in kfp_gaps:  # L1 models, the stack, the towers and the EnsembleModel
        assert kfp_gaps[model]["gap"] == pytest.approx(local_gaps[model]["gap"], abs=GAP_TOLERANCE), model
    blessing = executions["StudentEvaluator"].outputs["blessing"][0]
    assert property_value(blessing, "blessed") == 1

    # the pushed model and the submission are objects in the bucket, and score as the local run's
    objects = gcs.objects()
    pushed = executions["Pusher"].outputs["pushed_model"][0]
    destination = _bucket_path(property_value(pushed, "pushed_destination"), gcs)
    assert destination.startswith(f"{SERVING}/") and f"{destination}/saved_model.pb" in objects
    assert any(name.startswith(f"{destination}/variables/variables.data") for name in objects)
    submission = objects[
        _bucket_path(property_value(executions["BatchInference"].outputs["submission"][0], "file"), gcs)
    ]
    local_file = Path(property_value(local["BatchInference"].outputs["submission"][0], "file"))
    copied = tmp_path / "submission.csv"
    copied.write_bytes(submission)
    rows = copied.read_text().splitlines()
    assert len(rows) == 37 and [r.split(",")[0] for r in rows] == [
        r.split(",")[0] for r in local_file.read_text().splitlines()
    ]
    truth = tiny_data / "test_truth.csv"
    assert score_submission(copied, truth) == pytest.approx(
        score_submission(local_file, truth), abs=GAP_TOLERANCE
    )
    _no_local_gs_folder(kfp.cwd, kfp.home, REPO)

    for name in executions:  # every input is its producer's recorded output, every output at its URI
        task, execution = tasks[name], executions[name]
        for key, source in task.get("inputs", {}).get("artifacts", {}).items():
            producer = source["taskOutputArtifact"]
            published = executions[producer["producerTask"]].outputs[producer["outputArtifactKey"]]
            assert [a.id for a in execution.inputs[key]] == [a.id for a in published], (name, key)
        outputs = spec["components"][task["componentRef"]["name"]].get("outputDefinitions", {})
        assert set(execution.outputs) == set(outputs.get("artifacts", {})), name
        for key, artifacts in execution.outputs.items():
            assert [a.uri for a in artifacts] == [gcs.url(ROOT, RUN_ID, name, key)], (name, key)

    store = open_store(kfp.metadata)
    (example_gen,) = store.get_executions_by_id([executions["VideoExampleGen"].execution_id])
    fingerprint = example_gen.custom_properties["input_fingerprint"].string_value  # from the driver
    assert fingerprint.startswith("split:train,num_files:3,")
    examples = executions["VideoExampleGen"].outputs["examples"][0]  # and its metadata, merged
    assert property_value(examples, "input_fingerprint") == fingerprint
    assert property_value(examples, "span") == 0
    assert property_value(executions["VideoFoldSplit"].outputs["split_examples"][0], "split_counts") == (
        property_value(local["VideoFoldSplit"].outputs["split_examples"][0], "split_counts")
    )


@pytest.mark.slow
@RUN_TIMEOUT
def test_refused_gate_reuses_the_cache_and_skips_pusher_and_batch_inference(
    kfp_tiny_run, kfp_refused_run, gcs
):
    """Only the gate's settings changed: every task upstream of it is served from the first run (KFP's
    cache: same container, parameters and input artifacts), the evaluator reruns and refuses."""
    kfp, _ = kfp_tiny_run
    lines, pushed_before = kfp_refused_run
    assert "StudentEvaluator: complete in" in " ".join(lines)
    assert f"Pusher: skipped (condition {BLESSED} is false)" in lines
    assert "BatchInference: skipped (its input pushed_model comes from skipped task Pusher)" in lines
    first, refused = kfp.executions(RUN_ID), kfp.executions(REFUSED_RUN_ID)
    assert set(refused) == set(first) - {"Pusher", "BatchInference"}
    cached = set(refused) - {"StudentEvaluator"}
    assert lines[-1].startswith(f"run {REFUSED_RUN_ID}: 1 tasks complete, {len(cached)} cached, 2 skipped")
    for name in cached:  # the first run's artifacts, published again
        assert refused[name].state == "CACHED", name
        assert lines.count(f"{name}: cached (outputs of execution {first[name].execution_id})") == 1, name
        for key, artifacts in refused[name].outputs.items():
            assert [a.id for a in artifacts] == [a.id for a in first[name].outputs[key]], (name, key)
    assert refused["StudentEvaluator"].state == "COMPLETE"
    assert [a.id for a in refused["StudentEvaluator"].inputs["model"]] == [
        a.id for a in first["StudentExport"].outputs["model"]
    ]
    for key, artifacts in first["StudentEvaluator"].inputs.items():  # the same inputs as the first time
        assert [a.id for a in refused["StudentEvaluator"].inputs[key]] == [a.id for a in artifacts], key
    assert property_value(refused["StudentEvaluator"].outputs["blessing"][0], "blessed") == 0
    reason = property_value(refused["StudentEvaluator"].outputs["evaluation"][0], "reason")
    assert "< floor 1.0000" in reason
    assert _holdout(refused) == _holdout(first)  # same inputs, same scores
    assert gcs.objects(f"{SERVING}/") == pushed_before  # nothing pushed


@pytest.mark.slow
@RUN_TIMEOUT
def test_lineage_report_and_summary_read_a_kfp_run_and_only_that_run(
    kfp_tiny_run, kfp_refused_run, tiny_data, tmp_path, capsys
):
    """After the refused run, nothing printed or reported comes from the first run's Pusher and
    BatchInference (the newest executions of those nodes in the store)."""
    kfp, _ = kfp_tiny_run
    executions = kfp.executions(REFUSED_RUN_ID)
    first_pushed = kfp.executions(RUN_ID)["Pusher"].outputs["pushed_model"][0]
    evaluation = executions["StudentEvaluator"].outputs["evaluation"][0]
    capsys.readouterr()
    assert cli.main(["lineage", "--home", str(kfp.home), "--artifact", str(evaluation.id)]) == 0
    tree = capsys.readouterr().out
    assert tree.startswith(f"artifact {evaluation.id} components.StageMetrics  <- StudentEvaluator")
    assert "<- L2LightGBM" in tree and "<- StudentTrainer_head" in tree and "<- FrameExampleGen" in tree
    assert "input files " in tree and "/video/train*.tfrecord" in tree
    report = tmp_path / "report.html"
    assert cli.main(["report", "--home", str(kfp.home), "--out", str(report)]) == 0
    html = report.read_text()
    assert f"Run {REFUSED_RUN_ID};" in html
    assert "Gate on the holdout split (" in html and "<b>not blessed</b>" in html
    assert "StudentTrainer_head" in html
    assert "Not run in this run" in html and ": BatchInference, Pusher." in html
    assert f"From artifact {first_pushed.id} " not in html  # the lineage starts at this run's stack

    summary = stage_summary(tiny_pipeline_config(tiny_data, kfp.home))
    assert summary[0] == f"run {REFUSED_RUN_ID}"
    assert any(line.startswith("blessing: ") and "< floor 1.0000" in line for line in summary)
    assert summary[-2:] == [
        "pushed model: none, Pusher skipped in this run (the model is not blessed)",
        "submission: none, BatchInference skipped in this run",
    ]


@pytest.mark.slow
def test_failing_task_stops_the_run_naming_it(tiny_package, tiny_data, tmp_path, capsys):
    """A truncated frame shard: FrameExampleGen (first in order) fails, nothing else starts."""
    package = tiny_package
    frame = tmp_path / "frame"
    shutil.copytree(tiny_data / "frame", frame)
    victim = frame / "validate0000.tfrecord"
    victim.write_bytes(victim.read_bytes()[:-50])
    home = tmp_path / "home"
    argv = ["kfp-run", str(package), "--param", f"frame_dir={frame}", "--run-id", "broken"]
    argv += ["--pipeline-root", str(home / "pipeline_root")]
    assert cli.main(argv) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("yt8m: error: task FrameExampleGen failed (exit code 1): ")
    assert "validate0000.tfrecord: corrupted or truncated TFRecord" in error
    assert "downstream task(s) not run" in error
    store = open_store(str(home / "metadata.sqlite"))
    executions = node_executions(store, "yt8m-test")
    assert [(e.node_id, e.state, e.outputs) for e in executions] == [("FrameExampleGen", "FAILED", {})]
    (failed,) = store.get_executions_by_id([executions[0].execution_id])
    assert failed.custom_properties["input_base"].string_value == str(frame)  # the --param value
    assert (
        failed.custom_properties["error"].string_value
        == f"KfpRunError: {error.removeprefix('yt8m: error: ')}"
    )


def test_unknown_runtime_parameter_is_a_one_line_error(tiny_package, capsys):
    assert cli.main(["kfp-run", str(tiny_package), "--param", "vidoe_dir=/x"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()[-1:]
    assert line.startswith("yt8m: error: unknown runtime parameter(s) ['vidoe_dir']")
