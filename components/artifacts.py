"""Artifact types of yt8m-tfx beyond TFX's standard ones."""

from __future__ import annotations

from tfx.types import artifact
from tfx.types.system_artifacts import Dataset


class Predictions(artifact.Artifact):
    """Per-video class scores of one model, split like the examples (trainer.predictions record format)."""

    TYPE_NAME = "YT8MPredictions"
    TYPE_ANNOTATION = Dataset
    PROPERTIES = {"split_names": artifact.Property(type=artifact.PropertyType.STRING)}
