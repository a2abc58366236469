"""HeadExamples: the EnsembleModel head's training data, the towers' OOF outputs joined by id (Beam)."""

from __future__ import annotations

from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.types import channel, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.artifacts import Predictions
from components.head_examples import executor
from components.head_examples.executor import towers_key
from trainer.students import TOWERS


class HeadExamplesSpec(ComponentSpec):
    PARAMETERS = {"num_towers": ExecutionParameter(type=int), "shard_mb": ExecutionParameter(type=float)}
    INPUTS = {
        "examples": ChannelParameter(type=standard_artifacts.Examples),
        **{towers_key(t): ChannelParameter(type=Predictions, optional=True) for t in range(len(TOWERS))},
    }
    OUTPUTS = {"head_examples": ChannelParameter(type=standard_artifacts.Examples)}


class HeadExamples(base_beam_component.BaseBeamComponent):
    """Adds `tower_outputs` (every tower's scores, concatenated in the order of `towers`) to each student
    record: for a fold_k video the prediction of the tower model that did not see fold k (the assembled
    `oof` split), for holdout and test the fold average. Missing, duplicated or wrong-fold predictions
    fail. `shard_mb`: join in hash shards of about that many MB of input (components.sharded_join)."""

    SPEC_CLASS = HeadExamplesSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    def __init__(
        self, examples: channel.BaseChannel, towers: list[channel.BaseChannel], shard_mb: float = 0.0
    ) -> None:
        if not 1 <= len(towers) <= len(TOWERS):
            raise ValueError(f"HeadExamples takes 1..{len(TOWERS)} tower predictions, got {len(towers)}")
        super().__init__(
            spec=HeadExamplesSpec(
                examples=examples,
                num_towers=len(towers),
                shard_mb=shard_mb,
                head_examples=channel.Channel(type=standard_artifacts.Examples),
                **{towers_key(t): ch for t, ch in enumerate(towers)},
            )
        )
