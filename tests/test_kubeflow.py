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
from pipeline.config import (
    KubeflowSettings,
    NodeClassResources,
    NodeResources,
    PipelineConfig,
    load_pipeline_config,
)
from pipeline.kubeflow import compile_pipeline
from pipeline.pipeline import create_pipeline
from tests.conftest import TINY_L1_CONFIGS, tiny_pipeline_config
from trainer import config_schema
from trainer.config_schema import ConfigError

IMAGE = "registry.example/yt8m-tfx:test"
BEAM_IMAGE = "registry.example/yt8m-tfx-beam:test"
BEAM_ARGS = ("--runner=DataflowRunner", "--project=yt8m-test", "--temp_location=gs://bucket/tmp")
GPU = "nvidia.com/gpu"
RESOURCES = NodeClassResources(  # distinct values: each node's resources tell its class
    beam=NodeResources(cpu=1, memory_gb=3),
    trainer=NodeResources(cpu=6, memory_gb=40, accelerator=GPU, accelerator_count=2),
    frame_trainer=NodeResources(cpu=7, memory_gb=50, accelerator=GPU, accelerator_count=1),
    l2_lightgbm=NodeResources(cpu=5, memory_gb=20),
    student_evaluator=NodeResources(cpu=3, memory_gb=11),
    student_export=NodeResources(cpu=2, memory_gb=9),
    batch_inference=NodeResources(cpu=4, memory_gb=7),
    default=NodeResources(cpu=1, memory_gb=2),
)
SETTINGS = KubeflowSettings(
    image=IMAGE,
    beam_image=BEAM_IMAGE,
    pipeline_root="gs://bucket/root",
    resources=RESOURCES,
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
    "Transform",
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
    assert len(node_ids) == 8 + len(L1_NAMES) * (2 * FOLDS + 1) + 4  # 8: ingest, statistics, folds, transform

    def upstream(task: str) -> set[str]:
        return set(tasks[task].dependent_tasks)

    assert upstream("VideoExampleGen") == set()
    assert upstream("VideoFoldSplit") == {"VideoExampleGen"}
    assert upstream("FrameFoldSplit") == {"FrameExampleGen", "VideoFoldSplit"}
    assert upstream("StatisticsGen") == {"VideoExampleGen"}
    assert upstream("Transform") == {"VideoFoldSplit", "VideoSchema"}
    for name, level, transform in zip(L1_NAMES, ("Video", "Frame"), ({"Transform"}, set()), strict=True):
        for fold in range(FOLDS):
            assert upstream(f"L1Trainer_{name}_fold{fold}") == {f"{level}FoldSplit", *transform}
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


def _assert_resources(resources, expected: NodeResources, node_id: str) -> None:
    """A container's ResourceSpec (both the float and the string fields) is `expected`."""
    assert (resources.cpu_request, resources.cpu_limit) == (expected.cpu, expected.cpu), node_id
    assert (resources.memory_request, resources.memory_limit) == (expected.memory_gb,) * 2, node_id
    assert (resources.resource_cpu_limit, resources.resource_memory_limit) == (
        f"{expected.cpu:g}",
        f"{expected.memory_gb:g}G",
    ), node_id
    assert (resources.accelerator.type, resources.accelerator.count) == (
        expected.accelerator,
        expected.accelerator_count,
    ), node_id
    assert resources.accelerator.resource_count == (
        str(expected.accelerator_count) if expected.accelerator_count else ""
    ), node_id


def test_resources_image_and_beam_args_on_executors(compiled):
    _, spec = compiled
    executors = _executors(spec)
    assert set(executors) == set(spec.root.dag.tasks)
    video, frame = L1_NAMES
    expected_class = {
        **{node: "beam" for node in (*BEAM_NODES, "StatisticsGen", "L2Features")},
        **{f"L1Trainer_{video}_fold{k}": "trainer" for k in range(FOLDS)},
        **{f"L1Trainer_{frame}_fold{k}": "frame_trainer" for k in range(FOLDS)},
        **{f"L1Predict_{name}_fold{k}": "beam" for name in L1_NAMES for k in range(FOLDS)},
        **{f"L1Assemble_{name}": "beam" for name in L1_NAMES},
        "L2LightGBM": "l2_lightgbm",
        "SchemaGen": "default",
        "VideoSchema": "default",
    }
    assert set(expected_class) == set(executors)
    for node_id, executor in executors.items():
        container = executor.container
        assert container.image == IMAGE, node_id
        assert list(container.command[-1:]) == [
            "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"
        ]
        _assert_resources(container.resources, getattr(RESOURCES, expected_class[node_id]), node_id)
    for node_id in BEAM_NODES:
        args = list(executors[node_id].container.args)
        assert args[-len(BEAM_ARGS) - 1 :] == [*BEAM_ARGS, f"--sdk_container_image={BEAM_IMAGE}"], node_id
        assert "--direct_running_mode=in_memory" not in args
    example_gen_driver = executors["VideoExampleGen"].container.lifecycle.pre_cache_check
    assert set(BEAM_ARGS) <= set(example_gen_driver.args)


def test_kubeflow_section_names_every_node_class_and_takes_the_worker_image_once(tmp_path):
    section = yaml.safe_load(Path("configs/kubeflow.yaml").read_text())
    data = {"data": {"video_dir": "gs://b/video"}, "kubeflow": section["kubeflow"]}
    assert config_schema.build(PipelineConfig, data, "k.yaml").kubeflow.resources.l2_lightgbm.cpu == 32
    del data["kubeflow"]["resources"]["student_export"]
    with pytest.raises(
        ConfigError, match="k.yaml: kubeflow.resources.student_export: required key is missing"
    ):
        config_schema.build(PipelineConfig, data, "k.yaml")
    data["kubeflow"]["resources"]["student_export"] = {"cpu": 1, "memory": 4}
    with pytest.raises(ConfigError, match="kubeflow.resources.student_export.memory: unknown key"):
        config_schema.build(PipelineConfig, data, "k.yaml")
    data["kubeflow"]["resources"]["student_export"] = {"cpu": 1, "memory_gb": 4, "accelerator_count": 1}
    with pytest.raises(ConfigError, match="accelerator and accelerator_count > 0 go together"):
        config_schema.build(PipelineConfig, data, "k.yaml")
    data["kubeflow"]["resources"]["student_export"] = {"cpu": 1, "memory_gb": 4}
    data["kubeflow"]["beam_pipeline_args"] = ["--sdk_container_image=other:1"]
    with pytest.raises(ConfigError, match="--sdk_container_image is set from beam_image"):
        config_schema.build(PipelineConfig, data, "k.yaml")


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
    assert "--runner=DataflowRunner" in trainer.args
    settings = config.kubeflow
    trainers = [task for task in spec.root.dag.tasks if task.startswith(("L1Trainer_", "StudentTrainer_"))]
    assert "StudentTrainer_head" in trainers and len(trainers) == len(names) * 5 + 6 * 6 + 1
    for task in trainers:  # every trainer on a GPU
        accelerator = executors[task].container.resources.accelerator
        assert (accelerator.resource_type, accelerator.count) == ("nvidia.com/gpu", 1), task
    for task, executor in executors.items():  # every node: the component image, sized CPU and memory
        container = executor.container
        assert container.image == settings.image, task
        assert container.resources.cpu_limit > 0 and container.resources.memory_limit > 0, task
        assert container.resources.resource_memory_limit.endswith("G"), task
        if "--runner=DataflowRunner" in container.args:  # Beam args: the workers run the Dataflow image
            assert f"--sdk_container_image={settings.beam_image}" in container.args, task
    assert settings.image != settings.beam_image
    for task, node_class in (
        ("L2LightGBM", "l2_lightgbm"),
        ("StudentEvaluator", "student_evaluator"),
        ("StudentExport", "student_export"),
        ("BatchInference", "batch_inference"),
        ("L1Trainer_netvlad_full_fold3", "frame_trainer"),
        ("L1Trainer_logistic_full_fold3", "trainer"),
        ("StudentTrainer_head", "trainer"),
        ("L2Merge", "beam"),
        ("Pusher", "default"),
    ):
        _assert_resources(executors[task].container.resources, getattr(settings.resources, node_class), task)
    for join in (
        "L1Assemble_logistic_full",
        "StudentAssemble_tower_a_full",
        "L2Merge",
        "HeadExamples",
        "SoftLabels",
    ):
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
