"""L2LightGBM: the stacker, trained per fold on candidate rows, scoring OOF, holdout and test candidates."""

from __future__ import annotations

from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import channel, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.artifacts import CandidateFeatures, CandidateScores, StageMetrics
from components.l2_lightgbm import executor
from components.l2_lightgbm.config import parse_lightgbm_config
from trainer import config_schema


class L2LightGBMSpec(ComponentSpec):
    PARAMETERS = {
        "config_yaml": ExecutionParameter(type=str),
        "config_source": ExecutionParameter(type=str),
        "gap_k": ExecutionParameter(type=int),
    }
    INPUTS = {"features": ChannelParameter(type=CandidateFeatures)}
    OUTPUTS = {
        "scores": ChannelParameter(type=CandidateScores),
        "model": ChannelParameter(type=standard_artifacts.Model),
        "metrics": ChannelParameter(type=StageMetrics),
    }


class L2LightGBM(base_component.BaseComponent):
    """For each fold k: a binary LightGBM on the candidate rows of the other folds (early stopping on a
    validation slice of their videos) scores fold k's rows; holdout and test rows get the mean of all fold
    models. Probabilities, never 0/1. Models are LightGBM text files; GAP@k per fold and on the holdout,
    plus each L1 model's holdout GAP, go to the metrics artifact (the stage report)."""

    SPEC_CLASS = L2LightGBMSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, features: channel.BaseChannel, config_path: str, gap_k: int = 20) -> None:
        text = config_schema.read_text(config_path)
        parse_lightgbm_config(text, config_path)  # fail at pipeline construction, not at run time
        super().__init__(
            spec=L2LightGBMSpec(
                features=features,
                config_yaml=text,
                config_source=config_path,
                gap_k=gap_k,
                scores=channel.Channel(type=CandidateScores),
                model=channel.Channel(type=standard_artifacts.Model),
                metrics=channel.Channel(type=StageMetrics),
            )
        )
