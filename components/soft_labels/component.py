"""SoftLabels: the student's targets, from the L2 out-of-fold scores, one record per training video (Beam)."""

from __future__ import annotations

from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.types import channel, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.artifacts import CandidateScores, SoftLabelIndex
from components.soft_labels import executor


class SoftLabelsSpec(ComponentSpec):
    PARAMETERS = {"shard_mb": ExecutionParameter(type=float)}
    INPUTS = {
        "scores": ChannelParameter(type=CandidateScores),
        "examples": ChannelParameter(type=standard_artifacts.Examples),
    }
    OUTPUTS = {
        "soft_labels": ChannelParameter(type=SoftLabelIndex),
        "student_examples": ChannelParameter(type=standard_artifacts.Examples),
    }


class SoftLabels(base_beam_component.BaseBeamComponent):
    """Groups the L2 OOF probabilities by video (trainer.soft_labels formats) and fails unless every labelled
    fold video of `examples` has them. Outputs the soft-label index and `student_examples`: the video-level
    fold splits with soft labels added (the students' training data), holdout and test unchanged.
    `shard_mb`: join in hash shards of about that many MB of input (components.sharded_join); 0 = one join."""

    SPEC_CLASS = SoftLabelsSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    def __init__(
        self, scores: channel.BaseChannel, examples: channel.BaseChannel, shard_mb: float = 0.0
    ) -> None:
        super().__init__(
            spec=SoftLabelsSpec(
                scores=scores,
                examples=examples,
                shard_mb=shard_mb,
                soft_labels=channel.Channel(type=SoftLabelIndex),
                student_examples=channel.Channel(type=standard_artifacts.Examples),
            )
        )
