"""Lineage of an artifact from ML Metadata: what produced it, from which inputs, down to the input files."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from pipeline.metadata import property_value

PUSHED_MODEL_TYPE = "PushedModel"
# Properties worth showing when an artifact or execution has them (everything else stays in MLMD).
KEY_PROPERTIES = (
    "config_name",
    "fold",
    "level",
    "split_counts",
    "holdout_gap",
    "oof_gap",
    "candidate_recall",
    "blessed",
    "input_base",
    "l1_config_source",
)
_OUTPUT_EVENTS = (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)
_INPUT_EVENTS = (metadata_store_pb2.Event.INPUT, metadata_store_pb2.Event.DECLARED_INPUT)


class LineageError(ValueError):
    """The lineage cannot be walked (unknown artifact, no pushed model, ...); the message says why."""


@dataclass(frozen=True)
class Producer:
    """The execution that first published an artifact (later cached runs only reuse it)."""

    node_id: str
    execution_id: int
    state: str
    created_ms: int
    updated_ms: int
    properties: dict[str, Any]
    inputs: dict[str, list[int]]  # input key -> artifact ids
    input_files: list[str] = field(default_factory=list)  # ExampleGen: input_base joined with split patterns


@dataclass(frozen=True)
class ArtifactNode:
    artifact_id: int
    type_name: str
    uri: str
    created_ms: int
    updated_ms: int
    properties: dict[str, Any]
    producer: Producer | None  # None for an artifact nothing in the store produced (imported)


@dataclass(frozen=True)
class Lineage:
    """Every artifact upstream of `root_id` (itself included), by id."""

    root_id: int
    artifacts: dict[int, ArtifactNode]


def metadata_path(home: str | None = None, config_path: str | None = None) -> str:
    """The sqlite ML Metadata file of a home directory or of a pipeline config (default home: yt8m_home)."""
    if config_path:
        from pipeline.config import load_pipeline_config

        path = load_pipeline_config(config_path).metadata_path
    else:
        path = str(Path(home or "yt8m_home", "metadata.sqlite").absolute())
    if not Path(path).is_file():
        raise FileNotFoundError(f"no ML Metadata at {path} (run the pipeline first: yt8m run)")
    return path


def latest_artifact_id(store: metadata_store.MetadataStore, type_name: str) -> int:
    """The id of the newest artifact of a type."""
    artifacts = store.get_artifacts_by_type(type_name)
    if not artifacts:
        raise LineageError(f"no {type_name} artifact in ML Metadata (has the node that writes it run?)")
    return max(artifacts, key=lambda a: (a.create_time_since_epoch, a.id)).id


def latest_pushed_model_id(store: metadata_store.MetadataStore) -> int:
    return latest_artifact_id(store, PUSHED_MODEL_TYPE)


def format_time(milliseconds: int) -> str:
    return datetime.fromtimestamp(milliseconds / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _key_properties(holder) -> dict[str, Any]:
    """KEY_PROPERTIES among the custom properties of an artifact or execution, also inside a JSON
    `custom_config` (TFX Trainer executions keep fold and config source there)."""
    custom = holder.custom_properties
    found = {name: property_value(holder, name) for name in KEY_PROPERTIES if name in custom}
    if "custom_config" in custom:
        custom_config = json.loads(custom["custom_config"].string_value or "null")
        if isinstance(custom_config, dict):
            found.update({name: custom_config[name] for name in KEY_PROPERTIES if name in custom_config})
    return found


def _input_files(execution: metadata_store_pb2.Execution) -> list[str]:
    """For an ExampleGen execution: its input_base joined with each split's file pattern."""
    properties = execution.custom_properties
    if "input_base" not in properties:
        return []
    base = properties["input_base"].string_value
    input_config = json.loads(properties["input_config"].string_value) if "input_config" in properties else {}
    splits = input_config.get("splits", [])
    return [f"{base.rstrip('/')}/{split['pattern']}" for split in splits] or [base]


class _Walker:
    def __init__(self, store: metadata_store.MetadataStore) -> None:
        self.store = store
        self.node_context_type = store.get_context_type("node").id

    def node_id(self, execution_id: int) -> str:
        for context in self.store.get_contexts_by_execution(execution_id):
            if context.type_id == self.node_context_type:
                return context.name.partition(".")[2]
        return "?"

    def producer(self, artifact_id: int) -> Producer | None:
        events = self.store.get_events_by_artifact_ids([artifact_id])
        producing = sorted(e.execution_id for e in events if e.type in _OUTPUT_EVENTS)
        if not producing:
            return None
        (execution,) = self.store.get_executions_by_id([producing[0]])
        inputs: dict[str, list[int]] = {}
        for event in self.store.get_events_by_execution_ids([execution.id]):
            if event.type in _INPUT_EVENTS:
                inputs.setdefault(event.path.steps[0].key, []).append(event.artifact_id)
        return Producer(
            node_id=self.node_id(execution.id),
            execution_id=execution.id,
            state=metadata_store_pb2.Execution.State.Name(execution.last_known_state),
            created_ms=execution.create_time_since_epoch,
            updated_ms=execution.last_update_time_since_epoch,
            properties=_key_properties(execution),
            inputs={key: sorted(ids) for key, ids in sorted(inputs.items())},
            input_files=_input_files(execution),
        )

    def walk(self, root_id: int) -> Lineage:
        artifacts: dict[int, ArtifactNode] = {}
        pending = [root_id]
        while pending:
            artifact_id = pending.pop()
            if artifact_id in artifacts:
                continue
            found = self.store.get_artifacts_by_id([artifact_id])
            if not found:
                raise LineageError(f"no artifact with id {artifact_id} in ML Metadata")
            artifact = found[0]
            producer = self.producer(artifact_id)
            artifacts[artifact_id] = ArtifactNode(
                artifact_id=artifact_id,
                type_name=artifact.type,
                uri=artifact.uri,
                created_ms=artifact.create_time_since_epoch,
                updated_ms=artifact.last_update_time_since_epoch,
                properties=_key_properties(artifact),
                producer=producer,
            )
            if producer:
                pending.extend(i for ids in producer.inputs.values() for i in ids)
        return Lineage(root_id, artifacts)


def trace(store: metadata_store.MetadataStore, artifact_id: int) -> Lineage:
    """Walk ML Metadata backwards from an artifact to the ExampleGen executions and their input files."""
    return _Walker(store).walk(artifact_id)


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.4f}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_format_value(v)}" for k, v in sorted(value.items())) + "}"
    return str(value)


def _properties_text(properties: dict[str, Any]) -> str:
    return "  ".join(f"{name}={_format_value(value)}" for name, value in properties.items())


def artifact_line(node: ArtifactNode) -> str:
    """One line about an artifact and the execution that produced it."""
    text = f"artifact {node.artifact_id} {node.type_name}"
    producer = node.producer
    if producer is None:
        return f"{text}  (no producing execution)  created {format_time(node.created_ms)}"
    return (
        f"{text}  <- {producer.node_id} (execution {producer.execution_id}, {producer.state}, "
        f"{format_time(producer.created_ms)} .. {format_time(producer.updated_ms)})"
    )


def text_tree(lineage: Lineage) -> str:
    """The lineage as an indented tree; an artifact reached twice is printed once, then referenced by id."""
    lines: list[str] = []
    shown: set[int] = set()

    def visit(artifact_id: int, depth: int, label: str) -> None:
        node = lineage.artifacts[artifact_id]
        indent = "    " * depth
        if artifact_id in shown:
            lines.append(f"{indent}{label}artifact {artifact_id} {node.type_name} (shown above)")
            return
        shown.add(artifact_id)
        lines.append(f"{indent}{label}{artifact_line(node)}")
        details = {**node.properties, **(node.producer.properties if node.producer else {})}
        if details:
            lines.append(f"{indent}    | {_properties_text(details)}")
        if node.producer is None:
            return
        for path in node.producer.input_files:
            lines.append(f"{indent}    | input files {path}")
        for key, ids in node.producer.inputs.items():
            for input_id in ids:
                visit(input_id, depth + 1, f"{key}: ")

    visit(lineage.root_id, 0, "")
    return "\n".join(lines) + "\n"


def _dot_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _dot_label(*parts: str) -> str:
    return "\\n".join(_dot_text(part) for part in parts if part)


def to_dot(lineage: Lineage) -> str:
    """Graphviz DOT: artifacts (ellipses), executions (boxes) and input file patterns (notes)."""
    lines = ["digraph lineage {", "  rankdir=LR;", '  node [fontname="Helvetica", fontsize=10];']
    executions: dict[int, Producer] = {}
    for node in sorted(lineage.artifacts.values(), key=lambda n: n.artifact_id):
        label = _dot_label(f"{node.artifact_id} {node.type_name}", _properties_text(node.properties))
        lines.append(f'  a{node.artifact_id} [shape=ellipse, label="{label}"];')
        if node.producer:
            executions[node.producer.execution_id] = node.producer
            lines.append(f"  e{node.producer.execution_id} -> a{node.artifact_id};")
    for execution_id, producer in sorted(executions.items()):
        label = _dot_label(
            producer.node_id,
            f"execution {execution_id} {producer.state}",
            f"{format_time(producer.created_ms)} .. {format_time(producer.updated_ms)}",
            _properties_text(producer.properties),
        )
        lines.append(f'  e{execution_id} [shape=box, style=filled, fillcolor="#e8eef7", label="{label}"];')
        for key, ids in producer.inputs.items():
            for input_id in ids:
                lines.append(f'  a{input_id} -> e{execution_id} [label="{_dot_text(key)}"];')
        for index, path in enumerate(producer.input_files):
            lines.append(f'  f{execution_id}_{index} [shape=note, label="{_dot_text(path)}"];')
            lines.append(f"  f{execution_id}_{index} -> e{execution_id};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_dot(dot: str, fmt: str) -> bytes:
    """Render DOT with graphviz's `dot` (png, svg, ...)."""
    executable = shutil.which("dot")
    if executable is None:
        raise LineageError(
            f"graphviz `dot` is not on PATH: cannot render {fmt} (write --dot and render it elsewhere)"
        )
    return subprocess.run(
        [executable, f"-T{fmt}"], input=dot.encode(), capture_output=True, check=True
    ).stdout


def graphviz_available() -> bool:
    return shutil.which("dot") is not None
