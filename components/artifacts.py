"""Artifact types of yt8m-tfx beyond TFX's standard ones. All are split like Examples (`Split-<name>/`).

Kubeflow V2 needs a custom TYPE_NAME to be the class's import path with a single dot (`module.Class`): the
container entrypoint imports the class by that name; `components/__init__.py` re-exports the classes for it.
It also allows no typed PROPERTIES on custom types, so `split_names` is a custom property here.
"""

from __future__ import annotations

from tfx.types import artifact
from tfx.types.system_artifacts import Dataset, Metrics

_SPLIT_NAMES = "split_names"


class _SplitArtifact(artifact.Artifact):
    """`split_names` (JSON list, as on Examples) stored as a custom property."""

    @property
    def split_names(self) -> str:
        return self.get_string_custom_property(_SPLIT_NAMES)

    @split_names.setter
    def split_names(self, value: str) -> None:
        self.set_string_custom_property(_SPLIT_NAMES, value)


class Predictions(_SplitArtifact):
    """Per-video class scores of one model (trainer.predictions record format)."""

    TYPE_NAME = "components.Predictions"
    TYPE_ANNOTATION = Dataset


class MergedPredictions(_SplitArtifact):
    """Every L1 model's scores and the labels of each video, joined by video id."""

    TYPE_NAME = "components.MergedPredictions"
    TYPE_ANNOTATION = Dataset


class CandidateFeatures(_SplitArtifact):
    """One Parquet row per (video, candidate class): the L2 stacker's features and target."""

    TYPE_NAME = "components.CandidateFeatures"
    TYPE_ANNOTATION = Dataset


class CandidateScores(_SplitArtifact):
    """The L2 stacker's probability for every candidate row (Parquet), out-of-fold or fold-averaged."""

    TYPE_NAME = "components.CandidateScores"
    TYPE_ANNOTATION = Dataset


class SoftLabelIndex(_SplitArtifact):
    """Per training video, the L2 out-of-fold probabilities of its candidates (trainer.soft_labels format)."""

    TYPE_NAME = "components.SoftLabelIndex"
    TYPE_ANNOTATION = Dataset


class StageMetrics(artifact.Artifact):
    """metrics.json of a stage (GAP per model, per fold, on the holdout), mirrored in custom properties."""

    TYPE_NAME = "components.StageMetrics"
    TYPE_ANNOTATION = Metrics


class Submission(artifact.Artifact):
    """A Kaggle submission CSV (`VideoId,LabelConfidencePairs`) written by a pushed model."""

    TYPE_NAME = "components.Submission"
    TYPE_ANNOTATION = Dataset
