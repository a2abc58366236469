"""Executor of YT8MExampleGen: reads each TFRecord file, validates every record, names the file on errors."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import tensorflow as tf
from tfx.components.example_gen import base_example_gen_executor
from tfx.proto import example_gen_pb2
from tfx.types import standard_component_specs
from tfx.utils import proto_utils

from components.splits import LEVEL_OF_PAYLOAD_FORMAT
from trainer.readers import file_batches
from trainer.records import InputDataError, decoder_for

_READ_BATCH = 256


def read_validated_records(path: str, level: str, num_classes: int, labelled: bool) -> Iterator[bytes]:
    """Yield the serialized records of one TFRecord file, each validated; errors name the file and record."""
    decode = decoder_for(level)
    index = 0
    for batch in file_batches(path, _READ_BATCH):
        for serialized in batch:
            try:
                decode(serialized, num_classes, labelled)
            except InputDataError as error:
                raise InputDataError(f"{path}: record {index}: {error}") from None
            yield serialized
            index += 1
    if index == 0:
        raise InputDataError(f"{path}: file holds no records")


def _split_name(exec_properties: dict[str, Any], split_pattern: str) -> str:
    input_config = example_gen_pb2.Input()
    proto_utils.json_to_proto(exec_properties[standard_component_specs.INPUT_CONFIG_KEY], input_config)
    return next(split.name for split in input_config.splits if split.pattern == split_pattern)


@beam.ptransform_fn
@beam.typehints.with_input_types(beam.Pipeline)
@beam.typehints.with_output_types(bytes)
def _ReadValidatedSplit(  # noqa: N802 (Beam PTransform naming)
    pipeline: beam.Pipeline, exec_properties: dict[str, Any], split_pattern: str
) -> beam.PCollection:
    # The directory is matched literally: `data[1]` is not the pattern that matches `data1`.
    pattern = os.path.join(
        glob.escape(exec_properties[standard_component_specs.INPUT_BASE_KEY]), split_pattern
    )
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise InputDataError(f"no input files match {pattern}")
    level = LEVEL_OF_PAYLOAD_FORMAT[exec_properties[standard_component_specs.OUTPUT_DATA_FORMAT_KEY]]
    labelled = _split_name(exec_properties, split_pattern) not in exec_properties["unlabelled_splits"].split(
        ","
    )
    num_classes = exec_properties["num_classes"]
    return (
        pipeline
        | "ListFiles" >> beam.Create(files)
        | "Reshuffle" >> beam.Reshuffle()
        | "ReadAndValidate" >> beam.FlatMap(read_validated_records, level, num_classes, labelled)
    )


class Executor(base_example_gen_executor.BaseExampleGenExecutor):
    """Imports serialized records unchanged after validating them."""

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:  # noqa: N802 (TFX API)
        return _ReadValidatedSplit
