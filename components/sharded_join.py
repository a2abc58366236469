"""Joins by video id whose memory stays bounded on the local runner.

The in-memory DirectRunner materialises the whole input of a GroupByKey, so a join of every L1 model's
predictions grows with the data (x3.3 peak RSS from 10k to 100k videos in L2Merge). With more than one shard,
`run_sharded` first copies every input file, one Beam element per file and plain TFRecord writers, into parts
by crc32(video id) % shards, and then builds the join once per part, each in its own Beam pipeline: memory
follows the shard, not the data. On a runner with a shuffle service (Dataflow) one join is right (`shard_mb`
0).

Every input is read by the same few transforms, as (tag, record) pairs, and every join of an executor is one
GroupByKey on (join, video id) (`GroupByVideo`): the Beam graph has the same size at 2 models and at 113.
One Read/Key/Count chain per input made graph construction alone ~30 s per pipeline at 20 models.
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import apache_beam as beam
import tensorflow as tf
from tfx.types import artifact

from components.splits import (
    COUNTS_DIR,
    check_split_counts,
    collect_counts,
    count_splits,
    split_files,
    sum_counts,
    tfrecord_records,
)

PARTITION_DIR = "_partitioned"  # under the output's uri while the executor runs; removed when it succeeds

# build(pipeline, (tag, record) pairs of every input, file name suffix): the joins on those records, writing
# their outputs into files whose names end with the suffix ("" for a single join, "-0003" for shard 3);
# returns the records it wrote per output split.
JoinBuilder = Callable[[beam.Pipeline, beam.PCollection, str], dict[str, beam.PCollection]]
# A video's records in one join: {role: [(the input's split, record), ...]}, every role of the join present.
Grouped = dict[str, list[tuple[str, bytes]]]


@dataclass(frozen=True)
class JoinInput:
    """One side of a join: the records of the files of `split` of `source`, keyed by `video_id(record)`.
    The records of a file are its TFRecords unless `file_records` reads them otherwise (as serialized records
    made from another format's rows, say); its parts are TFRecord files either way. A `counted` input must
    hold the number of videos `source` recorded for the split (its `split_counts`). An input that
    is only copied through (`records_of`) is counted and sharded like the joined ones."""

    tag: str  # unique among the inputs; names its partition directory and its counts
    source: artifact.Artifact
    split: str
    video_id: Callable[[bytes], str]
    role: str = ""  # its records' name in the groups of its join; several inputs may share it
    join: str = ""  # inputs of different joins are never grouped together
    counted: bool = False
    file_records: Callable[[str], Iterable[bytes]] = tfrecord_records

    @property
    def pattern(self) -> str:
        return split_files(self.source, self.split)


@dataclass(frozen=True)
class _FileJob:
    """One file of one input: what a Beam worker reads (or partitions) as one element."""

    tag: str
    path: str
    file_records: Callable[[str], Iterable[bytes]]


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
            tagged = pipeline | "Read" >> _ReadTagged(_input_jobs(inputs))
            sum_counts(tagged | "Tags" >> beam.Map(lambda item: (item[0], 1)), input_counts, "inputs")
            count_splits(build(pipeline, tagged, ""), output_counts, "outputs")
        _check_counts(inputs, collect_counts(input_counts))
    else:
        _partition(make_pipeline, inputs, shards, scratch_dir, input_counts)
        _check_counts(inputs, collect_counts(input_counts))
        for shard in range(shards):
            jobs = [
                _FileJob(item.tag, path, tfrecord_records)
                for item in inputs
                for path in sorted(tf.io.gfile.glob(_part_files(scratch_dir, shard, item.tag)))
            ]
            with make_pipeline() as pipeline:
                tagged = pipeline | "Read" >> _ReadTagged(jobs)
                count_splits(build(pipeline, tagged, f"-{shard:04d}"), output_counts, f"shard-{shard:04d}")
    written = collect_counts(output_counts)
    tf.io.gfile.rmtree(scratch_dir)
    return written


class GroupByVideo(beam.PTransform):
    """(tag, record) pairs -> (join, video id, Grouped) per video of each join of `inputs`; the records of
    other inputs are left out. A role without a record of the video maps to []."""

    def __init__(self, inputs: list[JoinInput]) -> None:
        super().__init__()
        self._keys = {item.tag: (item.join, item.role, item.split, item.video_id) for item in inputs}
        self._roles = {
            join: list(dict.fromkeys(i.role for i in inputs if i.join == join))
            for join in {i.join for i in inputs}
        }

    def expand(self, tagged: beam.PCollection) -> beam.PCollection:
        return (
            tagged
            | "Key" >> beam.FlatMap(_keyed, self._keys)
            | "Group" >> beam.GroupByKey()
            | "ByRole" >> beam.Map(_by_role, self._roles)
        )


def records_of(tagged: beam.PCollection, tag: str) -> beam.PCollection:
    """The records of one input (to pass them through unjoined)."""
    return (
        tagged
        | f"Select[{tag}]" >> beam.Filter(lambda item: item[0] == tag)
        | f"Records[{tag}]" >> beam.Map(lambda item: item[1])
    )


def _keyed(tagged: tuple[str, bytes], keys: dict) -> Iterator[tuple[tuple[str, str], tuple[str, str, bytes]]]:
    tag, record = tagged
    if tag in keys:
        join, role, split, video_id = keys[tag]
        yield (join, video_id(record)), (role, split, record)


def _by_role(group: tuple[tuple[str, str], Iterable[tuple[str, str, bytes]]], roles: dict) -> tuple:
    (join, video_id), values = group
    grouped: Grouped = {role: [] for role in roles[join]}
    for role, split, record in values:
        grouped[role].append((split, record))
    return join, video_id, grouped


class _ReadTagged(beam.PTransform):
    """(tag, record) for every record of every job's file; one element per file until it is read."""

    def __init__(self, jobs: list[_FileJob]) -> None:
        super().__init__()
        self._jobs = jobs

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        return pbegin | "Files" >> beam.Create(self._jobs) | "Records" >> beam.FlatMap(_tagged_records)


def _tagged_records(job: _FileJob) -> Iterator[tuple[str, bytes]]:
    for record in job.file_records(job.path):
        yield job.tag, record


def _input_jobs(inputs: list[JoinInput]) -> list[_FileJob]:
    return [
        _FileJob(item.tag, path, item.file_records)
        for item in inputs
        for path in sorted(tf.io.gfile.glob(item.pattern))
    ]


def _check_counts(inputs: list[JoinInput], counts: dict[str, int]) -> None:
    for item in inputs:
        if item.counted:
            check_split_counts(item.source, {item.split: counts.get(item.tag, 0)})


def _partition(
    make_pipeline: Callable[[], beam.Pipeline],
    inputs: list[JoinInput],
    shards: int,
    scratch_dir: str,
    counts_dir: str,
) -> None:
    """Every record of every input copied under `scratch_dir`/shard-<s>/<tag>/ for its video's shard, one
    Beam element per input file; the records of each input counted under `counts_dir`."""
    video_ids = {item.tag: item.video_id for item in inputs}
    jobs = list(enumerate(_input_jobs(inputs)))
    with make_pipeline() as pipeline:
        counts = (
            pipeline
            | "Files" >> beam.Create(jobs)
            | "Partition" >> beam.Map(_partition_file, video_ids, shards, scratch_dir)
        )
        sum_counts(counts, counts_dir, "inputs")


def _partition_file(
    indexed_job: tuple[int, _FileJob], video_ids: dict, shards: int, scratch_dir: str
) -> tuple[str, int]:
    """(tag, records) of one input file, whose records are written to one part file per shard they fall in,
    named by the file's index (a retried element rewrites the same files)."""
    index, job = indexed_job
    video_id, writers, records = video_ids[job.tag], {}, 0
    try:
        for record in job.file_records(job.path):
            shard = shard_of(video_id(record), shards)
            if shard not in writers:
                directory = os.path.join(scratch_dir, f"shard-{shard}", job.tag)
                tf.io.gfile.makedirs(directory)
                writers[shard] = tf.io.TFRecordWriter(os.path.join(directory, f"part-{index:05d}.tfrecord"))
            writers[shard].write(record)
            records += 1
    finally:
        for writer in writers.values():
            writer.close()
    return job.tag, records


def _part_files(scratch_dir: str, shard: int, tag: str) -> str:
    """Glob of one input's part for `shard` (it matches nothing when the shard got none of its records)."""
    return os.path.join(scratch_dir, f"shard-{shard}", tag, "*")
