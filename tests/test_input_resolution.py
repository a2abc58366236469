"""The one-query input resolution returns exactly what TFX's per-context listing and intersection returns."""

from __future__ import annotations

import pytest

from pipeline import input_resolution
from pipeline.metadata import open_store


def _reference(store, contexts) -> set[int]:
    """TFX 1.21's algorithm: list each context's executions, intersect the ids."""
    ids = None
    for context in contexts:
        found = {execution.id for execution in store.get_executions_by_context(context.id)}
        ids = found if ids is None else ids & found
    return ids or set()


def test_filter_query_matches_listing_and_intersection(tiny_run):
    store = open_store(tiny_run.metadata_path)
    (pipeline,) = store.get_contexts_by_type("pipeline")
    runs = store.get_contexts_by_type("pipeline_run")
    nodes = store.get_contexts_by_type("node")
    assert len(nodes) > 30 and runs
    for node in nodes:
        for contexts in ([pipeline, node], [pipeline, runs[0], node], [node]):
            got = [e.id for e in input_resolution.executions_in_all_contexts(store, contexts)]
            assert len(got) == len(set(got))
            assert set(got) == _reference(store, contexts), (node.name, [c.name for c in contexts])
    assert input_resolution.executions_in_all_contexts(store, []) == []
    with pytest.raises(ValueError, match="at most 26 contexts"):
        input_resolution.executions_in_all_contexts(store, [pipeline] * 27)


def test_install_replaces_the_resolver_function():
    from tfx.orchestration.portable.input_resolution import channel_resolver

    input_resolution.install()
    assert channel_resolver._get_executions_by_all_contexts is input_resolution.executions_in_all_contexts
