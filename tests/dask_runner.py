"""Beam 2.77's DaskRunner with the three defects that stop it from running this project's stages fixed (see
README "Runner portability"); pass `--runner=tests.dask_runner.DaskRunner`. Test support, not a production
runner: the pipeline's Beam stages run on Dataflow.

Defects of apache_beam/runners/dask (2.77) fixed here:
- dask_runner.py:251 computes only the last translated transform, so every other sink of a pipeline with
  more than one (each split's WriteToTFRecord, the count and summary side files) never runs;
- transform_evaluator.py:198 collects a bundle's outputs before `finish_bundle`, so what a DoFn emits there
  is lost (BatchElements' last batch of every partition, a file sink's written-file results);
- the outputs of a multi-output ParDo are not told apart: every consumer of any tag (beam.Partition's
  parts) gets every element of every tag.
"""

from __future__ import annotations

import uuid
from typing import Any

import dask.bag as db
import dask.distributed as ddist
from apache_beam import DoFn, pvalue
from apache_beam.pipeline import AppliedPTransform, PipelineVisitor
from apache_beam.runners.common import DoFnContext, DoFnInvoker, DoFnSignature, _OutputHandler
from apache_beam.runners.dask import dask_runner, transform_evaluator
from apache_beam.transforms.sideinputs import SideInputMap
from apache_beam.transforms.window import WindowFn
from apache_beam.utils.windowed_value import WindowedValue
from dask._task_spec import List, Task, TaskRef
from dask.highlevelgraph import HighLevelGraph


def _run_bundle(
    items, fn: DoFn, label: str, window_fn: WindowFn | None, side_views: list, side_parts: list, args, kwargs
) -> list:
    """One Dask partition as one Beam bundle: main outputs as values, tagged ones as TaggedOutput(tag, value),
    including what `finish_bundle` emits. Receivers are made per bundle, never shared between partitions."""
    side_inputs = [
        SideInputMap(
            view_type,
            view_options,
            [transform_evaluator.get_windowed_value(value, mapping_fn) for value in values],
        )
        for (view_type, view_options, mapping_fn), parts in zip(side_views, side_parts, strict=True)
        for values in [[value for part in parts for value in part]]
    ] or None
    receivers = transform_evaluator.OneReceiver()
    invoker = DoFnInvoker.create_invoker(
        DoFnSignature(fn),
        _OutputHandler(
            window_fn=window_fn,
            main_receivers=receivers[None],
            tagged_receivers=receivers,
            per_element_output_counter=None,
            output_batch_converter=None,
            process_yields_batches=False,
            process_batch_yields_elements=False,
        ),
        context=DoFnContext(label, state=None),
        side_inputs=side_inputs,
        input_args=args,
        input_kwargs=kwargs,
        user_state_context=None,
        bundle_finalizer_param=DoFn.BundleFinalizerParam(),
    )
    invoker.invoke_setup()
    invoker.invoke_start_bundle()
    for item in items:
        invoker.invoke_process(item)
    invoker.invoke_finish_bundle()
    invoker.invoke_teardown()
    return [_unwindowed(output) for output in receivers.values]


def _unwindowed(output: Any) -> Any:
    if isinstance(output, pvalue.TaggedOutput):
        return pvalue.TaggedOutput(output.tag, _unwindowed(output.value))
    return output.value if isinstance(output, WindowedValue) else output


class _ParDo(transform_evaluator.ParDo):
    def apply(self, input_bag: db.Bag, side_inputs=None) -> db.Bag:
        """`side_inputs`: (view type, view options, window mapping fn, bag) per side input. Each side input's
        partitions are the bundle tasks' own dependencies (Beam's iterates the bag inside every task, running
        its stages again; dask.delayed would compute a renamed copy of it per consumer)."""
        transform = self.transform
        args, kwargs = transform.raw_side_inputs
        main_input = next(iter(self.applied.main_inputs.values()))
        window_fn = main_input.windowing.windowfn if hasattr(main_input, "windowing") else None
        windowed = input_bag.map(transform_evaluator.get_windowed_value, window_fn)
        side_inputs = side_inputs or []
        side_views = [side[:3] for side in side_inputs]
        side_parts = List(*(List(*map(TaskRef, side[3].__dask_keys__())) for side in side_inputs))
        name = f"{transform.label}-{uuid.uuid4().hex}"
        tasks = {
            (name, n): Task(
                (name, n),
                _run_bundle,
                TaskRef((windowed.name, n)),
                transform.fn,
                transform.label,
                window_fn,
                side_views,
                side_parts,
                list(args),
                kwargs,
            )
            for n in range(windowed.npartitions)
        }
        dependencies = [windowed, *(side[3] for side in side_inputs)]
        graph = HighLevelGraph.from_collections(name, tasks, dependencies=dependencies)
        return db.Bag(graph, name, windowed.npartitions)


_TRANSLATIONS = {
    source: (_ParDo if op is transform_evaluator.ParDo else op)
    for source, op in transform_evaluator.TRANSLATIONS.items()
}


def _is_tag(tag):
    return lambda output: isinstance(output, pvalue.TaggedOutput) and output.tag == tag


def _is_main(output) -> bool:
    return not isinstance(output, pvalue.TaggedOutput)


def _tag_value(output: pvalue.TaggedOutput) -> Any:
    return output.value


class _Visitor(PipelineVisitor):
    """Translates every primitive transform into a bag (as Beam's visitor does), selecting each consumed
    PCollection's own tag from its producer's outputs, and records which transforms nothing consumes."""

    def __init__(self, bag_kwargs: dict) -> None:
        self.bag_kwargs = bag_kwargs
        self.bags: dict[AppliedPTransform, db.Bag] = {}
        self.consumed: set[AppliedPTransform] = set()

    def _bag_of(self, pcoll: pvalue.PValue) -> db.Bag | None:
        producer = pcoll.producer
        bag = self.bags.get(producer)
        if bag is None:
            return None
        self.consumed.add(producer)
        tags = [tag for tag, output in producer.outputs.items() if output is pcoll]
        if len(producer.outputs) < 2 or not tags:
            return bag
        if tags[0] is None:
            return bag.filter(_is_main)
        return bag.filter(_is_tag(tags[0])).map(_tag_value)

    def visit_transform(self, transform_node: AppliedPTransform) -> None:
        op_class = _TRANSLATIONS.get(transform_node.transform.__class__, transform_evaluator.NoOp)
        op = op_class(transform_node, bag_kwargs=self.bag_kwargs)
        kwargs: dict[str, Any] = {"input_bag": None, "side_inputs": None}
        inputs = [value for value in transform_node.inputs if not isinstance(value, pvalue.PBegin)]
        if inputs:
            bags = [bag for bag in (self._bag_of(value) for value in inputs) if bag is not None]
            single = len(bags) == 1 and not isinstance(op, transform_evaluator.Flatten)
            kwargs["input_bag"] = bags[0] if single else bags
        if transform_node.side_inputs:
            kwargs["side_inputs"] = [
                (type(side), side._view_options(), side._window_mapping_fn, self._bag_of(side.pvalue))
                for side in transform_node.side_inputs
            ]
        self.bags[transform_node] = op.apply(**kwargs)


class _Result(dask_runner.DaskRunnerResult):
    def wait_until_finish(self, duration=None) -> str:
        """Waits for every sink, then closes the run's client (Beam's leaves one open per pipeline)."""
        try:
            return super().wait_until_finish(duration)
        finally:
            self.client.close()


class DaskRunner(dask_runner.DaskRunner):
    """Runs every sink of the pipeline on a dask.distributed cluster (`--dask_client_address`)."""

    def run_pipeline(self, pipeline, options):
        dask_options = options.view_as(dask_runner.DaskOptions).get_all_options(
            drop_default=True, current_only=True
        )
        bag_kwargs = dask_runner.DaskOptions._extract_bag_kwargs(dask_options)
        client = ddist.Client(**dask_options)
        pipeline.replace_all(dask_runner.dask_overrides())
        visitor = _Visitor(bag_kwargs)
        pipeline.visit(visitor)
        sinks = [
            bag for node, bag in visitor.bags.items() if node not in visitor.consumed and bag is not None
        ]
        futures = client.compute(sinks, optimize_graph=False)
        return _Result(client, futures)
