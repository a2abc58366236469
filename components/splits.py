"""Where the files of an artifact's split are, and which YouTube-8M layout an Examples artifact holds."""

from __future__ import annotations

import os

import apache_beam as beam
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


def write_split(output: artifact.Artifact, split: str, name: str) -> beam.PTransform:
    """Writes serialized records as uncompressed TFRecord shards of `split` of an output artifact.

    Not gzip: these records are float scores and features, which gzip shrinks by ~10% at ~8 MB/s of CPU; at
    3862 classes that was two thirds of HeadExamples' time. Readers pick the compression from the file name
    (.gz -> GZIP), so gzipped inputs (ExampleGen's) read the same way."""
    return beam.io.WriteToTFRecord(split_output(output, split, name), file_name_suffix=".tfrecord")


def write_splits(
    indexed_records: beam.PCollection, output: artifact.Artifact, splits: list[str], name: str
) -> None:
    """(index into `splits`, serialized record) pairs -> each record into its split of `output`."""
    parts = indexed_records | "BySplit" >> beam.Partition(lambda item, _: item[0], len(splits))
    for split, part in zip(splits, parts, strict=True):
        _ = (
            part
            | f"Records[{split}]" >> beam.Map(lambda item: item[1])
            | f"Write[{split}]" >> write_split(output, split, name)
        )


def directory_bytes(path: str) -> int:
    """Total size of the files under `path` (local or any tf.io.gfile filesystem)."""
    import tensorflow as tf

    return sum(
        tf.io.gfile.stat(os.path.join(root, name)).length
        for root, _, names in tf.io.gfile.walk(path)
        for name in names
    )


def examples_level(examples: artifact.Artifact) -> str:
    """ "video" (tf.train.Example) or "frame" (tf.train.SequenceExample) records."""
    return LEVEL_OF_PAYLOAD_FORMAT[examples_utils.get_payload_format(examples)]
