"""Executor of YT8MExampleGen: every input file becomes one uncompressed output file of its split, validated
batch by batch as it is copied, and a record index of it (`components.record_index`, which FoldSplit deals
from); errors name the file and record.

TFX's own ExampleGen executor reshuffles every record through memory and writes gzip (+7.6 GB of memory for
2.5 GB of frame data; ~8 MB/s of CPU). Here files, not records, are what Beam distributes: each worker copies
whole files, record order within a file is kept, and output names follow the sorted input names, so the
content and order of every split are the same on every run and runner.
"""

from __future__ import annotations

import collections
import glob
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import numpy as np
import tensorflow as tf
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_beam_executor
from tfx.proto import example_gen_pb2
from tfx.types import artifact, standard_artifact_utils, standard_component_specs
from tfx.utils import proto_utils

from components.record_index import IndexBuilder, index_path, write_index
from components.splits import LEVEL_OF_PAYLOAD_FORMAT, SPLIT_COUNTS, split_output
from components.uri_io import read_json, write_json
from trainer.readers import RecordKeys, file_batches
from trainer.records import InputDataError
from trainer.tfrecord import RecordWriter, record_runs
from trainer.validation import check_batch

_COUNTS_FILE = "_split_counts.json"


def _record_groups(path: str) -> Iterator[np.ndarray]:
    """The records of one input file in groups: those of each 16 MB read of an uncompressed file (one
    validation of ~3,600 video-level records costs ~3 us a record less than 14 of 256), batches of a gzipped
    one."""
    if path.endswith(".gz"):
        yield from file_batches(path)
        return
    for run in record_runs(path):
        if run:
            yield np.array(run, dtype=object)


def validated_batches(
    path: str, level: str, num_classes: int, labelled: bool
) -> Iterator[tuple[np.ndarray, RecordKeys]]:
    """Batches of the serialized records of one TFRecord file with their keys, each record validated; the
    first bad record fails naming the file and its index."""
    records = 0
    for batch in _record_groups(path):
        check = check_batch(batch, level, num_classes, labelled)
        if check.invalid is not None:
            row, error = check.invalid
            raise InputDataError(f"{path}: record {records + row}: {error}")
        records += len(batch)
        yield batch, check.keys
    if records == 0:
        raise InputDataError(f"{path}: file holds no records")


@dataclass(frozen=True)
class FileImport:
    """One input file and the output file it is copied to."""

    split: str
    source: str
    destination: str
    labelled: bool


def import_file(job: FileImport, level: str, num_classes: int) -> collections.Counter:
    """Copies one input file's records, in order, to its output file and writes its record index;
    {split: records}. An uncompressed file is validated whole and then copied byte for byte by TF's file
    copy; a gzipped one is written uncompressed as its batches pass validation."""
    index = IndexBuilder()
    if not job.source.endswith(".gz"):
        for batch, keys in validated_batches(job.source, level, num_classes, job.labelled):
            index.add(batch, keys)
        tf.io.gfile.copy(job.source, job.destination, overwrite=True)
    else:
        with RecordWriter(job.destination) as writer:
            for batch, keys in validated_batches(job.source, level, num_classes, job.labelled):
                writer.write(batch)
                index.add(batch, keys)
    records = index.index()
    write_index(index_path(job.destination), records)
    return collections.Counter({job.split: len(records.lengths)})


def file_imports(exec_properties: dict[str, Any], examples: artifact.Artifact) -> list[FileImport]:
    """Every input file of every split of the input config, with its output file."""
    input_config = example_gen_pb2.Input()
    proto_utils.json_to_proto(exec_properties[standard_component_specs.INPUT_CONFIG_KEY], input_config)
    unlabelled = exec_properties["unlabelled_splits"].split(",")
    # The directory is matched literally: `data[1]` is not the pattern that matches `data1`.
    input_base = glob.escape(exec_properties[standard_component_specs.INPUT_BASE_KEY])
    imports = []
    for split in input_config.splits:
        pattern = os.path.join(input_base, split.pattern)
        files = sorted(tf.io.gfile.glob(pattern))
        if not files:
            raise InputDataError(f"no input files match {pattern}")
        imports += [
            FileImport(
                split.name,
                path,
                split_output(examples, split.name, f"data-{index:05d}-of-{len(files):05d}.tfrecord"),
                split.name not in unlabelled,
            )
            for index, path in enumerate(files)
        ]
    return imports


def _sum_counters(counters: Iterable[collections.Counter]) -> collections.Counter:
    return sum(counters, collections.Counter())


class Executor(base_beam_executor.BaseBeamExecutor):
    """Imports serialized records unchanged after validating them; records `split_counts` on the output."""

    def Do(  # noqa: N802 (TFX API)
        self,
        input_dict: dict[str, list[artifact.Artifact]],
        output_dict: dict[str, list[artifact.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        examples = output_dict[standard_component_specs.EXAMPLES_KEY][0]
        payload_format = exec_properties[standard_component_specs.OUTPUT_DATA_FORMAT_KEY]
        level = LEVEL_OF_PAYLOAD_FORMAT[payload_format]
        imports = file_imports(exec_properties, examples)
        splits = list(dict.fromkeys(job.split for job in imports))
        for split in splits:
            tf.io.gfile.makedirs(os.path.dirname(split_output(examples, split, "")))
        counts_path = os.path.join(examples.uri, _COUNTS_FILE)
        with self._make_beam_pipeline() as pipeline:
            _ = (
                pipeline
                | "Files" >> beam.Create(imports)  # reshuffled: the files spread over the workers
                | "Import" >> beam.Map(import_file, level, exec_properties["num_classes"])
                | "Count"
                >> beam.CombineGlobally(_sum_counters).without_defaults()  # never empty: files exist
                | "WriteCounts" >> beam.Map(lambda counts: write_json(counts_path, dict(counts)))
            )
        counts = read_json(counts_path)
        tf.io.gfile.remove(counts_path)
        examples.split_names = standard_artifact_utils.encode_split_names(splits)
        examples.set_json_value_custom_property(SPLIT_COUNTS, {split: counts[split] for split in splits})
        examples_utils.set_payload_format(examples, payload_format)
