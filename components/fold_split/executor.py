"""Executor of FoldSplit (Beam): validate, assign, check duplicates, write splits and their statistics."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import numpy as np
import tensorflow as tf
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_beam_executor
from tfx.types import artifact, standard_artifact_utils

from components.splits import HOLDOUT, examples_level, split_files, write_split
from components.uri_io import read_json, write_json
from trainer.readers import read_records
from trainer.records import InputDataError, VideoRecord, decoder_for

log = logging.getLogger(__name__)
_SUMMARY_FILE = "fold_summary.json"
_FINGERPRINT_MODULUS = 2**64


def fold_names(num_folds: int) -> list[str]:
    return [f"fold_{fold}" for fold in range(num_folds)]


def _unit_hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def assign_split(video_id: str, seed: int, num_folds: int, holdout_fraction: float) -> str:
    """The split of a labelled video: a pure function of (seed, video id), identical for every layout."""
    position = _unit_hash(f"{seed}:{video_id}") / _FINGERPRINT_MODULUS
    if position < holdout_fraction:
        return HOLDOUT
    fold = int((position - holdout_fraction) / (1.0 - holdout_fraction) * num_folds)
    return f"fold_{min(fold, num_folds - 1)}"


class _SplitStats(beam.CombineFn):
    """Per output split: number of videos, of labels, and of videos per class."""

    def __init__(self, num_classes: int) -> None:
        self._num_classes = num_classes

    def create_accumulator(self) -> tuple[int, np.ndarray]:
        return 0, np.zeros(self._num_classes, np.int64)

    def add_input(self, accumulator: tuple[int, np.ndarray], labels: tuple[int, ...] | None):
        videos, class_counts = accumulator
        if labels:
            class_counts[list(labels)] += 1
        return videos + 1, class_counts

    def merge_accumulators(self, accumulators):
        videos, class_counts = self.create_accumulator()
        for count, counts in accumulators:
            videos += count
            class_counts += counts
        return videos, class_counts

    def extract_output(self, accumulator) -> dict[str, Any]:
        videos, class_counts = accumulator
        return {
            "videos": int(videos),
            "labels": int(class_counts.sum()),
            "classes_with_positives": int((class_counts > 0).sum()),
        }


def _raise_on_duplicates(video_id: str, input_splits: list[str]) -> None:
    if len(input_splits) > 1:
        raise InputDataError(
            f"video id '{video_id}' appears {len(input_splits)} times in the input "
            f"(splits: {', '.join(sorted(input_splits))})"
        )


def _decode(serialized: bytes, path: str, decode, num_classes: int, labelled: bool) -> VideoRecord:
    try:
        return decode(serialized, num_classes, labelled)
    except InputDataError as error:
        raise InputDataError(f"{path}: {error}") from None


def _read_split_file(
    split_and_path: tuple[str, str], decode, num_classes: int, unlabelled: set[str]
) -> Iterator[tuple[str, VideoRecord, bytes]]:
    """(input split, decoded record, serialized record) for every record of one input file, in file order."""
    split, path = split_and_path
    for serialized in read_records([path]).as_numpy_iterator():
        yield split, _decode(serialized, path, decode, num_classes, split not in unlabelled), serialized


def _write_summary(stats: list[tuple[str, dict]], fingerprint: int, path: str) -> None:
    write_json(path, {"splits": dict(sorted(stats)), "fold_map_fingerprint": f"{fingerprint:016x}"})


def _check_split_sizes(
    uri: str, split_stats: dict[str, dict], num_folds: int, holdout_fraction: float, num_classes: int
) -> None:
    """An empty fold (or holdout) is an error; a fold without positives of some class is only a warning:
    its model learns that class from the other folds' positives, and GAP ignores classes without positives."""
    expected = [*fold_names(num_folds), *([HOLDOUT] if holdout_fraction > 0 else [])]
    empty = [split for split in expected if split_stats.get(split, {}).get("videos", 0) == 0]
    if empty:
        labelled = sum(split_stats.get(split, {}).get("videos", 0) for split in expected)
        raise InputDataError(
            f"{uri}: {', '.join(empty)} got no videos: {labelled} labelled videos are too few for "
            f"folds.num_folds={num_folds} and folds.holdout_fraction={holdout_fraction}"
        )
    for split in expected:
        missing = num_classes - split_stats[split]["classes_with_positives"]
        if missing:
            log.warning(
                "%s: %s has no positive video for %d of %d classes (see its label_coverage)",
                uri,
                split,
                missing,
                num_classes,
            )


class Executor(base_beam_executor.BaseBeamExecutor):
    def Do(  # noqa: N802 (TFX API)
        self,
        input_dict: dict[str, list[artifact.Artifact]],
        output_dict: dict[str, list[artifact.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        examples = input_dict["examples"][0]
        output = output_dict["split_examples"][0]
        num_folds, seed = exec_properties["num_folds"], exec_properties["seed"]
        holdout_fraction = exec_properties["holdout_fraction"]
        reference = (input_dict.get("fold_reference") or [None])[0]
        if reference is not None:  # the frame-level split reuses the video-level settings
            num_folds = reference.get_int_custom_property("num_folds")
            seed = reference.get_int_custom_property("seed")
            holdout_fraction = reference.get_float_custom_property("holdout_fraction")
        num_classes = exec_properties["num_classes"]
        unlabelled = set(filter(None, exec_properties["unlabelled_splits"].split(",")))
        payload_format = examples_utils.get_payload_format(examples)
        decode = decoder_for(examples_level(examples))
        input_splits = standard_artifact_utils.decode_split_names(examples.split_names)
        labelled_splits = [split for split in input_splits if split not in unlabelled]
        if not labelled_splits:
            raise InputDataError(f"{examples.uri}: no labelled split among {input_splits}")
        output_splits = [*fold_names(num_folds), HOLDOUT, *[s for s in input_splits if s in unlabelled]]

        def route(record: tuple[str, VideoRecord, bytes]) -> str:
            split, video, _ = record
            if split in unlabelled:
                return split
            return assign_split(video.video_id, seed, num_folds, holdout_fraction)

        summary_path = os.path.join(output.uri, _SUMMARY_FILE)
        with self._make_beam_pipeline() as pipeline:
            # One ordered read of every input file (no Flatten, no reshuffle): the record order of each
            # output split, and so what a seeded L1 model trains on, does not change from run to run.
            input_files = [
                (split, path)
                for split in input_splits
                for path in sorted(tf.io.gfile.glob(split_files(examples, split)))
            ]
            records = (
                pipeline
                | "ListFiles" >> beam.Create(input_files, reshuffle=False)
                | "ReadInOrder" >> beam.FlatMap(_read_split_file, decode, num_classes, unlabelled)
            )
            _ = (
                records
                | "KeyById" >> beam.Map(lambda r: (r[1].video_id, r[0]))
                | "GroupById" >> beam.GroupByKey()
                | "CheckDuplicates"
                >> beam.MapTuple(lambda vid, splits: _raise_on_duplicates(vid, list(splits)))
            )
            routed = records | "Route" >> beam.Map(lambda r: (route(r), r))
            stats = (
                routed
                | "LabelsBySplit" >> beam.MapTuple(lambda split, r: (split, r[1].labels))
                | "Stats" >> beam.CombinePerKey(_SplitStats(num_classes))
                | "CollectStats" >> beam.combiners.ToList()
            )
            fingerprint = (
                routed
                | "HashAssignment" >> beam.MapTuple(lambda split, r: _unit_hash(f"{r[1].video_id}|{split}"))
                | "SumHashes" >> beam.CombineGlobally(lambda hashes: sum(hashes) % _FINGERPRINT_MODULUS)
            )
            _ = stats | "WriteSummary" >> beam.Map(
                _write_summary, beam.pvalue.AsSingleton(fingerprint), summary_path
            )
            by_split = routed | "Partition" >> beam.Partition(
                lambda item, _: output_splits.index(item[0]), len(output_splits)
            )
            for split, part in zip(output_splits, by_split, strict=True):
                _ = (
                    part
                    | f"Serialize[{split}]" >> beam.MapTuple(lambda _, r: r[2])
                    | f"Write[{split}]" >> write_split(output, split, "data")
                )

        summary = read_json(summary_path)
        if reference is not None:
            expected = reference.get_string_custom_property("fold_map_fingerprint")
            if summary["fold_map_fingerprint"] != expected:
                raise InputDataError(
                    f"{examples.uri}: the fold map of these examples differs from the reference's "
                    f"({reference.uri}): the two layouts do not hold the same videos"
                )
        split_stats = summary["splits"]
        _check_split_sizes(examples.uri, split_stats, num_folds, holdout_fraction, num_classes)
        output.split_names = standard_artifact_utils.encode_split_names(output_splits)
        examples_utils.set_payload_format(output, payload_format)
        output.set_json_value_custom_property(
            "split_counts", {split: split_stats.get(split, {}).get("videos", 0) for split in output_splits}
        )
        output.set_json_value_custom_property(
            "label_coverage",
            {
                split: split_stats.get(split, {}).get("classes_with_positives", 0) / num_classes
                for split in output_splits
                if split not in unlabelled
            },
        )
        output.set_string_custom_property("fold_map_fingerprint", summary["fold_map_fingerprint"])
        output.set_int_custom_property("num_folds", num_folds)
        output.set_float_custom_property("holdout_fraction", holdout_fraction)
        output.set_int_custom_property("seed", seed)
