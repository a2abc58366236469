"""L2Merge: all L1 models' assembled predictions -> one record per video: every model's scores and ranks at
the video's candidate classes (Beam)."""

from __future__ import annotations

from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.types import channel, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.artifacts import MergedPredictions, Predictions
from components.l2_merge import executor
from components.l2_merge.executor import predictions_key

MAX_MODELS = 128  # the original stacked 113 L1 models


class L2MergeSpec(ComponentSpec):
    PARAMETERS = {
        "num_models": ExecutionParameter(type=int),
        "top_k": ExecutionParameter(type=int),
        "shard_mb": ExecutionParameter(type=float),
    }
    INPUTS = {
        "examples": ChannelParameter(type=standard_artifacts.Examples),
        **{predictions_key(m): ChannelParameter(type=Predictions, optional=True) for m in range(MAX_MODELS)},
    }
    OUTPUTS = {"merged": ChannelParameter(type=MergedPredictions)}


class L2Merge(base_beam_component.BaseBeamComponent):
    """Joins by video id the L1Assemble outputs with the video-level fold split (`oof` with every fold_k,
    `holdout`, `test`): every video needs exactly one prediction of every model; the score rows follow the
    order of `predictions`. Missing, duplicated or unknown ids and num_classes mismatches fail. Only the
    candidate classes are kept: the union of every model's `top_k` classes (L2Features reads `top_k` from
    the output's custom property).

    `shard_mb`: join in hash shards of about that many MB of input (components.sharded_join); 0 = one join."""

    SPEC_CLASS = L2MergeSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    def __init__(
        self,
        examples: channel.BaseChannel,
        predictions: list[channel.BaseChannel],
        top_k: int = 20,
        shard_mb: float = 0.0,
    ):
        if not 1 <= len(predictions) <= MAX_MODELS:
            raise ValueError(f"L2Merge takes 1..{MAX_MODELS} model predictions, got {len(predictions)}")
        if top_k < 1:
            raise ValueError(f"L2Merge: top_k must be >= 1, got {top_k}")
        super().__init__(
            spec=L2MergeSpec(
                examples=examples,
                num_models=len(predictions),
                top_k=top_k,
                shard_mb=shard_mb,
                merged=channel.Channel(type=MergedPredictions),
                **{predictions_key(m): ch for m, ch in enumerate(predictions)},
            )
        )
