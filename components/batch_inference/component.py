"""BatchInference: the Kaggle submission CSV (`VideoId,LabelConfidencePairs`) of the pushed model."""

from __future__ import annotations

from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import channel, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.artifacts import Submission
from components.batch_inference import executor
from trainer.students import TOP_K


class BatchInferenceSpec(ComponentSpec):
    PARAMETERS = {"top_k": ExecutionParameter(type=int)}
    INPUTS = {
        "pushed_model": ChannelParameter(type=standard_artifacts.PushedModel),
        "examples": ChannelParameter(type=standard_artifacts.Examples),
    }
    OUTPUTS = {"submission": ChannelParameter(type=Submission)}


class BatchInference(base_component.BaseComponent):
    """Runs the pushed SavedModel's serving signature over the `test` split of `examples`, batch by batch,
    and writes `submission.csv` with the top-k `class score` pairs of every video."""

    SPEC_CLASS = BatchInferenceSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(
        self, pushed_model: channel.BaseChannel, examples: channel.BaseChannel, top_k: int = TOP_K
    ) -> None:
        super().__init__(
            spec=BatchInferenceSpec(
                pushed_model=pushed_model,
                examples=examples,
                top_k=top_k,
                submission=channel.Channel(type=Submission),
            )
        )
