"""L2Features: merged L1 predictions -> one Parquet row of stacking features per (video, candidate class)."""

from __future__ import annotations

from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.types import channel
from tfx.types.component_spec import ChannelParameter, ComponentSpec

from components.artifacts import CandidateFeatures, MergedPredictions
from components.l2_features import executor


class L2FeaturesSpec(ComponentSpec):
    PARAMETERS = {}
    INPUTS = {"merged": ChannelParameter(type=MergedPredictions)}
    OUTPUTS = {"features": ChannelParameter(type=CandidateFeatures)}


class L2Features(base_beam_component.BaseBeamComponent):
    """Candidates of a video = union of every model's top-k classes (the candidates L2Merge kept, k = its
    `top_k`); each row holds the models' scores and ranks, their mean/max/std, how many models have the
    class in their top-k, and the class prior (for out-of-fold rows from the other folds' labels only).
    Splits `oof`, `holdout`, `test` as the input."""

    SPEC_CLASS = L2FeaturesSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    def __init__(self, merged: channel.BaseChannel):
        super().__init__(spec=L2FeaturesSpec(merged=merged, features=channel.Channel(type=CandidateFeatures)))
