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
from collections.abc import Callable
from dataclasses import dataclass

import apache_beam as beam
import tensorflow as tf

PARTITION_DIR = "_partitioned"  # under the output's uri while the executor runs; removed when it succeeds

# build(pipeline, records by input tag, file name suffix): the join on those records, writing its outputs
# into files whose names end with the suffix ("" for a single join, "-0003" for shard 3).
JoinBuilder = Callable[[beam.Pipeline, dict[str, beam.PCollection], str], None]


@dataclass(frozen=True)
class JoinInput:
    """One side of a join: the TFRecord files matching `pattern`, keyed by `video_id(record)`."""

    tag: str  # unique among the inputs; names its Beam steps and its partition directory
    pattern: str
    video_id: Callable[[bytes], str]


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
) -> list[str]:
    """Run `build` on all of `inputs` (shards == 1) or once per shard on its part of every input; returns
    the file name suffixes it was called with."""
    if shards == 1:
        with make_pipeline() as pipeline:
            build(pipeline, {item.tag: _read(pipeline, item.tag, item.pattern) for item in inputs}, "")
        return [""]
    _partition(make_pipeline, inputs, shards, scratch_dir)
    suffixes = []
    for shard in range(shards):
        with make_pipeline() as pipeline:
            records = {
                item.tag: _read(pipeline, item.tag, _part_files(scratch_dir, shard, item.tag))
                for item in inputs
            }
            build(pipeline, records, f"-{shard:04d}")
        suffixes.append(f"-{shard:04d}")
    tf.io.gfile.rmtree(scratch_dir)
    return suffixes


def _partition(
    make_pipeline: Callable[[], beam.Pipeline], inputs: list[JoinInput], shards: int, scratch_dir: str
) -> None:
    """Every record of every input rewritten under `scratch_dir`/shard-<s>/<tag>/ for its video's shard."""
    with make_pipeline() as pipeline:
        for item in inputs:
            parts = (
                pipeline
                | f"Read[{item.tag}]" >> beam.io.ReadFromTFRecord(item.pattern)
                | f"Shard[{item.tag}]"
                >> beam.Partition(
                    lambda record, n, video_id=item.video_id: shard_of(video_id(record), n), shards
                )
            )
            for shard, records in enumerate(parts):
                _ = records | f"Write[{item.tag}.{shard}]" >> beam.io.WriteToTFRecord(
                    os.path.join(scratch_dir, f"shard-{shard}", item.tag, "part")
                )


def _part_files(scratch_dir: str, shard: int, tag: str) -> str | None:
    """Glob of one input's part for `shard`, or None when the shard got none of its records."""
    pattern = os.path.join(scratch_dir, f"shard-{shard}", tag, "*")
    return pattern if tf.io.gfile.glob(pattern) else None


def _read(pipeline: beam.Pipeline, tag: str, pattern: str | None) -> beam.PCollection:
    if pattern is None:
        return pipeline | f"Empty[{tag}]" >> beam.Create([], reshuffle=False).with_output_types(bytes)
    return pipeline | f"Read[{tag}]" >> beam.io.ReadFromTFRecord(pattern)
