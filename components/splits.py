"""Where the files of an artifact's split are, and which YouTube-8M layout an Examples artifact holds."""

from __future__ import annotations

import os

from tfx.components.util import examples_utils
from tfx.proto import example_gen_pb2
from tfx.types import artifact, standard_artifact_utils

HOLDOUT, OUT_OF_FOLD, TEST = "holdout", "oof", "test"

LEVEL_OF_PAYLOAD_FORMAT = {
    example_gen_pb2.FORMAT_TF_EXAMPLE: "video",
    example_gen_pb2.FORMAT_TF_SEQUENCE_EXAMPLE: "frame",
}


def split_files(source: artifact.Artifact, split: str) -> str:
    """Glob pattern of every file of `split` of an input artifact."""
    return os.path.join(standard_artifact_utils.get_split_uri([source], split), "*")


def split_output(output: artifact.Artifact, split: str, name: str) -> str:
    """File path prefix for writing `split` of an output artifact (`<uri>/Split-<split>/<name>`)."""
    return os.path.join(output.uri, f"Split-{split}", name)


def examples_level(examples: artifact.Artifact) -> str:
    """ "video" (tf.train.Example) or "frame" (tf.train.SequenceExample) records."""
    return LEVEL_OF_PAYLOAD_FORMAT[examples_utils.get_payload_format(examples)]
