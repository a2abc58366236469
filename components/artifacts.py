"""Artifact types of yt8m-tfx beyond TFX's standard ones. All are split like Examples (`Split-<name>/`)."""

from __future__ import annotations

from tfx.types import artifact
from tfx.types.system_artifacts import Dataset, Metrics

_SPLIT_NAMES = {"split_names": artifact.Property(type=artifact.PropertyType.STRING)}


class Predictions(artifact.Artifact):
    """Per-video class scores of one model (trainer.predictions record format)."""

    TYPE_NAME = "YT8MPredictions"
    TYPE_ANNOTATION = Dataset
    PROPERTIES = _SPLIT_NAMES


class MergedPredictions(artifact.Artifact):
    """Every L1 model's scores and the labels of each video, joined by video id."""

    TYPE_NAME = "YT8MMergedPredictions"
    TYPE_ANNOTATION = Dataset
    PROPERTIES = _SPLIT_NAMES


class CandidateFeatures(artifact.Artifact):
    """One Parquet row per (video, candidate class): the L2 stacker's features and target."""

    TYPE_NAME = "YT8MCandidateFeatures"
    TYPE_ANNOTATION = Dataset
    PROPERTIES = _SPLIT_NAMES


class CandidateScores(artifact.Artifact):
    """The L2 stacker's probability for every candidate row (Parquet), out-of-fold or fold-averaged."""

    TYPE_NAME = "YT8MCandidateScores"
    TYPE_ANNOTATION = Dataset
    PROPERTIES = _SPLIT_NAMES


class SoftLabelIndex(artifact.Artifact):
    """Per training video, the L2 out-of-fold probabilities of its candidates (trainer.soft_labels format)."""

    TYPE_NAME = "YT8MSoftLabelIndex"
    TYPE_ANNOTATION = Dataset
    PROPERTIES = _SPLIT_NAMES


class StageMetrics(artifact.Artifact):
    """metrics.json of a stage (GAP per model, per fold, on the holdout), mirrored in custom properties."""

    TYPE_NAME = "YT8MStageMetrics"
    TYPE_ANNOTATION = Metrics
