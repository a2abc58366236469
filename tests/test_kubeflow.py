"""`yt8m compile` (TFX KubeflowV2DagRunner) read back with KFP's own types, and `yt8m submit` against a
stand-in KFP REST server (a local HTTP stub of the v2beta1 API that records requests)."""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from pipeline import cli
from pipeline.config import KubeflowSettings, load_pipeline_config
from pipeline.kubeflow import compile_pipeline
from pipeline.pipeline import create_pipeline
from tests.conftest import TINY_L1_CONFIGS, tiny_pipeline_config

IMAGE = "registry.example/yt8m-tfx:test"
BEAM_ARGS = ("--runner=DataflowRunner", "--project=yt8m-test", "--temp_location=gs://bucket/tmp")
SETTINGS = KubeflowSettings(
    image=IMAGE,
    pipeline_root="gs://bucket/root",
    cpu=3,
    memory_gb=12,
    trainer_cpu=6,
    trainer_memory_gb=40,
    trainer_accelerator="nvidia.com/gpu",
    trainer_accelerator_count=2,
    beam_pipeline_args=BEAM_ARGS,
)
L1_NAMES = ("tiny_gated_mlp", "tiny_pooling")
FOLDS = 3
BEAM_NODES = (
    "VideoExampleGen",
    "FrameExampleGen",
    "VideoFoldSplit",
    "FrameFoldSplit",
    "L2Merge",
    "SoftLabels",
)


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    """The tiny pipeline with a kubeflow section (data dirs exist locally; compile reads none of them)."""
    data = tmp_path_factory.mktemp("kfp_data")
    (data / "frame").mkdir()
    config = tiny_pipeline_config(data, data / "home", l1_configs=TINY_L1_CONFIGS, num_folds=FOLDS)
    return replace(config, kubeflow=SETTINGS)


@pytest.fixture(scope="module")
def compiled(tiny_config, tmp_path_factory) -> tuple[Path, pipeline_spec_pb2.PipelineSpec]:
    out = tmp_path_factory.mktemp("kfp") / "pipeline.yaml"
    compile_pipeline(tiny_config, out)
    return out, json_format.ParseDict(yaml.safe_load(out.read_text()), pipeline_spec_pb2.PipelineSpec())


def _executors(spec: pipeline_spec_pb2.PipelineSpec) -> dict[str, pipeline_spec_pb2.PipelineDeploymentConfig]:
    deployment = json_format.ParseDict(
        json_format.MessageToDict(spec.deployment_spec), pipeline_spec_pb2.PipelineDeploymentConfig()
    )
    return {label.removesuffix("_executor"): executor for label, executor in deployment.executors.items()}


def test_every_node_is_a_task_with_its_dependencies(tiny_config, compiled):
    _, spec = compiled
    tasks = spec.root.dag.tasks
    node_ids = {node.id for node in create_pipeline(tiny_config).components}
    assert set(tasks) == node_ids
    assert len(node_ids) == 6 + len(L1_NAMES) * (2 * FOLDS + 1) + 4

    def upstream(task: str) -> set[str]:
        return set(tasks[task].dependent_tasks)

    assert upstream("VideoExampleGen") == set()
    assert upstream("VideoFoldSplit") == {"VideoExampleGen"}
    assert upstream("FrameFoldSplit") == {"FrameExampleGen", "VideoFoldSplit"}
    assert upstream("StatisticsGen") == {"VideoExampleGen"}
    for name, level in zip(L1_NAMES, ("Video", "Frame"), strict=True):
        for fold in range(FOLDS):
            assert upstream(f"L1Trainer_{name}_fold{fold}") == {f"{level}FoldSplit"}
            assert upstream(f"L1Predict_{name}_fold{fold}") == {
                f"L1Trainer_{name}_fold{fold}",
                f"{level}FoldSplit",
            }
        predicts = {f"L1Predict_{name}_fold{fold}" for fold in range(FOLDS)}
        assert upstream(f"L1Assemble_{name}") == predicts | {f"{level}FoldSplit"}
    assert upstream("L2Merge") == {f"L1Assemble_{name}" for name in L1_NAMES} | {"VideoFoldSplit"}
    assert upstream("L2Features") == {"L2Merge"}
    assert upstream("L2LightGBM") == {"L2Features"}
    assert upstream("SoftLabels") >= {"L2LightGBM", "VideoFoldSplit"}
    predict_inputs = tasks["L1Predict_tiny_pooling_fold1"].inputs.artifacts["model"].task_output_artifact
    assert (predict_inputs.producer_task, predict_inputs.output_artifact_key) == (
        "L1Trainer_tiny_pooling_fold1",
        "model",
    )


def test_resources_image_and_beam_args_on_executors(compiled):
    _, spec = compiled
    executors = _executors(spec)
    assert set(executors) == set(spec.root.dag.tasks)
    for node_id, executor in executors.items():
        container = executor.container
        assert container.image == IMAGE, node_id
        assert list(container.command[-1:]) == [
            "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"
        ]
        resources = container.resources
        if node_id.startswith("L1Trainer_"):
            assert (resources.accelerator.type, resources.accelerator.count) == ("nvidia.com/gpu", 2), node_id
            assert (resources.accelerator.resource_type, resources.accelerator.resource_count) == (
                "nvidia.com/gpu",
                "2",
            )
            assert (resources.cpu_limit, resources.memory_limit) == (6, 40)
            assert (resources.resource_cpu_limit, resources.resource_memory_limit) == ("6", "40G")
        else:
            assert not resources.accelerator.type and not resources.accelerator.resource_count, node_id
            assert (resources.cpu_request, resources.memory_request) == (3, 12)
            assert (resources.resource_cpu_request, resources.resource_memory_request) == ("3", "12G")
    for node_id in BEAM_NODES:
        args = list(executors[node_id].container.args)
        assert args[-len(BEAM_ARGS) :] == list(BEAM_ARGS), node_id
        assert "--direct_running_mode=in_memory" not in args
    example_gen_driver = executors["VideoExampleGen"].container.lifecycle.pre_cache_check
    assert set(BEAM_ARGS) <= set(example_gen_driver.args)


def test_data_dirs_are_runtime_parameters_and_root_is_set(tiny_config, compiled):
    _, spec = compiled
    assert spec.default_pipeline_root == "gs://bucket/root"
    parameters = spec.root.input_definitions.parameters
    assert parameters["video_dir"].default_value.string_value == tiny_config.data.video_dir
    assert parameters["frame_dir"].default_value.string_value == tiny_config.data.frame_dir
    for node, parameter in (("VideoExampleGen", "video_dir"), ("FrameExampleGen", "frame_dir")):
        assert (
            spec.root.dag.tasks[node].inputs.parameters["input_base"].component_input_parameter == parameter
        )


def test_cli_compiles_the_kubeflow_config_as_pipeline_job_json(tmp_path):
    out = tmp_path / "pipeline.json"
    assert cli.main(["compile", "--config", "configs/kubeflow.yaml", "--out", str(out)]) == 0
    job = json.loads(out.read_text())
    assert job["runtimeConfig"]["gcsOutputDirectory"] == "gs://yt8m-tfx-artifacts/pipeline_root"
    assert job["runtimeConfig"]["parameterValues"]["video_dir"] == "gs://yt8m-tfx-data/yt8m/2/video"
    spec = json_format.ParseDict(job["pipelineSpec"], pipeline_spec_pb2.PipelineSpec())
    config = load_pipeline_config("configs/kubeflow.yaml")
    names = [Path(path).stem for path in config.l1.configs]
    expected = {f"L1Trainer_{name}_fold{fold}" for name in names for fold in range(config.folds.num_folds)}
    assert expected <= set(spec.root.dag.tasks)
    executors = _executors(spec)
    trainer = executors[f"L1Trainer_{names[0]}_fold0"].container
    assert trainer.image == config.kubeflow.image
    assert "--runner=DataflowRunner" in trainer.args
    students = [task for task in spec.root.dag.tasks if task.startswith("StudentTrainer_")]
    assert "StudentTrainer_head" in students
    for task in students:
        assert executors[task].container.resources.accelerator.count == 1, task
    for join in ("L1Assemble_logistic_full", "StudentAssemble_tower_a_full", "L2Merge", "HeadExamples"):
        shard_mb = spec.root.dag.tasks[join].inputs.parameters["shard_mb"].runtime_value.constant
        assert shard_mb.number_value == 0, join  # Dataflow: one shuffle per join, no local hash shards
    pusher = spec.root.dag.tasks["Pusher"]
    assert "blessed" in pusher.trigger_policy.condition
    assert config.students.push_directory in json.dumps(json_format.MessageToDict(pusher))


def test_compile_without_kubeflow_section_is_a_one_line_error(tmp_path, capsys):
    assert cli.main(["compile", "--config", "configs/demo.yaml", "--out", str(tmp_path / "p.yaml")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "yt8m: error: the pipeline config has no `kubeflow` section (see configs/kubeflow.yaml)"
    ]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_submit_to_unreachable_host_is_a_one_line_error(compiled, capsys):
    package, _ = compiled
    host = f"http://127.0.0.1:{_closed_port()}"
    assert cli.main(["submit", "--package", str(package), "--host", host]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"yt8m: error: cannot reach Kubeflow Pipelines at {host}: ")
    assert "refused" in line.lower()


class _KfpStub(BaseHTTPRequestHandler):
    """The few KFP v2beta1 endpoints kfp.Client uses to create a run; stands in for a real KFP server."""

    requests: list[tuple[str, str, dict]] = []

    def _reply(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.requests.append(("GET", self.path, {}))
        if self.path.startswith("/apis/v2beta1/healthz"):
            self._reply({"multi_user": False})
        else:  # experiment lookup by name: none yet
            self._reply({})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append(("POST", self.path, body))
        if self.path == "/apis/v2beta1/experiments":
            self._reply({"experiment_id": "exp-1", "display_name": body["display_name"]})
        elif self.path == "/apis/v2beta1/runs":
            self._reply({"run_id": "run-1", "display_name": body["display_name"], "experiment_id": "exp-1"})
        else:
            self.send_error(404)

    def log_message(self, *args) -> None:
        pass


def test_submit_uploads_the_package_and_creates_a_run(compiled, capsys):
    package, _ = compiled
    _KfpStub.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _KfpStub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host = f"http://127.0.0.1:{server.server_address[1]}"
        argv = ["submit", "--package", str(package), "--host", host, "--experiment", "nightly"]
        argv += ["--run-name", "run-a", "--param", "video_dir=gs://other/video"]
        assert cli.main(argv) == 0
    finally:
        server.shutdown()
        server.server_close()
    assert "run run-1" in capsys.readouterr().out
    posts = {path: body for method, path, body in _KfpStub.requests if method == "POST"}
    assert posts["/apis/v2beta1/experiments"]["display_name"] == "nightly"
    run = posts["/apis/v2beta1/runs"]
    assert (run["display_name"], run["experiment_id"]) == ("run-a", "exp-1")
    assert run["pipeline_spec"] == yaml.safe_load(package.read_text())
    assert run["runtime_config"]["parameters"] == {"video_dir": "gs://other/video"}
