"""Small read-only queries on the pipeline's ML Metadata store (sqlite), and the failure of a run recorded."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

from google.protobuf import json_format
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

_TFX_JSON_KEY = "__value__"
_OUTPUT_EVENTS = (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)
_INPUT_EVENTS = (metadata_store_pb2.Event.INPUT, metadata_store_pb2.Event.DECLARED_INPUT)


ERROR_PROPERTY = "error"  # custom property of a FAILED execution: the error that stopped its run
_UNFINISHED = (metadata_store_pb2.Execution.NEW, metadata_store_pb2.Execution.RUNNING)


def open_store(sqlite_path: str, writable: bool = False) -> metadata_store.MetadataStore:
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = sqlite_path
    modes = metadata_store_pb2.SqliteMetadataSourceConfig
    config.sqlite.connection_mode = modes.READWRITE if writable else modes.READONLY
    return metadata_store.MetadataStore(config)


@dataclass(frozen=True)
class NodeExecution:
    """One execution of a pipeline node, the artifacts it read and those it published, by key."""

    node_id: str
    execution_id: int
    state: str
    outputs: dict[str, list[metadata_store_pb2.Artifact]]
    inputs: dict[str, list[metadata_store_pb2.Artifact]]
    created_ms: int  # registration, milliseconds since the epoch
    updated_ms: int  # last update: publication, for a finished execution

    @property
    def seconds(self) -> float:
        return (self.updated_ms - self.created_ms) / 1000


def _artifacts_by_key(store: metadata_store.MetadataStore, events: list) -> dict[str, list]:
    """The artifacts of `events`, grouped by the input/output key each event names."""
    event_of = {event.artifact_id: event for event in events}
    by_key: dict[str, list] = {}
    for artifact in store.get_artifacts_by_id(list(event_of)) if event_of else []:
        by_key.setdefault(event_of[artifact.id].path.steps[0].key, []).append(artifact)
    return by_key


def _node_contexts(store: metadata_store.MetadataStore, pipeline_name: str) -> dict[str, int]:
    """Node id -> context id of every node of the pipeline that any run in the store executed."""
    found = {}
    for context in store.get_contexts_by_type("node"):
        pipeline, _, node_id = context.name.partition(".")
        if pipeline == pipeline_name:
            found[node_id] = context.id
    return found


def node_executions(
    store: metadata_store.MetadataStore, pipeline_name: str, execution_ids: set[int] | None = None
) -> list[NodeExecution]:
    """Every execution of every node of the pipeline (only those in `execution_ids` when given), oldest
    first, with its input and output artifacts."""
    result = []
    for node_id, context_id in _node_contexts(store, pipeline_name).items():
        for execution in store.get_executions_by_context(context_id):
            if execution_ids is not None and execution.id not in execution_ids:
                continue
            events = store.get_events_by_execution_ids([execution.id])
            state = metadata_store_pb2.Execution.State.Name(execution.last_known_state)
            outputs = _artifacts_by_key(store, [e for e in events if e.type in _OUTPUT_EVENTS])
            inputs = _artifacts_by_key(store, [e for e in events if e.type in _INPUT_EVENTS])
            times = execution.create_time_since_epoch, execution.last_update_time_since_epoch
            result.append(NodeExecution(node_id, execution.id, state, outputs, inputs, *times))
    return sorted(result, key=lambda e: e.execution_id)


def latest_executions(store: metadata_store.MetadataStore, pipeline_name: str) -> dict[str, NodeExecution]:
    """The most recent execution of each node."""
    return {execution.node_id: execution for execution in node_executions(store, pipeline_name)}


def latest_run_id(store: metadata_store.MetadataStore, pipeline_name: str) -> str | None:
    """The run (pipeline_run context) of the pipeline's newest execution, or None before any."""
    newest = max(
        (
            execution.id
            for context_id in _node_contexts(store, pipeline_name).values()
            for execution in store.get_executions_by_context(context_id)
        ),
        default=None,
    )
    if newest is None:
        return None
    contexts = store.get_contexts_by_execution(newest)
    types = {t.id: t.name for t in store.get_context_types_by_id([c.type_id for c in contexts])}
    return next((c.name for c in contexts if types[c.type_id] == "pipeline_run"), None)


def run_executions(
    store: metadata_store.MetadataStore, pipeline_name: str, run_id: str | None = None
) -> dict[str, NodeExecution]:
    """The executions of one run (its pipeline_run context; default: the latest run), by node: a node
    served from the cache has its CACHED execution there, a node the run skipped has none."""
    run_id = run_id or latest_run_id(store, pipeline_name)
    context = store.get_context_by_type_and_name("pipeline_run", run_id) if run_id else None
    if context is None:
        return {}
    ids = {execution.id for execution in store.get_executions_by_context(context.id)}
    return {e.node_id: e for e in node_executions(store, pipeline_name, ids)}


def node_ids(store: metadata_store.MetadataStore, pipeline_name: str) -> set[str]:
    """Every node of the pipeline that any run in the store executed."""
    return set(_node_contexts(store, pipeline_name))


def property_value(artifact: metadata_store_pb2.Artifact, name: str):
    """A custom property of an artifact as a plain Python value (TFX JSON values come back as dict/list)."""
    value = artifact.custom_properties[name]
    kind = value.WhichOneof("value")
    if kind == "struct_value":
        as_dict = json_format.MessageToDict(value.struct_value)
        return as_dict.get(_TFX_JSON_KEY, as_dict)
    return getattr(value, kind)


def _newest_execution_id(sqlite_path: str) -> int:
    if not os.path.exists(sqlite_path):
        return 0
    return max((execution.id for execution in open_store(sqlite_path).get_executions()), default=0)


def _error_line(error: BaseException) -> str:
    """`Type: first line of the message` of the error a node raised (not Beam's copy naming its step)."""
    import tensorflow as tf

    from trainer.file_errors import file_error_message

    while getattr(error, "_tagged_with_step", False) and error.__context__ is not None:
        error = error.__context__  # what Beam re-raises for an error raised in a transform
    text = file_error_message(error) if isinstance(error, tf.errors.OpError) else str(error)
    lines = text.strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


@contextlib.contextmanager
def failures_recorded(sqlite_path: str, pipeline_name: str) -> Iterator[None]:
    """Run a pipeline inside. If it raises, the pipeline's executions it started and left NEW or RUNNING are
    marked FAILED, and they and the FAILED ones get the error in their `error` custom property. (TFX marks
    FAILED, with no message, only a node whose executor raised an Exception: after Ctrl-C or an error outside
    an executor, the node stayed RUNNING.)"""
    newest = _newest_execution_id(sqlite_path)
    try:
        yield
    except BaseException as error:
        if os.path.exists(sqlite_path):
            _record_failure(open_store(sqlite_path, writable=True), pipeline_name, newest, _error_line(error))
        raise


def _record_failure(
    store: metadata_store.MetadataStore, pipeline_name: str, after_id: int, error: str
) -> None:
    failed = [
        execution
        for context_id in _node_contexts(store, pipeline_name).values()
        for execution in store.get_executions_by_context(context_id)
        if execution.id > after_id
        and execution.last_known_state in (*_UNFINISHED, metadata_store_pb2.Execution.FAILED)
        and ERROR_PROPERTY not in execution.custom_properties
    ]
    for execution in failed:
        execution.last_known_state = metadata_store_pb2.Execution.FAILED
        execution.custom_properties[ERROR_PROPERTY].string_value = error
    if failed:
        store.put_executions(failed)
