"""StudentExport: the EnsembleModel as one serving graph (refit towers A..F feeding the head)."""

from __future__ import annotations

from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import channel, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.head_examples.executor import towers_key
from components.student_export import executor
from trainer.students import TOP_K, TOWERS


class StudentExportSpec(ComponentSpec):
    PARAMETERS = {"num_towers": ExecutionParameter(type=int), "top_k": ExecutionParameter(type=int)}
    INPUTS = {
        "head": ChannelParameter(type=standard_artifacts.Model),
        "transform_graph": ChannelParameter(type=standard_artifacts.TransformGraph),
        **{
            towers_key(t): ChannelParameter(type=standard_artifacts.Model, optional=True)
            for t in range(len(TOWERS))
        },
    }
    OUTPUTS = {"model": ChannelParameter(type=standard_artifacts.Model)}


class StudentExport(base_component.BaseComponent):
    """Loads the refit towers (in the head's tower order) and the head, and exports one SavedModel that
    applies the Transform graph to the parsed records, then the models: `serving_default` (serialized
    video-level records -> video_id, top-k class_indexes and predictions) and `scores` (all class
    probabilities). BatchNorm runs in inference mode. Records parameter_count and size_bytes."""

    SPEC_CLASS = StudentExportSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(
        self,
        towers: list[channel.BaseChannel],
        head: channel.BaseChannel,
        transform_graph: channel.BaseChannel,
        top_k: int = TOP_K,
    ) -> None:
        if not 1 <= len(towers) <= len(TOWERS):
            raise ValueError(f"StudentExport takes 1..{len(TOWERS)} towers, got {len(towers)}")
        super().__init__(
            spec=StudentExportSpec(
                head=head,
                transform_graph=transform_graph,
                num_towers=len(towers),
                top_k=top_k,
                model=channel.Channel(type=standard_artifacts.Model),
                **{towers_key(t): ch for t, ch in enumerate(towers)},
            )
        )
