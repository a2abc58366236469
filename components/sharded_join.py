"""Joins by video id whose memory stays bounded on the local runner.

The in-memory DirectRunner materialises the whole input of a CoGroupByKey, so a join of every L1 model's
predictions grows with the data (x3.3 peak RSS from 10k to 100k videos in L2Merge). With more than one shard,
`run_sharded` first rewrites every input, in one streaming pass, into parts by crc32(video id) % shards, and
then builds the join once per part, each in its own Beam pipeline: memory follows the shard, not the data.
On a runner with a shuffle service (Dataflow) one join is right (`shard_mb` 0).
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import apache_beam as beam
import tensorflow as tf
from tfx.types import artifact

from components.splits import (
    COUNTS_DIR,
    ReadRecords,
    ReadTFRecords,
    check_split_counts,
    collect_counts,
    count_splits,
    split_files,
    tfrecord_records,
)

PARTITION_DIR = "_partitioned"  # under the output's uri while the executor runs; removed when it succeeds

# build(pipeline, records by input tag, file name suffix): the join on those records, writing its outputs
# into files whose names end with the suffix ("" for a single join, "-0003" for shard 3); returns the
# records it wrote per output split.
JoinBuilder = Callable[[beam.Pipeline, dict[str, beam.PCollection], str], dict[str, beam.PCollection]]


@dataclass(frozen=True)
class JoinInput:
    """One side of a join: the records of the files of `split` of `source`, keyed by `video_id(record)`.
    The records of a file are its TFRecords unless `file_records` reads them otherwise (as serialized records
    made from another format's rows, say); its parts are TFRecord files either way. A `counted` input must
    hold the number of videos `source` recorded for the split (its `split_counts`)."""

    tag: str  # unique among the inputs; names its Beam steps and its partition directory
    source: artifact.Artifact
    split: str
    video_id: Callable[[bytes], str]
    counted: bool = False
    file_records: Callable[[str], Iterable[bytes]] = tfrecord_records

    @property
    def pattern(self) -> str:
        return split_files(self.source, self.split)


def shard_of(video_id: str, shards: int) -> int:
    """A video's shard; crc32 is stable across processes and runs (Python's str hash is salted)."""
    return zlib.crc32(video_id.encode()) % shards


def shard_count(inputs: list[JoinInput], shard_mb: float) -> int:
    """Shards of about `shard_mb` MB of input files each; `shard_mb` 0 -> 1 (one join)."""
    if shard_mb <= 0:
        return 1
    total = sum(tf.io.gfile.stat(path).length for item in inputs for path in tf.io.gfile.glob(item.pattern))
    return max(1, math.ceil(total / (shard_mb * 2**20)))


def run_sharded(
    make_pipeline: Callable[[], beam.Pipeline],
    inputs: list[JoinInput],
    shards: int,
    scratch_dir: str,
    build: JoinBuilder,
) -> dict[str, int]:
    """Run `build` on all of `inputs` (shards == 1) or once per shard on its part of every input. The records
    of every input are counted as they are read, and each counted input checked against its artifact's
    `split_counts` (before any join when sharded). Returns the number of records `build` wrote per split."""
    input_counts, output_counts = (os.path.join(scratch_dir, COUNTS_DIR, kind) for kind in ("in", "out"))
    if shards == 1:
        with make_pipeline() as pipeline:
            records = _read_inputs(pipeline, inputs)
            count_splits(records, input_counts, "inputs")
            count_splits(build(pipeline, records, ""), output_counts, "outputs")
        _check_counts(inputs, collect_counts(input_counts))
    else:
        _partition(make_pipeline, inputs, shards, scratch_dir, input_counts)
        _check_counts(inputs, collect_counts(input_counts))
        for shard in range(shards):
            with make_pipeline() as pipeline:
                records = {
                    item.tag: pipeline
                    | f"Read[{item.tag}]" >> ReadTFRecords(_part_files(scratch_dir, shard, item.tag))
                    for item in inputs
                }
                count_splits(build(pipeline, records, f"-{shard:04d}"), output_counts, f"shard-{shard:04d}")
    written = collect_counts(output_counts)
    tf.io.gfile.rmtree(scratch_dir)
    return written


def _check_counts(inputs: list[JoinInput], counts: dict[str, int]) -> None:
    for item in inputs:
        if item.counted:
            check_split_counts(item.source, {item.split: counts[item.tag]})


def _partition(
    make_pipeline: Callable[[], beam.Pipeline],
    inputs: list[JoinInput],
    shards: int,
    scratch_dir: str,
    counts_dir: str,
) -> None:
    """Every record of every input rewritten under `scratch_dir`/shard-<s>/<tag>/ for its video's shard;
    the records of each input counted under `counts_dir`."""
    with make_pipeline() as pipeline:
        records = _read_inputs(pipeline, inputs)
        count_splits(records, counts_dir, "inputs")
        for item in inputs:
            parts = records[item.tag] | f"Shard[{item.tag}]" >> beam.Partition(
                lambda record, n, video_id=item.video_id: shard_of(video_id(record), n), shards
            )
            for shard, part in enumerate(parts):
                _ = part | f"Write[{item.tag}.{shard}]" >> beam.io.WriteToTFRecord(
                    os.path.join(scratch_dir, f"shard-{shard}", item.tag, "part")
                )


def _part_files(scratch_dir: str, shard: int, tag: str) -> str:
    """Glob of one input's part for `shard` (it matches nothing when the shard got none of its records)."""
    return os.path.join(scratch_dir, f"shard-{shard}", tag, "*")


def _read_inputs(pipeline: beam.Pipeline, inputs: list[JoinInput]) -> dict[str, beam.PCollection]:
    """The records of every input, by tag."""
    return {
        item.tag: pipeline | f"Read[{item.tag}]" >> ReadRecords(item.pattern, item.file_records)
        for item in inputs
    }
