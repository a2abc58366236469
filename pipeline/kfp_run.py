"""`yt8m kfp-run`: execute a compiled KFP v2 package here, task by task, the way the KFP v2 backend does.

Each task runs its own container `command` + `args` from the package (the project's Python standing in for
the image's), with the `{{$}}` argument replaced by the ExecutorInput a KFP launcher would pass: input
artifacts (name, uri, metadata, type schema) from the producers' ExecutorOutputs, parameter values from
constants and the pipeline's runtime parameters, output URIs `<pipeline root>/<run id>/<task>/<key>` and the
output file. A task's `triggerPolicy.condition` is evaluated on its declared inputs first, its
`lifecycle.preCacheCheck` (TFX's ExampleGen driver) runs before it. Executions and artifacts are recorded in
ML Metadata (sqlite, with the pipeline / pipeline_run / node contexts of TFX's local runners) so that
`yt8m lineage` and `yt8m report` read such a run. Everything under the pipeline root goes through
tf.io.gfile, so the root may be a bucket.

Caching as KFP's: a task whose `cachingOptions.enableCache` is set gets a fingerprint of its container
(image, command, args), its parameter values (after the driver), its input artifacts (by ML Metadata id) and
its output types. When a COMPLETE execution of the same pipeline in the store has that fingerprint, the task
is not run: a CACHED execution is recorded that publishes the earlier execution's output artifacts.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import os
import posixpath
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from graphlib import TopologicalSorter
from pathlib import Path
from typing import Any

import yaml

from pipeline.home import home_lock
from pipeline.kfp_cel import Condition, ConditionError, parse_condition

log = logging.getLogger("yt8m")
EXECUTOR_INPUT_PLACEHOLDER = "{{$}}"
EXECUTOR_OUTPUT_FILE = "executor_output.json"
INTERPRETERS = ("python", "python3")
METADATA_FILE = "metadata.sqlite"
LOG_DIR = "kfp_logs"
TAIL_LINES = 15
COMPLETE, CACHED, SKIPPED, FAILED = "COMPLETE", "CACHED", "SKIPPED", "FAILED"
CACHE_FINGERPRINT = "cache_fingerprint"  # execution properties of a COMPLETE task that later runs reuse
PUBLISHED_OUTPUTS = "kfp_published_outputs"


class KfpRunError(RuntimeError):
    """The package cannot be run, or one of its tasks failed; the message names the task and says why."""


@dataclass(frozen=True)
class Package:
    """A compiled pipeline: its PipelineSpec, and the runtime config a PipelineJob JSON carries with it."""

    spec: dict[str, Any]
    parameter_values: dict[str, Any]
    pipeline_root: str

    @property
    def pipeline_name(self) -> str:
        return self.spec["pipelineInfo"]["name"]


@dataclass(frozen=True)
class Task:
    """One task of the root DAG with its component interface and container."""

    name: str
    spec: dict[str, Any]
    component: dict[str, Any]
    container: dict[str, Any]
    condition: Condition | None
    upstream: frozenset[str]

    def artifact_producers(self) -> dict[str, tuple[str, str]]:
        return _artifact_producers(self.spec)


@dataclass
class TaskResult:
    name: str
    state: str
    seconds: float = 0.0
    reason: str = ""
    outputs: dict[str, list[dict]] = field(default_factory=dict)

    def line(self) -> str:
        if self.state in (SKIPPED, CACHED):
            return f"{self.name}: {self.state.lower()} ({self.reason})"
        return f"{self.name}: {self.state.lower()} in {self.seconds:.1f} s" + (
            f": {self.reason}" if self.reason else ""
        )


@dataclass(frozen=True)
class RunReport:
    run_id: str
    run_root: str
    metadata_path: str
    results: list[TaskResult]

    def lines(self) -> list[str]:
        count = {state: sum(r.state == state for r in self.results) for state in (COMPLETE, CACHED, SKIPPED)}
        summary = (
            f"run {self.run_id}: {count[COMPLETE]} tasks complete, {count[CACHED]} cached, "
            f"{count[SKIPPED]} skipped; artifacts under {self.run_root}; ML Metadata {self.metadata_path}"
        )
        return [*(result.line() for result in self.results), summary]


def load_package(path: str | Path) -> Package:
    """A `yt8m compile` output: PipelineSpec YAML, or PipelineJob JSON (pipelineSpec + runtimeConfig)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no pipeline package at {path}")
    document = yaml.safe_load(path.read_text())  # YAML is a superset of JSON
    if not isinstance(document, dict) or not ("pipelineSpec" in document or "root" in document):
        raise KfpRunError(f"{path}: not a KFP PipelineSpec or PipelineJob")
    if "pipelineSpec" in document:
        runtime = document.get("runtimeConfig", {})
        spec = document["pipelineSpec"]
        return Package(spec, runtime.get("parameterValues", {}), runtime.get("gcsOutputDirectory", ""))
    return Package(document, {}, document.get("defaultPipelineRoot", ""))


def _parse_parameter(name: str, text: str, parameter_type: str) -> Any:
    """A --param value as the JSON value of its declared type."""
    try:
        if parameter_type in ("NUMBER_INTEGER", "NUMBER_DOUBLE"):
            return float(text)
        if parameter_type == "BOOLEAN":
            return {"true": True, "false": False}[text.lower()]
        if parameter_type in ("STRUCT", "LIST"):
            return json.loads(text)
    except (ValueError, KeyError):
        raise KfpRunError(f"--param {name}={text}: not a {parameter_type} value") from None
    return text


def runtime_parameters(package: Package, overrides: dict[str, str]) -> dict[str, Any]:
    """The root's parameters: defaults, then the PipelineJob's values, then --param overrides."""
    declared = package.spec["root"].get("inputDefinitions", {}).get("parameters", {})
    unknown = sorted(set(overrides) - set(declared))
    if unknown:
        raise KfpRunError(f"unknown runtime parameter(s) {unknown}; the package declares {sorted(declared)}")
    values = {name: spec["defaultValue"] for name, spec in declared.items() if "defaultValue" in spec}
    values.update(package.parameter_values)
    for name, text in overrides.items():
        values[name] = _parse_parameter(name, text, declared[name].get("parameterType", "STRING"))
    missing = sorted(
        name for name, spec in declared.items() if name not in values and not spec.get("isOptional")
    )
    if missing:
        raise KfpRunError(f"runtime parameter(s) {missing} have no default: pass --param NAME=VALUE")
    return values


def _artifact_producers(task_spec: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Input key -> (producer task, its output key)."""
    inputs = task_spec.get("inputs", {}).get("artifacts", {})
    return {
        key: (source["taskOutputArtifact"]["producerTask"], source["taskOutputArtifact"]["outputArtifactKey"])
        for key, source in inputs.items()
    }


def _check_condition(name: str, condition: Condition, component: dict[str, Any]) -> None:
    """Every input a condition reads is one its task declares (KFP evaluates it on the task's inputs)."""
    definitions = component.get("inputDefinitions", {})
    declared = {
        "artifacts": definitions.get("artifacts", {}),
        "parameter_values": definitions.get("parameters", {}),
    }
    for group, key in sorted(condition.references):
        if key not in declared[group]:
            raise KfpRunError(
                f"task {name}: its condition reads inputs.{group}[{key!r}], which the task does not declare "
                f"(declared {group}: {sorted(declared[group])})"
            )


def read_tasks(spec: dict[str, Any]) -> dict[str, Task]:
    """The root DAG's tasks; a condition that does not parse or reads an undeclared input fails here."""
    executors = spec["deploymentSpec"]["executors"]
    tasks = {}
    for name, task in spec["root"]["dag"]["tasks"].items():
        component = spec["components"][task["componentRef"]["name"]]
        executor = executors.get(component.get("executorLabel", ""), {})
        if "container" not in executor:
            raise KfpRunError(f"task {name}: only container executors run here, found {sorted(executor)}")
        inputs = task.get("inputs", {})
        for key, source in inputs.get("artifacts", {}).items():
            if "taskOutputArtifact" not in source:
                raise KfpRunError(
                    f"task {name}: input artifact {key} is not a task output ({sorted(source)})"
                )
        for key, source in inputs.get("parameters", {}).items():
            if "runtimeValue" not in source and "componentInputParameter" not in source:
                raise KfpRunError(
                    f"task {name}: parameter {key} has an unsupported source ({sorted(source)})"
                )
        condition = None
        text = task.get("triggerPolicy", {}).get("condition")
        if text:
            try:
                condition = parse_condition(text)
            except ConditionError as error:
                raise KfpRunError(f"task {name}: condition {error}") from None
            _check_condition(name, condition, component)
        producers = {producer for producer, _ in _artifact_producers(task).values()}
        upstream = frozenset(task.get("dependentTasks", [])) | producers
        unknown = sorted(upstream - set(spec["root"]["dag"]["tasks"]))
        if unknown:
            raise KfpRunError(f"task {name}: depends on unknown task(s) {unknown}")
        tasks[name] = Task(name, task, component, executor["container"], condition, upstream)
    return tasks


def _absolute_root(root: str) -> str:
    return root.rstrip("/") if "://" in root else str(Path(root).absolute())


def default_metadata_path(pipeline_root: str) -> str:
    """Beside a local pipeline root (`<home>/pipeline_root` -> `<home>/metadata.sqlite`, as `yt8m run`);
    for a bucket root, yt8m_home/metadata.sqlite (the default home of `yt8m lineage` and `yt8m report`)."""
    if "://" in pipeline_root:
        return str(Path("yt8m_home", METADATA_FILE).absolute())
    return str(Path(pipeline_root).absolute().parent / METADATA_FILE)


class _Metadata:
    """Writes executions, artifacts and events into an ML Metadata sqlite store as TFX's runners do."""

    def __init__(self, path: str, pipeline_name: str, run_id: str) -> None:
        from ml_metadata import metadata_store
        from ml_metadata.proto import metadata_store_pb2

        self.pb = metadata_store_pb2
        config = metadata_store_pb2.ConnectionConfig()
        config.sqlite.filename_uri = path
        config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
        self.store = metadata_store.MetadataStore(config)
        self.pipeline_name = pipeline_name
        self.run_contexts = [self._context("pipeline", pipeline_name), self._context("pipeline_run", run_id)]
        self.artifact_ids: dict[tuple[str, str], list[int]] = {}  # (task, output key) -> artifact ids
        self.lock = threading.Lock()  # tasks look up the cache from worker threads

    def _context(self, type_name: str, name: str):
        type_id = self.store.put_context_type(self.pb.ContextType(name=type_name))
        found = self.store.get_context_by_type_and_name(type_name, name)
        if found is not None:
            return found
        context = self.pb.Context(type_id=type_id, name=name)
        context.id = self.store.put_contexts([context])[0]
        return context

    def _value(self, value: Any, parameter_type: str):
        result = self.pb.Value()
        if isinstance(value, str):
            result.string_value = value
        elif isinstance(value, bool):
            result.string_value = json.dumps(value)
        elif isinstance(value, int | float) and parameter_type == "NUMBER_INTEGER":
            result.int_value = int(value)
        elif isinstance(value, int | float):
            result.double_value = value
        else:
            result.string_value = json.dumps(value, sort_keys=True)
        return result

    def _set_parameters(self, execution, task: Task, parameters: dict[str, Any]) -> None:
        """The task's parameter values as the execution's custom properties (TFX: exec properties)."""
        types = task.component.get("inputDefinitions", {}).get("parameters", {})
        for key, value in parameters.items():
            execution.custom_properties[key].CopyFrom(
                self._value(value, types.get(key, {}).get("parameterType", ""))
            )

    def _node_contexts(self, task: Task) -> list:
        return [*self.run_contexts, self._context("node", f"{self.pipeline_name}.{task.name}")]

    def start(self, task: Task, parameters: dict[str, Any]) -> int:
        """A RUNNING execution of `task` (typed by its executor class) with its input events."""
        with self.lock:
            return self._start(task, parameters)

    def _start(self, task: Task, parameters: dict[str, Any]) -> int:
        type_name = _executor_class(task) or task.name
        execution = self.pb.Execution(
            type_id=self.store.put_execution_type(self.pb.ExecutionType(name=type_name)),
            last_known_state=self.pb.Execution.RUNNING,
        )
        self._set_parameters(execution, task, parameters)
        events = []
        for key, (producer, output_key) in sorted(task.artifact_producers().items()):
            for index, artifact_id in enumerate(self.artifact_ids[(producer, output_key)]):
                event = self.pb.Event(type=self.pb.Event.INPUT, artifact_id=artifact_id)
                event.path.steps.add().key = key
                event.path.steps.add().index = index
                events.append(event)
        execution_id, _, _ = self.store.put_execution(execution, [], self._node_contexts(task))
        for event in events:
            event.execution_id = execution_id
        self.store.put_events(events)
        return execution_id

    def cached_outputs(self, fingerprint: str) -> tuple[int, dict[str, list[dict]]] | None:
        """(execution id, published outputs) of the latest COMPLETE execution of this pipeline with
        `fingerprint`, or None."""
        with self.lock:
            executions = self.store.get_executions_by_context(self.run_contexts[0].id)
        for execution in sorted(executions, key=lambda e: e.id, reverse=True):
            properties = execution.custom_properties
            if (
                execution.last_known_state == self.pb.Execution.COMPLETE
                and CACHE_FINGERPRINT in properties
                and properties[CACHE_FINGERPRINT].string_value == fingerprint
            ):
                return execution.id, json.loads(properties[PUBLISHED_OUTPUTS].string_value)
        return None

    def finish(
        self,
        task: Task,
        execution_id: int,
        state: str,
        parameters: dict[str, Any],
        outputs: dict[str, list[dict]],
        fingerprint: str | None = None,
    ) -> None:
        """Mark the execution COMPLETE with its output artifacts (typed as TFX parses them), CACHED with the
        artifacts an earlier execution published (`outputs` named by their MLMD ids), or FAILED;
        `parameters` include what the driver added (span, input_fingerprint). Each new output artifact is
        then named by its MLMD id, as a KFP driver names the artifacts it resolves from ML Metadata."""
        with self.lock:
            (execution,) = self.store.get_executions_by_id([execution_id])
            execution.last_known_state = getattr(self.pb.Execution, state)
            self._set_parameters(execution, task, parameters)
            if state == CACHED:
                self._publish_cached(task, execution, outputs)
            elif state == COMPLETE:
                self._publish(task, execution, outputs, fingerprint)
            else:
                self.store.put_execution(execution, [], self._node_contexts(task))

    def _output_event(self, key: str, index: int):
        event = self.pb.Event(type=self.pb.Event.OUTPUT)
        event.path.steps.add().key = key
        event.path.steps.add().index = index
        return event

    def _publish_cached(self, task: Task, execution, outputs: dict[str, list[dict]]) -> None:
        artifact_and_events = []
        for key, artifacts in sorted(outputs.items()):
            self.artifact_ids[(task.name, key)] = [int(artifact["name"]) for artifact in artifacts]
            reused = self.store.get_artifacts_by_id(self.artifact_ids[(task.name, key)])
            artifact_and_events += [(a, self._output_event(key, i)) for i, a in enumerate(reused)]
        self.store.put_execution(execution, artifact_and_events, self._node_contexts(task))

    def _publish(
        self, task: Task, execution, outputs: dict[str, list[dict]], fingerprint: str | None
    ) -> None:
        from google.protobuf import json_format
        from kfp.pipeline_spec import pipeline_spec_pb2
        from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_entrypoint_utils

        lists = {
            key: json_format.ParseDict({"artifacts": artifacts}, pipeline_spec_pb2.ArtifactList())
            for key, artifacts in outputs.items()
        }
        artifact_and_events = []
        for key, artifacts in sorted(kubeflow_v2_entrypoint_utils.parse_raw_artifact_dict(lists).items()):
            for index, artifact in enumerate(artifacts):
                mlmd_artifact = artifact.mlmd_artifact
                mlmd_artifact.ClearField("id")
                mlmd_artifact.type_id = self.store.put_artifact_type(
                    artifact.artifact_type, can_add_fields=True, can_omit_fields=True
                )
                mlmd_artifact.state = self.pb.Artifact.LIVE
                artifact_and_events.append((mlmd_artifact, self._output_event(key, index)))
        execution.id, artifact_ids, _ = self.store.put_execution(
            execution, artifact_and_events, self._node_contexts(task)
        )
        position = 0
        for key, artifacts in sorted(outputs.items()):
            self.artifact_ids[(task.name, key)] = artifact_ids[position : position + len(artifacts)]
            for artifact, artifact_id in zip(artifacts, self.artifact_ids[(task.name, key)], strict=True):
                artifact["name"] = str(artifact_id)
            position += len(artifacts)
        if fingerprint is not None:  # what a later run reuses, once the artifacts have their ids
            execution.custom_properties[CACHE_FINGERPRINT].string_value = fingerprint
            execution.custom_properties[PUBLISHED_OUTPUTS].string_value = json.dumps(outputs, sort_keys=True)
            self.store.put_executions([execution])


def _executor_class(task: Task) -> str | None:
    args = task.container.get("args", [])
    return args[args.index("--executor_class_path") + 1] if "--executor_class_path" in args else None


def cache_fingerprint(task: Task, executor_input: dict[str, Any]) -> str | None:
    """KFP's cache key of a task about to run (after its driver), or None when the package turns its caching
    off: its container, parameter values, input artifacts by ML Metadata id, and output types."""
    if not task.spec.get("cachingOptions", {}).get("enableCache", False):
        return None
    inputs, outputs = executor_input["inputs"], executor_input["outputs"]["artifacts"]
    key = {
        "container": {part: task.container.get(part) for part in ("image", "command", "args", "lifecycle")},
        "parameters": inputs["parameterValues"],
        "artifacts": {
            key: [artifact["name"] for artifact in listed["artifacts"]]
            for key, listed in inputs.get("artifacts", {}).items()
        },
        "outputs": {key: [a["type"] for a in listed["artifacts"]] for key, listed in outputs.items()},
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Executed:
    """What one task published: its outputs, its cache fingerprint, and the execution it reused if cached."""

    outputs: dict[str, list[dict]]
    fingerprint: str | None = None
    cached_from: int | None = None


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def _argv(task: Task, command: list[str], args: list[str], executor_input: str) -> list[str]:
    """The container's command line, the ExecutorInput in place of `{{$}}`, this Python for `python`."""
    argv = list(command) + list(args)
    for position, element in enumerate(argv):
        if element == EXECUTOR_INPUT_PLACEHOLDER:
            argv[position] = executor_input
        elif "{{$" in element:
            raise KfpRunError(f"task {task.name}: unsupported placeholder in {element[:80]!r}")
    if argv and argv[0] in INTERPRETERS:
        argv[0] = sys.executable
    return argv


def _tail(path: Path, lines: int = TAIL_LINES) -> list[str]:
    text = path.read_text(errors="replace").splitlines() if path.exists() else []
    return [line for line in text if line.strip()][-lines:]


class PackageRun:
    """One run of a package: schedules tasks in dependency order, evaluates conditions, records MLMD."""

    def __init__(
        self,
        tasks: dict[str, Task],
        parameters: dict[str, Any],
        pipeline_root: str,
        run_id: str,
        metadata: _Metadata,
        log_dir: Path,
        use_cache: bool = True,
    ) -> None:
        self.tasks = tasks
        self.use_cache = use_cache
        self.parameters = parameters
        self.run_root = posixpath.join(pipeline_root, run_id)
        self.metadata = metadata
        self.log_dir = log_dir
        self.results: dict[str, TaskResult] = {}
        self.environment = os.environ.copy()

    # -- inputs ------------------------------------------------------------------------------------------
    def _parameter_values(self, task: Task) -> dict[str, Any]:
        values = {}
        for key, source in task.spec.get("inputs", {}).get("parameters", {}).items():
            if "runtimeValue" in source:
                values[key] = source["runtimeValue"]["constant"]
            elif source["componentInputParameter"] in self.parameters:
                values[key] = self.parameters[source["componentInputParameter"]]
        return values

    def _input_artifacts(self, task: Task) -> dict[str, list[dict]]:
        """Each input's artifact list as its producer published it, typed by this task's input definition."""
        definitions = task.component.get("inputDefinitions", {}).get("artifacts", {})
        artifacts = {}
        for key, (producer, output_key) in task.artifact_producers().items():
            artifact_type = definitions[key]["artifactType"]
            artifacts[key] = [
                {**artifact, "type": artifact_type} for artifact in self.results[producer].outputs[output_key]
            ]
        return artifacts

    def _skip_reason(self, task: Task) -> str | None:
        for key, (producer, _) in sorted(task.artifact_producers().items()):
            if self.results[producer].state == SKIPPED:
                return f"its input {key} comes from skipped task {producer}"
        return None

    def executor_input(self, task: Task) -> dict[str, Any]:
        task_root = posixpath.join(self.run_root, task.name)
        outputs = {
            key: {
                "artifacts": [
                    {
                        "name": key,
                        "uri": posixpath.join(task_root, key),
                        "type": definition["artifactType"],
                        "metadata": {},
                    }
                ]
            }
            for key, definition in task.component.get("outputDefinitions", {}).get("artifacts", {}).items()
        }
        inputs = {"parameterValues": self._parameter_values(task)}
        artifacts = self._input_artifacts(task)
        if artifacts:
            inputs["artifacts"] = {key: {"artifacts": listed} for key, listed in artifacts.items()}
        return {
            "inputs": inputs,
            "outputs": {"artifacts": outputs, "outputFile": posixpath.join(task_root, EXECUTOR_OUTPUT_FILE)},
        }

    # -- one task ---------------------------------------------------------------------------------------
    def _run_container(
        self, task: Task, command: list[str], args: list[str], executor_input: dict, log_path: Path
    ) -> None:
        """Run one container command line to completion, its output in `log_path`; KfpRunError if it fails."""
        argv = _argv(task, command, args, json.dumps(executor_input, sort_keys=True))
        environment = {**self.environment, **{e["name"]: e["value"] for e in task.container.get("env", [])}}
        with log_path.open("w") as handle:
            completed = subprocess.run(
                argv, stdout=handle, stderr=subprocess.STDOUT, env=environment, check=False
            )
        if completed.returncode != 0:
            tail = _tail(log_path)
            for line in tail:
                log.error("%s | %s", task.name, line)
            # the error's own text: Beam appends the transform it ran in as " [while running '...']"
            last = " ".join(tail[-1].split(" [while running")[0].split()) if tail else "no output"
            raise KfpRunError(
                f"task {task.name} failed (exit code {completed.returncode}): {last} (log: {log_path})"
            )

    def _read_executor_output(self, task: Task, path: str) -> dict[str, Any]:
        gfile = _gfile()
        if not gfile.exists(path):
            raise KfpRunError(
                f"task {task.name}: the container exited 0 but wrote no ExecutorOutput at {path}"
            )
        with gfile.GFile(path) as handle:
            return json.loads(handle.read())

    def execute(self, task: Task, executor_input: dict[str, Any]) -> Executed:
        """The driver (preCacheCheck) if any, then the cache lookup, then the executor."""
        gfile = _gfile()
        output_file = executor_input["outputs"]["outputFile"]
        if gfile.exists(output_file):
            gfile.remove(output_file)  # the entrypoint reads an existing file as its driver's output
        driver = task.container.get("lifecycle", {}).get("preCacheCheck")
        if driver:
            self._run_container(
                task,
                driver["command"],
                driver.get("args", []),
                executor_input,
                self.log_dir / f"{task.name}.driver.log",
            )
            driven = self._read_executor_output(task, output_file)
            # The launcher's part: the driver's parameters (span, fingerprint, resolved input config) become
            # the execution's, its output metadata the output artifacts' (the executor re-reads the file too).
            executor_input["inputs"]["parameterValues"].update(driven.get("parameterValues", {}))
            for key, listed in driven.get("artifacts", {}).items():
                for output, driven_artifact in zip(
                    executor_input["outputs"]["artifacts"][key]["artifacts"],
                    listed["artifacts"],
                    strict=False,
                ):
                    output["metadata"].update(driven_artifact.get("metadata", {}))
        fingerprint = cache_fingerprint(task, executor_input) if self.use_cache else None
        cached = self.metadata.cached_outputs(fingerprint) if fingerprint else None
        if cached is not None:
            return Executed(cached[1], fingerprint, cached_from=cached[0])
        self._run_container(
            task,
            task.container["command"],
            task.container.get("args", []),
            executor_input,
            self.log_dir / f"{task.name}.log",
        )
        published = self._read_executor_output(task, output_file).get("artifacts", {})
        outputs = {}
        for key, listed in executor_input["outputs"]["artifacts"].items():
            declared = listed["artifacts"]
            written = published.get(key, {}).get("artifacts", [])
            outputs[key] = [
                {**artifact, **{k: v for k, v in written[i].items() if k in ("uri", "metadata")}}
                if i < len(written)
                else artifact
                for i, artifact in enumerate(declared)
            ]
        return Executed(outputs, fingerprint)

    # -- scheduling -------------------------------------------------------------------------------------
    def _begin(self, task: Task) -> tuple[int, dict] | None:
        """Skip the task (recording why), or record its execution start and return (execution id, input).
        Consumers of a skipped task's outputs are skipped; otherwise the condition decides."""
        reason = self._skip_reason(task)
        executor_input = self.executor_input(task) if reason is None else {}
        if reason is None and task.condition is not None:
            inputs = executor_input["inputs"]
            artifacts = {key: listed["artifacts"] for key, listed in inputs.get("artifacts", {}).items()}
            try:
                if not task.condition.evaluate(artifacts, inputs["parameterValues"]):
                    reason = f"condition {task.condition.text} is false"
            except ConditionError as error:
                raise KfpRunError(f"task {task.name}: condition {task.condition.text}: {error}") from None
        if reason is not None:
            self.results[task.name] = TaskResult(task.name, SKIPPED, reason=reason)
            log.info("kfp-run: %s skipped: %s", task.name, reason)
            return None
        return self.metadata.start(task, executor_input["inputs"]["parameterValues"]), executor_input

    def _finish(
        self, future: concurrent.futures.Future, name: str, execution_id: int, started: float, executor_input
    ) -> str:
        """Record a finished task in MLMD; returns its failure message, or "" when it completed."""
        task, seconds = self.tasks[name], time.monotonic() - started
        parameters = executor_input["inputs"]["parameterValues"]
        try:
            executed = future.result()
        except KfpRunError as error:
            self.metadata.finish(task, execution_id, FAILED, parameters, {})
            self.results[name] = TaskResult(name, FAILED, seconds, str(error))
            return str(error)
        if executed.cached_from is not None:
            self.metadata.finish(task, execution_id, CACHED, parameters, executed.outputs)
            reason = f"outputs of execution {executed.cached_from}"
            self.results[name] = TaskResult(name, CACHED, seconds, reason, executed.outputs)
        else:
            self.metadata.finish(
                task, execution_id, COMPLETE, parameters, executed.outputs, executed.fingerprint
            )
            self.results[name] = TaskResult(name, COMPLETE, seconds, outputs=executed.outputs)
        log.info("kfp-run: %s %s in %.1f s", name, self.results[name].state.lower(), seconds)
        return ""

    def run(self, parallelism: int = 1) -> list[TaskResult]:
        """Every task in dependency order, up to `parallelism` at a time. The first failure stops the run:
        running tasks finish, nothing new starts, and KfpRunError names the failed task(s)."""
        sorter = TopologicalSorter({name: task.upstream for name, task in self.tasks.items()})
        sorter.prepare()
        ready: list[str] = []
        running: dict[concurrent.futures.Future, tuple[str, int, float, dict]] = {}
        failures: list[str] = []
        with concurrent.futures.ThreadPoolExecutor(max_workers=parallelism) as pool:
            while sorter.is_active() and not failures:
                ready.extend(sorted(sorter.get_ready()))
                while ready and len(running) < parallelism and not failures:
                    task = self.tasks[ready.pop(0)]
                    try:
                        begun = self._begin(task)
                    except KfpRunError as error:
                        failures.append(str(error))
                        break
                    if begun is None:
                        sorter.done(task.name)
                        ready.extend(sorted(sorter.get_ready()))
                        continue
                    execution_id, executor_input = begun
                    log.info("kfp-run: %s is running", task.name)
                    future = pool.submit(self.execute, task, executor_input)
                    running[future] = (task.name, execution_id, time.monotonic(), executor_input)
                if not running:
                    continue  # everything ready was skipped: look again
                finished, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in finished:
                    name = running[future][0]
                    failure = self._finish(future, *running.pop(future))
                    if failure:
                        failures.append(failure)
                    else:
                        sorter.done(name)
            for future in concurrent.futures.as_completed(list(running)):
                failure = self._finish(future, *running.pop(future))
                if failure:
                    failures.append(failure)
        if failures:
            not_run = sorted(set(self.tasks) - set(self.results))
            raise KfpRunError("; ".join(failures) + f" ({len(not_run)} downstream task(s) not run)")
        return [self.results[name] for name in self.tasks if name in self.results]


def run_package(
    package_path: str | Path,
    parameters: dict[str, str] | None = None,
    pipeline_root: str | None = None,
    metadata_path: str | None = None,
    run_id: str | None = None,
    parallelism: int = 1,
    use_cache: bool = True,
) -> RunReport:
    """Run a compiled package here; returns what ran, was cached or skipped, or raises KfpRunError.
    `use_cache=False` runs every task (as KFP's `enable_caching=False`)."""
    from pipeline.metadata import failures_recorded  # ML Metadata only once a run starts

    package = load_package(package_path)
    root = pipeline_root or package.pipeline_root
    if not root:
        raise KfpRunError(f"{package_path}: the package has no pipeline root: pass --pipeline-root")
    root = _absolute_root(root)
    values = runtime_parameters(package, parameters or {})
    tasks = read_tasks(package.spec)  # a bad condition fails before anything runs
    run_id = run_id or f"{package.pipeline_name}-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    run_root = posixpath.join(root, run_id)
    if _gfile().exists(run_root):
        raise KfpRunError(f"run {run_id} already exists at {run_root}: pass another --run-id")
    metadata_path = str(Path(metadata_path or default_metadata_path(root)).absolute())
    home = Path(metadata_path).parent
    home.mkdir(parents=True, exist_ok=True)
    with home_lock(home):
        log_dir = home / LOG_DIR / run_id
        log_dir.mkdir(parents=True, exist_ok=True)
        with failures_recorded(metadata_path, package.pipeline_name):
            metadata = _Metadata(metadata_path, package.pipeline_name, run_id)
            log.info(
                "kfp-run: %s as run %s under %s; ML Metadata %s", package_path, run_id, root, metadata_path
            )
            results = PackageRun(tasks, values, root, run_id, metadata, log_dir, use_cache).run(parallelism)
    return RunReport(run_id, run_root, metadata_path, results)
