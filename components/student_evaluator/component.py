"""StudentEvaluator: holdout GAP@k (with paired-bootstrap intervals), Hit@1, PERR and MAP of every model, and
the EnsembleModel's blessing."""

from __future__ import annotations

from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import channel, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.artifacts import CandidateScores, Predictions, StageMetrics
from components.l2_merge.component import MAX_MODELS
from components.student_evaluator import executor
from components.student_evaluator.executor import l1_key, served_tower_key, tower_key
from trainer.students import TOWERS


class StudentEvaluatorSpec(ComponentSpec):
    PARAMETERS = {
        "num_classes": ExecutionParameter(type=int),
        "num_l1_models": ExecutionParameter(type=int),
        "num_towers": ExecutionParameter(type=int),
        "num_served_towers": ExecutionParameter(type=int),
        "bootstrap_resamples": ExecutionParameter(type=int),
        "bootstrap_seed": ExecutionParameter(type=int),
        "gap_k": ExecutionParameter(type=int),
        "gap_floor": ExecutionParameter(type=float),
        "stack_fraction": ExecutionParameter(type=float),
    }
    INPUTS = {
        "examples": ChannelParameter(type=standard_artifacts.Examples),
        "stack_scores": ChannelParameter(type=CandidateScores),
        "model": ChannelParameter(type=standard_artifacts.Model),
        **{l1_key(m): ChannelParameter(type=Predictions, optional=True) for m in range(MAX_MODELS)},
        **{tower_key(t): ChannelParameter(type=Predictions, optional=True) for t in range(len(TOWERS))},
        **{
            served_tower_key(t): ChannelParameter(type=standard_artifacts.Model, optional=True)
            for t in range(len(TOWERS))
        },
    }
    OUTPUTS = {
        "evaluation": ChannelParameter(type=StageMetrics),
        "blessing": ChannelParameter(type=standard_artifacts.ModelBlessing),
    }


class StudentEvaluator(base_component.BaseComponent):
    """Scores the holdout split of `examples` with every L1 model, their mean, the L2 stack (`stack_scores`),
    every tower twice (its fold-averaged assembled predictions, and as served: the refit tower's SavedModel in
    `served_towers` run on the raw records) and the exported EnsembleModel (`model`). Each GAP gets a paired
    bootstrap interval over the holdout videos (`bootstrap_resamples`, seeded), and so do stack - best L1,
    stack - mean of L1 models, EnsembleModel - stack and EnsembleModel / stack. Blesses the model when its
    GAP >= gap_floor and >= stack_fraction x the stack's GAP (point estimates)."""

    SPEC_CLASS = StudentEvaluatorSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(
        self,
        examples: channel.BaseChannel,
        l1_predictions: list[channel.BaseChannel],
        tower_predictions: list[channel.BaseChannel],
        stack_scores: channel.BaseChannel,
        model: channel.BaseChannel,
        num_classes: int,
        gap_floor: float,
        stack_fraction: float,
        served_towers: list[channel.BaseChannel] = (),
        gap_k: int = 20,
        bootstrap_resamples: int = 1000,
        bootstrap_seed: int = 0,
    ) -> None:
        super().__init__(
            spec=StudentEvaluatorSpec(
                examples=examples,
                stack_scores=stack_scores,
                model=model,
                num_classes=num_classes,
                num_l1_models=len(l1_predictions),
                num_towers=len(tower_predictions),
                num_served_towers=len(served_towers),
                bootstrap_resamples=bootstrap_resamples,
                bootstrap_seed=bootstrap_seed,
                gap_k=gap_k,
                gap_floor=gap_floor,
                stack_fraction=stack_fraction,
                evaluation=channel.Channel(type=StageMetrics),
                blessing=channel.Channel(type=standard_artifacts.ModelBlessing),
                **{l1_key(m): ch for m, ch in enumerate(l1_predictions)},
                **{tower_key(t): ch for t, ch in enumerate(tower_predictions)},
                **{served_tower_key(t): ch for t, ch in enumerate(served_towers)},
            )
        )
