"""L1Assemble: fold predictions of one L1 config -> full OOF + fold-averaged holdout/test (Beam)."""

from __future__ import annotations

from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.types import channel, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.artifacts import Predictions
from components.l1_assemble import executor

MAX_FOLDS = 10


def predictions_key(fold: int) -> str:
    return f"predictions_{fold}"


class L1AssembleSpec(ComponentSpec):
    PARAMETERS = {
        "num_folds": ExecutionParameter(type=int),
        "config_name": ExecutionParameter(type=str),
        "shard_mb": ExecutionParameter(type=float),
    }
    INPUTS = {
        "examples": ChannelParameter(type=standard_artifacts.Examples),
        **{predictions_key(k): ChannelParameter(type=Predictions, optional=True) for k in range(MAX_FOLDS)},
    }
    OUTPUTS = {"predictions": ChannelParameter(type=Predictions)}


class L1Assemble(base_beam_component.BaseBeamComponent):
    """Joins by video id: every fold video gets exactly one OOF prediction (from the model of its own fold),
    and every holdout/test video one prediction per fold model, averaged. Missing or duplicated ids fail.
    `shard_mb`: join in hash shards of about that many MB of input (components.sharded_join); 0 = one join."""

    SPEC_CLASS = L1AssembleSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    def __init__(
        self,
        examples: channel.BaseChannel,
        fold_predictions: list[channel.BaseChannel],
        config_name: str,
        shard_mb: float = 0.0,
    ):
        if not 2 <= len(fold_predictions) <= MAX_FOLDS:
            raise ValueError(f"L1Assemble takes 2..{MAX_FOLDS} fold predictions, got {len(fold_predictions)}")
        super().__init__(
            spec=L1AssembleSpec(
                examples=examples,
                num_folds=len(fold_predictions),
                config_name=config_name,
                shard_mb=shard_mb,
                predictions=channel.Channel(type=Predictions),
                **{predictions_key(k): ch for k, ch in enumerate(fold_predictions)},
            )
        )
