"""Compile the pipeline for Kubeflow Pipelines (TFX KubeflowV2DagRunner) and submit a compiled package."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from pipeline.config import KubeflowSettings, PipelineConfig
from trainer.config_schema import ConfigError

log = logging.getLogger("yt8m")
FRAME_FOLD_SPLIT = "FrameFoldSplit"  # node id (pipeline.create_components) of the frame-level examples
# Runtime parameters of the compiled pipeline (their defaults are the config's values).
VIDEO_DIR_PARAMETER = "video_dir"
FRAME_DIR_PARAMETER = "frame_dir"
YAML_SUFFIXES = (".yaml", ".yml")


class SubmitError(RuntimeError):
    """The pipeline package could not be submitted; the message says why in one line."""


def resource_spec(cpu: float, memory_gb: float, accelerator: str = "", accelerator_count: int = 0):
    """A KFP container ResourceSpec with request = limit, in both the old (float) and new (string) fields."""
    from kfp.pipeline_spec import pipeline_spec_pb2

    resource_spec_type = pipeline_spec_pb2.PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec
    cpu_text, memory_text = f"{cpu:g}", f"{memory_gb:g}G"
    spec = resource_spec_type(
        cpu_limit=cpu,
        cpu_request=cpu,
        memory_limit=memory_gb,
        memory_request=memory_gb,
        resource_cpu_limit=cpu_text,
        resource_cpu_request=cpu_text,
        resource_memory_limit=memory_text,
        resource_memory_request=memory_text,
    )
    if accelerator and accelerator_count:
        spec.accelerator.CopyFrom(
            resource_spec_type.AcceleratorConfig(
                type=accelerator,
                count=accelerator_count,
                resource_type=accelerator,
                resource_count=str(accelerator_count),
            )
        )
    return spec


def node_class(component) -> str:
    """The field of NodeClassResources that sizes `component`: trainers by the level of their examples, our
    heavy single-process executors by type, nodes with a Beam executor as `beam`, the rest `default`."""
    from tfx.components import Trainer
    from tfx.dsl.components.base.base_beam_executor import BaseBeamExecutor

    from components.batch_inference.component import BatchInference
    from components.l2_lightgbm.component import L2LightGBM
    from components.student_evaluator.component import StudentEvaluator
    from components.student_export.component import StudentExport

    if isinstance(component, Trainer):
        frame = component.inputs["examples"].producer_component_id == FRAME_FOLD_SPLIT
        return "frame_trainer" if frame else "trainer"
    by_type = {
        L2LightGBM: "l2_lightgbm",
        StudentEvaluator: "student_evaluator",
        StudentExport: "student_export",
        BatchInference: "batch_inference",
    }
    if type(component) in by_type:
        return by_type[type(component)]
    executor_class = getattr(component.executor_spec, "executor_class", None)
    return "beam" if executor_class and issubclass(executor_class, BaseBeamExecutor) else "default"


def node_resources(node_class_name: str, settings: KubeflowSettings):
    """The ResourceSpec of a node of class `node_class_name` (see node_class)."""
    resources = getattr(settings.resources, node_class_name)
    return resource_spec(
        resources.cpu, resources.memory_gb, resources.accelerator, resources.accelerator_count
    )


def beam_pipeline_args(settings: KubeflowSettings) -> list[str]:
    """The config's Beam args with the Dataflow worker image (Dockerfile.beam) as the SDK container."""
    return [*settings.beam_pipeline_args, f"--sdk_container_image={settings.beam_image}"]


def kubeflow_settings(config: PipelineConfig) -> KubeflowSettings:
    if config.kubeflow is None:
        raise ConfigError("the pipeline config has no `kubeflow` section (see configs/kubeflow.yaml)")
    return config.kubeflow


def runtime_parameters(config: PipelineConfig) -> dict[str, str]:
    """The pipeline's runtime parameters (the data directories) with the config's values as defaults."""
    values = {VIDEO_DIR_PARAMETER: config.data.video_dir, FRAME_DIR_PARAMETER: config.data.frame_dir}
    return {name: value for name, value in values.items() if value}


def kubeflow_pipeline(config: PipelineConfig):
    """The nodes of create_pipeline(config) as a Kubeflow pipeline.

    The data directories become runtime parameters, the pipeline root and Beam args come from the kubeflow
    section, and there is no metadata connection config (KFP provides ML Metadata).
    """
    from tfx import v1 as tfx

    from pipeline.pipeline import create_components

    settings = kubeflow_settings(config)
    parameters = {
        name: tfx.dsl.experimental.RuntimeParameter(name=name, ptype=str, default=value)
        for name, value in runtime_parameters(config).items()
    }
    data = replace(
        config.data,
        video_dir=parameters[VIDEO_DIR_PARAMETER],
        frame_dir=parameters.get(FRAME_DIR_PARAMETER),
    )
    components = create_components(replace(config, data=data))
    for component in components:
        component.with_platform_config(node_resources(node_class(component), settings))
    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=settings.pipeline_root,
        components=components,
        enable_cache=config.enable_cache,
        metadata_connection_config=None,
        beam_pipeline_args=beam_pipeline_args(settings),
    )


def _fill_in_resources(spec: dict[str, Any], settings: KubeflowSettings, classes: dict[str, str]) -> None:
    """Resources on every executor: TFX drops the platform config of FileBasedExampleGen nodes."""
    from google.protobuf import json_format

    executors = spec["deploymentSpec"]["executors"]
    for task_id, task in spec["root"]["dag"]["tasks"].items():
        label = spec["components"][task["componentRef"]["name"]]["executorLabel"]
        container = executors[label]["container"]
        resources = node_resources(classes[task_id], settings)
        container.setdefault("resources", json_format.MessageToDict(resources))


def compile_pipeline(config: PipelineConfig, out: str | Path) -> dict[str, Any]:
    """Write the KFP package for `config` and return the PipelineJob dict.

    `out` ending in .yaml/.yml: the PipelineSpec (what `kfp.Client` and the KFP UI take), with the pipeline
    root and the runtime parameters' defaults in it. Any other name: the PipelineJob as JSON (what Vertex AI
    Pipelines takes), where they are in runtimeConfig.
    """
    from tfx import v1 as tfx

    settings = kubeflow_settings(config)
    runner_config = tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
        default_image=settings.image, use_pipeline_spec_2_1=True
    )
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(runner_config)
    parameters = runtime_parameters(config)
    pipeline = kubeflow_pipeline(config)
    job = runner.run(pipeline, parameter_values=parameters, write_out=False)
    spec = job["pipelineSpec"]
    spec["defaultPipelineRoot"] = settings.pipeline_root
    _fill_in_resources(
        spec, settings, {component.id: node_class(component) for component in pipeline.components}
    )
    for name, value in parameters.items():
        spec["root"]["inputDefinitions"]["parameters"][name].update(defaultValue=value, isOptional=True)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix in YAML_SUFFIXES:
        out.write_text(yaml.safe_dump(spec, sort_keys=True))
    else:
        out.write_text(json.dumps(job, indent=1, sort_keys=True))
    return job


def _check_reachable(host: str) -> None:
    """Fail fast (kfp.Client retries its health check for ~25 s) when nothing answers at `host`."""
    try:
        with urllib.request.urlopen(f"{host.rstrip('/')}/apis/v2beta1/healthz", timeout=10):
            pass
    except urllib.error.HTTPError:
        pass  # something answered; kfp.Client reports what it does not like
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise SubmitError(f"cannot reach Kubeflow Pipelines at {host}: {reason}") from None


def submit_pipeline(
    package: str | Path,
    host: str,
    experiment: str = "Default",
    run_name: str | None = None,
    parameters: dict[str, str] | None = None,
    pipeline_root: str | None = None,
) -> str:
    """Create a run of a compiled YAML package on the KFP server at `host`; returns the run id."""
    package = Path(package)
    if not package.is_file():
        raise FileNotFoundError(f"no pipeline package at {package}")
    if package.suffix not in YAML_SUFFIXES:
        raise SubmitError(
            f"{package}: kfp.Client takes a YAML package; compile with --out {package.stem}.yaml"
        )
    _check_reachable(host)

    import kfp
    from kfp_server_api.exceptions import ApiException

    try:
        client = kfp.Client(host=host)
        result = client.create_run_from_pipeline_package(
            str(package),
            arguments=parameters or {},
            run_name=run_name,
            experiment_name=experiment,
            pipeline_root=pipeline_root,
        )
    except ApiException as error:
        raise SubmitError(
            f"Kubeflow Pipelines at {host} refused the run: {error.status} {error.reason}"
        ) from None
    log.info("submitted %s to %s: run %s in experiment %s", package, host, result.run_id, experiment)
    return result.run_id
