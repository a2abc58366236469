"""Custom TFX components of yt8m-tfx. The artifact types are importable from here under their TYPE_NAME."""

from components.artifacts import (
    CandidateFeatures,
    CandidateScores,
    MergedPredictions,
    Predictions,
    SoftLabelIndex,
    StageMetrics,
    Submission,
)

__all__ = [
    "CandidateFeatures",
    "CandidateScores",
    "MergedPredictions",
    "Predictions",
    "SoftLabelIndex",
    "StageMetrics",
    "Submission",
]
