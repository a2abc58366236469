"""Static HTML report of the latest run from ML Metadata alone: GAPs (each with its split and interval), fold
spread, timings, data, lineage."""

from __future__ import annotations

import base64
import html
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from components.student_evaluator.executor import L1, STACK, STACK_ROLE, is_student, role_rank
from pipeline import lineage
from pipeline.metadata import (
    NodeExecution,
    latest_run_id,
    node_ids,
    open_store,
    property_value,
    run_executions,
)

STACK_NODE, STACK_OUTPUT = "L2LightGBM", "metrics"
EVALUATOR_NODE, EVALUATOR_OUTPUT = "StudentEvaluator", "evaluation"
FOLD_SPLIT_NODES = ("VideoFoldSplit", "FrameFoldSplit")
STUDENT_METRICS = (("hit_at_1", "Hit@1"), ("perr", "PERR"), ("map", "MAP"))
_KIND_COLORS = {L1: "#4c72b0", "L1 mean": "#8172b2", STACK_ROLE: "#dd8452", "EnsembleModel": "#c44e52"}
_TOWER_COLOR = "#55a868"
_STATE_COLORS = {"COMPLETE": "#4c72b0", "CACHED": "#a0a0a0", "FAILED": "#c44e52"}
_STYLE = """
body { font-family: Helvetica, Arial, sans-serif; margin: 2em; color: #222; max-width: 1100px; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 3px 10px; text-align: left; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; font-size: 11px; }
.note { color: #666; }
"""


def pipeline_name_in(store: metadata_store.MetadataStore) -> str:
    """The one pipeline recorded in the store (several: the caller has to name one)."""
    names = sorted(context.name for context in store.get_contexts_by_type("pipeline"))
    if len(names) != 1:
        found = ", ".join(names) or "none"
        raise lineage.LineageError(f"expected one pipeline in ML Metadata, found {found}: pass --config")
    return names[0]


def _output(executions: dict[str, NodeExecution], node: str, key: str) -> metadata_store_pb2.Artifact | None:
    execution = executions.get(node)
    artifacts = execution.outputs.get(key) if execution else None
    return artifacts[0] if artifacts else None


def _optional_property(artifact: metadata_store_pb2.Artifact | None, name: str) -> Any:
    if artifact is None or name not in artifact.custom_properties:
        return None
    return property_value(artifact, name)


def _properties(artifact: metadata_store_pb2.Artifact | None) -> dict[str, Any] | None:
    """Every custom property of an artifact as plain Python values (None without the artifact)."""
    if artifact is None:
        return None
    return {name: property_value(artifact, name) for name in artifact.custom_properties}


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return f'<img alt="chart" src="data:image/png;base64,{encoded}">'


def _table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f'<td class="number">{value:.4f}</td>'
        if isinstance(value, int):
            return f'<td class="number">{value}</td>'
        return f"<td>{html.escape(str(value))}</td>"

    head = "".join(f"<th>{html.escape(name)}</th>" for name in header)
    body = "".join("<tr>" + "".join(cell(value) for value in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _interval_text(interval: list[float] | None) -> str:
    return f"[{interval[0]:.4f}, {interval[1]:.4f}]" if interval else "n/a"


def model_rows(evaluation: dict[str, Any] | None, stack_metrics: dict[str, Any] | None) -> list[list[Any]]:
    """[name, kind, holdout GAP, 95% interval or None] once per model, in kind order then by GAP: from the
    StudentEvaluator's evaluation when there is one, else the L1 models and the stack from L2LightGBM."""
    if evaluation:
        roles, holdout = evaluation["roles"], evaluation["holdout"]
        rows = [[name, roles[name], m["gap"], m.get("gap_interval")] for name, m in holdout.items()]
    elif stack_metrics and "holdout_gap" in stack_metrics:
        rows = [[name, L1, gap, None] for name, gap in stack_metrics["l1_holdout_gap"].items()]
        rows.append([STACK, STACK_ROLE, stack_metrics["holdout_gap"], None])
    else:
        return []
    return sorted(rows, key=lambda row: (role_rank(row[1]), -row[2]))


def zoomed_limits(values: list[float]) -> tuple[float, float]:
    """An axis range around `values` (GAPs and interval ends) with a margin, within [0, 1]."""
    low, high = min(values), max(values)
    margin = max(0.1 * (high - low), 0.005)
    return max(0.0, low - margin), min(1.0, high + margin)


def _split_note(evaluation: dict[str, Any] | None) -> str:
    if not evaluation:
        return '<p class="note">Split: holdout (L2LightGBM; the students have not run, so no intervals).</p>'
    bootstrap = evaluation.get("bootstrap") or {}
    interval = (
        f"95% intervals: paired bootstrap over the holdout videos ({bootstrap['resamples']} resamples, seed "
        f"{bootstrap['seed']})."
        if bootstrap
        else "No intervals recorded by this run."
    )
    split, videos = evaluation.get("split", "holdout"), evaluation["holdout_videos"]
    return f'<p class="note">Split: {split} ({videos} videos; the gate\'s split). {interval}</p>'


def _gap_section(stack_metrics: dict[str, Any] | None, evaluation: dict[str, Any] | None) -> str:
    from matplotlib.figure import Figure

    rows = model_rows(evaluation, stack_metrics)
    if not rows:
        return f'<p class="note">No {STACK_NODE} metrics in ML Metadata (has the L2 stage run?).</p>'
    figure = Figure(figsize=(8, 0.35 * len(rows) + 1))
    axes = figure.add_subplot()
    for index, (_, kind, gap, interval) in enumerate(rows):
        low, high = interval or (gap, gap)
        color = _KIND_COLORS.get(kind, _TOWER_COLOR)
        axes.errorbar(gap, index, xerr=[[gap - low], [high - gap]], fmt="o", color=color, capsize=3)
        axes.text(high, index, f"  {gap:.4f}", va="center", fontsize=8)
    axes.set_yticks(range(len(rows)), [f"{name} ({kind})" for name, kind, _, _ in rows], fontsize=8)
    axes.set_ylim(len(rows) - 0.5, -0.5)
    ends = [value for *_, gap, interval in rows for value in (interval or [gap])]
    low, high = zoomed_limits([*ends, *(gap for _, _, gap, _ in rows)])
    axes.set_xlim(low, high + 0.15 * (high - low))  # room for the value labels
    axes.set_xlabel("holdout GAP@20 (95% paired-bootstrap interval)")
    axes.grid(axis="x", alpha=0.3)
    table = _table(
        ["model", "kind", "holdout GAP@20", "holdout 95% interval"],
        [[name, kind, gap, _interval_text(interval)] for name, kind, gap, interval in rows],
    )
    differences = (evaluation or {}).get("differences") or {}
    if differences:
        table += _table(
            ["paired difference (holdout)", "value", "95% interval"],
            [[label, d["value"], _interval_text(d["interval"])] for label, d in differences.items()],
        )
    return _split_note(evaluation) + _png(figure) + table


def _student_section(evaluation: dict[str, Any] | None) -> str:
    if not evaluation:
        return f'<p class="note">No {EVALUATOR_NODE} evaluation in ML Metadata (students not run).</p>'
    roles, holdout = evaluation["roles"], evaluation["holdout"]
    students = sorted(
        (name for name in holdout if is_student(roles[name])),
        key=lambda name: (role_rank(roles[name]), -holdout[name]["gap"]),
    )
    rows = [
        [
            name,
            roles[name],
            holdout[name]["gap"],
            _interval_text(holdout[name].get("gap_interval")),
            *(holdout[name][metric] for metric, _ in STUDENT_METRICS),
        ]
        for name in students
    ]
    verdict = "blessed" if evaluation.get("blessed") else "not blessed"
    header = ["model", "kind", "holdout GAP@20", "holdout 95% interval"]
    gate = (
        f"<p>Gate on the holdout split ({evaluation['holdout_videos']} videos): <b>{verdict}</b> "
        f"({html.escape(str(evaluation.get('reason', '')))}).</p>"
    )
    return gate + _table([*header, *(f"holdout {label}" for _, label in STUDENT_METRICS)], rows)


def _fold_section(stack_metrics) -> str:
    from matplotlib.figure import Figure

    fold_gap = _optional_property(stack_metrics, "fold_gap")
    if not fold_gap:
        return '<p class="note">No per-fold GAP in ML Metadata.</p>'
    folds = sorted(fold_gap, key=int)
    figure = Figure(figsize=(6, 3))
    axes = figure.add_subplot()
    axes.plot([f"fold {fold}" for fold in folds], [fold_gap[fold] for fold in folds], "o", color="#dd8452")
    oof_gap = _optional_property(stack_metrics, "oof_gap")
    if oof_gap is not None:
        axes.axhline(oof_gap, color="#333", linestyle="--", label=f"all OOF {oof_gap:.4f}")
        axes.legend(loc="lower right")
    axes.set_ylabel("stack out-of-fold GAP@20")
    values = list(fold_gap.values()) + ([oof_gap] if oof_gap is not None else [])
    axes.set_ylim(*zoomed_limits(values))
    rows = [[f"fold {fold}", fold_gap[fold]] for fold in folds]
    note = (
        '<p class="note">Split: each training fold\'s videos, scored by the stack trained on the other '
        "folds. L1 models: ML Metadata holds their holdout GAP only (per-fold L1 GAPs are not "
        "recorded), shown above.</p>"
    )
    return _png(figure) + _table(["fold", "stack out-of-fold GAP@20"], rows) + note


def _timeline_section(executions: dict[str, NodeExecution]) -> str:
    from matplotlib.figure import Figure

    nodes = sorted(executions.values(), key=lambda n: (n.created_ms, n.execution_id))
    start = nodes[0].created_ms
    figure = Figure(figsize=(9, 0.2 * len(nodes) + 1))
    axes = figure.add_subplot()
    for index, node in enumerate(nodes):
        color = _STATE_COLORS.get(node.state, "#8172b2")
        axes.barh(index, max(node.seconds, 0.1), left=(node.created_ms - start) / 1000, color=color)
    axes.set_yticks(range(len(nodes)), [node.node_id for node in nodes], fontsize=7)
    axes.set_ylim(len(nodes) - 0.5, -0.5)
    axes.set_xlabel("seconds since the first node started")
    rows = [[n.node_id, n.state, lineage.format_time(n.created_ms), n.seconds] for n in nodes]
    wall = (max(n.updated_ms for n in nodes) - start) / 1000
    summary = f"<p>{len(nodes)} nodes, {wall:.0f} s from the first start to the last update.</p>"
    return summary + _png(figure) + _table(["node", "state", "started (UTC)", "seconds"], rows)


def _counts_section(executions: dict[str, NodeExecution]) -> str:
    parts = []
    for node in FOLD_SPLIT_NODES:
        counts = _optional_property(_output(executions, node, "split_examples"), "split_counts")
        if counts:
            rows = [[split, int(count)] for split, count in counts.items()]
            parts.append(f"<h3>{node}</h3>" + _table(["split", "videos"], rows))
    return "".join(parts) or '<p class="note">No fold split in ML Metadata.</p>'


def _not_run_note(not_run: list[str]) -> str:
    if not not_run:
        return ""
    names = ", ".join(html.escape(name) for name in not_run)
    return (
        f'<p class="note">Not run in this run (skipped, e.g. an unblessed model\'s Pusher and '
        f"BatchInference, or no longer in the pipeline): {names}. Nothing below comes from earlier "
        "runs.</p>\n"
    )


def _lineage_section(
    store: metadata_store.MetadataStore, executions: dict[str, NodeExecution], stack_metrics
) -> str:
    pushed = _output(executions, "Pusher", "pushed_model")
    if pushed is not None:
        root_id = pushed.id
    elif stack_metrics is not None:
        root_id = stack_metrics.id
    else:
        return '<p class="note">Nothing to trace yet.</p>'
    traced = lineage.trace(store, root_id)
    title = f"<p>From artifact {root_id} ({traced.artifacts[root_id].type_name}) back to the input files.</p>"
    if lineage.graphviz_available():
        return title + lineage.render_dot(lineage.to_dot(traced), "svg").decode()
    return title + f"<pre>{html.escape(lineage.text_tree(traced))}</pre>"


def build_report(metadata_file: str, pipeline_name: str | None = None) -> str:
    """The report of the latest run of `pipeline_name` (its own executions, cached ones included) as one
    self-contained HTML page."""
    store = open_store(metadata_file)
    pipeline_name = pipeline_name or pipeline_name_in(store)
    run_id = latest_run_id(store, pipeline_name)
    executions = run_executions(store, pipeline_name, run_id)
    if not executions:
        raise lineage.LineageError(f"no executions of pipeline {pipeline_name} in {metadata_file}")
    not_run = sorted(node_ids(store, pipeline_name) - set(executions))
    stack_metrics = _output(executions, STACK_NODE, STACK_OUTPUT)
    evaluation = _properties(_output(executions, EVALUATOR_NODE, EVALUATOR_OUTPUT))
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
    sections = [
        ("Holdout GAP@20 of every model", _gap_section(_properties(stack_metrics), evaluation)),
        ("Students (holdout)", _student_section(evaluation)),
        ("Per-fold spread", _fold_section(stack_metrics)),
        ("Component durations", _timeline_section(executions)),
        ("Dataset counts", _counts_section(executions)),
        ("Lineage", _lineage_section(store, executions, stack_metrics)),
    ]
    body = "".join(f"<h2>{html.escape(title)}</h2>\n{content}\n" for title, content in sections)
    title = f"yt8m-tfx run report: {html.escape(pipeline_name)}"
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{_STYLE}</style></head><body><h1>{title}</h1>"
        f'<p class="note">Run {html.escape(run_id or "")}; ML Metadata {html.escape(metadata_file)}; '
        f"generated {generated} UTC.</p>\n{_not_run_note(not_run)}"
        f"{body}</body></html>\n"
    )


def write_report(metadata_file: str, out: str | Path, pipeline_name: str | None = None) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(build_report(metadata_file, pipeline_name))
    return out
