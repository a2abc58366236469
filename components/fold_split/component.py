"""FoldSplit: deterministic k-fold + holdout assignment of YouTube-8M videos by a hash of the video id."""

from __future__ import annotations

from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.types import channel, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.fold_split import executor


class FoldSplitSpec(ComponentSpec):
    PARAMETERS = {
        "num_folds": ExecutionParameter(type=int),
        "holdout_fraction": ExecutionParameter(type=float),
        "seed": ExecutionParameter(type=int),
        "num_classes": ExecutionParameter(type=int),
        "unlabelled_splits": ExecutionParameter(type=str),  # comma-separated input split names
    }
    INPUTS = {
        "examples": ChannelParameter(type=standard_artifacts.Examples),
        "fold_reference": ChannelParameter(type=standard_artifacts.Examples, optional=True),
    }
    OUTPUTS = {"split_examples": ChannelParameter(type=standard_artifacts.Examples)}


class FoldSplit(base_beam_component.BaseBeamComponent):
    """Pools the labelled input splits and deals every video to `fold_0..fold_{k-1}` or `holdout`.

    The split of a video depends only on (seed, video id), so video-level and frame-level data get the same
    map; pass the video-level output as `fold_reference` to a frame-level FoldSplit to reuse its settings
    and have the component prove that both maps are identical. Unlabelled splits (test) pass through.
    Output properties: split_counts, label_coverage, fold_map_fingerprint, num_folds, holdout_fraction, seed.
    """

    SPEC_CLASS = FoldSplitSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    def __init__(
        self,
        examples: channel.BaseChannel,
        num_classes: int,
        num_folds: int = 5,
        holdout_fraction: float = 0.05,
        seed: int = 0,
        unlabelled_splits: tuple[str, ...] = ("test",),
        fold_reference: channel.BaseChannel | None = None,
    ) -> None:
        if num_folds < 2:
            raise ValueError(f"num_folds must be >= 2, got {num_folds}")
        if not 0.0 < holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
        spec = FoldSplitSpec(
            examples=examples,
            fold_reference=fold_reference,
            num_folds=num_folds,
            holdout_fraction=holdout_fraction,
            seed=seed,
            num_classes=num_classes,
            unlabelled_splits=",".join(unlabelled_splits),
            split_examples=channel.Channel(type=standard_artifacts.Examples),
        )
        super().__init__(spec=spec)
