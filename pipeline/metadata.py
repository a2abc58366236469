"""Small read-only queries on the pipeline's ML Metadata store (sqlite)."""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf import json_format
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

_TFX_JSON_KEY = "__value__"
_OUTPUT_EVENTS = (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)


def open_store(sqlite_path: str) -> metadata_store.MetadataStore:
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = sqlite_path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return metadata_store.MetadataStore(config)


@dataclass(frozen=True)
class NodeExecution:
    """One execution of a pipeline node and the artifacts it published."""

    node_id: str
    execution_id: int
    state: str
    outputs: dict[str, list[metadata_store_pb2.Artifact]]


def node_executions(store: metadata_store.MetadataStore, pipeline_name: str) -> list[NodeExecution]:
    """Every execution of every node of the pipeline, oldest first."""
    result = []
    for context in store.get_contexts_by_type("node"):
        pipeline, _, node_id = context.name.partition(".")
        if pipeline != pipeline_name:
            continue
        for execution in store.get_executions_by_context(context.id):
            events = store.get_events_by_execution_ids([execution.id])
            output_ids = {e.artifact_id: e for e in events if e.type in _OUTPUT_EVENTS}
            artifacts = store.get_artifacts_by_id(list(output_ids)) if output_ids else []
            outputs: dict[str, list] = {}
            for artifact in artifacts:
                key = output_ids[artifact.id].path.steps[0].key
                outputs.setdefault(key, []).append(artifact)
            state = metadata_store_pb2.Execution.State.Name(execution.last_known_state)
            result.append(NodeExecution(node_id, execution.id, state, outputs))
    return sorted(result, key=lambda e: e.execution_id)


def latest_executions(store: metadata_store.MetadataStore, pipeline_name: str) -> dict[str, NodeExecution]:
    """The most recent execution of each node."""
    return {execution.node_id: execution for execution in node_executions(store, pipeline_name)}


def property_value(artifact: metadata_store_pb2.Artifact, name: str):
    """A custom property of an artifact as a plain Python value (TFX JSON values come back as dict/list)."""
    value = artifact.custom_properties[name]
    kind = value.WhichOneof("value")
    if kind == "struct_value":
        as_dict = json_format.MessageToDict(value.struct_value)
        return as_dict.get(_TFX_JSON_KEY, as_dict)
    return getattr(value, kind)
