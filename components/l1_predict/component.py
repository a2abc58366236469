"""L1Predict: one fold model scores its out-of-fold split, the holdout and the test split (Beam)."""

from __future__ import annotations

from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.types import channel, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.artifacts import Predictions
from components.l1_predict import executor


class L1PredictSpec(ComponentSpec):
    PARAMETERS = {"fold": ExecutionParameter(type=int), "config_name": ExecutionParameter(type=str)}
    INPUTS = {
        "model": ChannelParameter(type=standard_artifacts.Model),
        "examples": ChannelParameter(type=standard_artifacts.Examples),
    }
    OUTPUTS = {"predictions": ChannelParameter(type=Predictions)}


class L1Predict(base_beam_component.BaseBeamComponent):
    """Runs the exported model of (config, fold) over splits `fold_<fold>`, `holdout` and `test`.

    Refuses to predict the out-of-fold split when the model's recorded training splits include it.
    """

    SPEC_CLASS = L1PredictSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    def __init__(
        self, model: channel.BaseChannel, examples: channel.BaseChannel, fold: int, config_name: str
    ):
        super().__init__(
            spec=L1PredictSpec(
                model=model,
                examples=examples,
                fold=fold,
                config_name=config_name,
                predictions=channel.Channel(type=Predictions),
            )
        )
