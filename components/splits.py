"""Where the files of an artifact's split are, how they are read and written, how many videos each split
holds, and which YouTube-8M layout an Examples artifact holds.

Every producer of video records that a later stage joins or assembles by video id records `split_counts`
({split: videos}) on its output; every such stage counts the videos it reads per split and fails when a split
holds fewer or more than was recorded (a shard lost or cut since the artifact was written): a join of what
is left would be silently computed on a fraction of the videos.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator

import apache_beam as beam
import numpy as np
import tensorflow as tf
from tfx.components.util import examples_utils
from tfx.proto import example_gen_pb2
from tfx.types import artifact, standard_artifact_utils

from components.uri_io import read_json, write_json
from trainer.predictions import AVERAGED
from trainer.readers import file_batches
from trainer.readers import file_records as tfrecord_records  # one TFRecord file's records, for the joins
from trainer.records import InputDataError

HOLDOUT, OUT_OF_FOLD, TEST = "holdout", "oof", "test"
SPLIT_COUNTS = "split_counts"  # custom property: {split: videos}
COUNTS_DIR = "_counts"  # under an output's uri while its executor runs; removed when the counts are read
_READ_BATCH = 256

LEVEL_OF_PAYLOAD_FORMAT = {
    example_gen_pb2.FORMAT_TF_EXAMPLE: "video",
    example_gen_pb2.FORMAT_TF_SEQUENCE_EXAMPLE: "frame",
}


def split_fold(split: str) -> int:
    """The fold whose model must have predicted the videos of `split`: k for fold_k, AVERAGED (the mean of
    every fold's model) for holdout and test."""
    return int(split.removeprefix("fold_")) if split.startswith("fold_") else AVERAGED


def split_files(source: artifact.Artifact, split: str) -> str:
    """Glob pattern of every file of `split` of an input artifact."""
    return os.path.join(standard_artifact_utils.get_split_uri([source], split), "*")


def split_output(output: artifact.Artifact, split: str, name: str) -> str:
    """File path prefix for writing `split` of an output artifact (`<uri>/Split-<split>/<name>`)."""
    return os.path.join(output.uri, f"Split-{split}", name)


def split_batches(
    source: artifact.Artifact, split: str, batch_size: int = _READ_BATCH
) -> Iterator[np.ndarray]:
    """Batches of the serialized records of `split` of an artifact, file by file in name order."""
    for path in sorted(tf.io.gfile.glob(split_files(source, split))):
        yield from file_batches(path, batch_size)


class ReadRecords(beam.PTransform):
    """The records `file_records(path)` reads from every file matching `pattern` (listed when the pipeline
    is built; none -> no records)."""

    def __init__(self, pattern: str, file_records: Callable[[str], Iterable[bytes]]) -> None:
        super().__init__()
        self._pattern, self._file_records = pattern, file_records

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        files = sorted(tf.io.gfile.glob(self._pattern))
        return (
            pbegin
            | "Files" >> beam.Create(files).with_output_types(str)
            | "Records" >> beam.FlatMap(self._file_records).with_output_types(bytes)
        )


class ReadTFRecords(ReadRecords):
    """The records of every TFRecord file matching `pattern`. Unlike beam.io.ReadFromTFRecord, a file cut in
    the middle fails naming the file."""

    def __init__(self, pattern: str) -> None:
        super().__init__(pattern, tfrecord_records)


def count_splits(counted: dict[str, beam.PCollection], directory: str, name: str) -> None:
    """Writes {key: number of elements of counted[key]} to `directory`/`name`.json when the pipeline runs;
    `collect_counts(directory)` sums those files. A Count per key, not Beam metrics: every runner gives it."""
    counts = [
        records
        | f"Count[{name}.{key}]" >> beam.combiners.Count.Globally()
        | f"Key[{name}.{key}]" >> beam.Map(lambda count, key=key: (key, count))
        for key, records in counted.items()
    ]
    sum_counts(counts | f"Flatten[{name}]" >> beam.Flatten(), directory, name)


def sum_counts(counts: beam.PCollection, directory: str, name: str) -> None:
    """Writes {key: sum of the counts of key} of (key, count) pairs to `directory`/`name`.json when the
    pipeline runs (a key without pairs is absent)."""
    path = os.path.join(directory, f"{name}.json")
    _ = (
        counts
        | f"Sum[{name}]" >> beam.CombinePerKey(sum)
        | f"Collect[{name}]" >> beam.combiners.ToList()
        | f"Write[{name}]" >> beam.Map(lambda items: write_json(path, dict(items)))
    )


def collect_counts(directory: str) -> dict[str, int]:
    """The counts `count_splits` wrote under `directory`, summed by key; the directory is removed."""
    totals: dict[str, int] = {}
    for path in tf.io.gfile.glob(os.path.join(directory, "*.json")):
        for key, count in read_json(path).items():
            totals[key] = totals.get(key, 0) + count
    tf.io.gfile.rmtree(directory)
    return totals


def check_split_counts(source: artifact.Artifact, counts: dict[str, int]) -> None:
    """Fails unless every split of `source` in `counts` holds the number of videos its producer recorded."""
    recorded = source.get_json_value_custom_property(SPLIT_COUNTS)
    if recorded is None:
        raise InputDataError(
            f"{source.uri}: records no {SPLIT_COUNTS} to check its splits {sorted(counts)} against"
        )
    for split, videos in counts.items():
        expected = recorded.get(split)
        if videos != expected:
            raise InputDataError(
                f"{source.uri}: split {split} holds {videos} videos, its producer recorded {expected}: "
                "files were lost or cut since it was written"
            )


def write_split(output: artifact.Artifact, split: str, name: str) -> beam.PTransform:
    """Writes serialized records as uncompressed TFRecord shards of `split` of an output artifact.

    Not gzip: these records are float scores and features, which gzip shrinks by ~10% at ~8 MB/s of CPU; at
    3862 classes that was two thirds of HeadExamples' time. Readers pick the compression from the file name
    (.gz -> GZIP), so gzipped inputs (ExampleGen's) read the same way."""
    return beam.io.WriteToTFRecord(split_output(output, split, name), file_name_suffix=".tfrecord")


def write_splits(
    indexed_records: beam.PCollection, output: artifact.Artifact, splits: list[str], name: str
) -> dict[str, beam.PCollection]:
    """(index into `splits`, serialized record) pairs -> each record into its split of `output`; returns the
    records of each split."""
    parts = indexed_records | "BySplit" >> beam.Partition(lambda item, _: item[0], len(splits))
    written = {}
    for split, part in zip(splits, parts, strict=True):
        written[split] = part | f"Records[{split}]" >> beam.Map(lambda item: item[1])
        _ = written[split] | f"Write[{split}]" >> write_split(output, split, name)
    return written


def directory_bytes(path: str) -> int:
    """Total size of the files under `path` (local or any tf.io.gfile filesystem)."""
    return sum(
        tf.io.gfile.stat(os.path.join(root, name)).length
        for root, _, names in tf.io.gfile.walk(path)
        for name in names
    )


def examples_level(examples: artifact.Artifact) -> str:
    """ "video" (tf.train.Example) or "frame" (tf.train.SequenceExample) records."""
    return LEVEL_OF_PAYLOAD_FORMAT[examples_utils.get_payload_format(examples)]
