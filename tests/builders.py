"""Hand-made YouTube-8M records, good and broken, for the validation tests."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from pipeline.synth import SyntheticVideo, frame_example, video_example
from trainer.readers import read_records


def video(video_id: str = "vid001", labels=(1, 4), frames: int = 3, seed: int = 0) -> SyntheticVideo:
    rng = np.random.default_rng(seed)
    quantized = rng.integers(0, 256, size=(frames, 1152), dtype=np.uint8)
    return SyntheticVideo(video_id, np.asarray(labels, dtype=np.int64), quantized)


def video_proto(**kwargs) -> tf.train.Example:
    return tf.train.Example.FromString(video_example(video(**kwargs), with_labels=True))


def frame_proto(**kwargs) -> tf.train.SequenceExample:
    return tf.train.SequenceExample.FromString(frame_example(video(**kwargs), with_labels=True))


def write_tfrecord(path, records: list[bytes]) -> None:
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)


def truncate(path) -> None:
    """Cut a file in the middle: its first half is left."""
    with tf.io.gfile.GFile(str(path), "rb") as handle:
        data = handle.read()
    with tf.io.gfile.GFile(str(path), "wb") as handle:
        handle.write(data[: len(data) // 2])


def per_video_examples(root, splits: dict[str, list[str]], lost=()):
    """An Examples artifact at `root` holding a labelled video record per id of each split, one file per
    video, with the fold split's `split_counts` recorded; the files of the `lost` videos are gone."""
    from tfx.types import standard_artifact_utils, standard_artifacts

    examples = standard_artifacts.Examples()
    examples.uri = str(root)
    examples.split_names = standard_artifact_utils.encode_split_names(list(splits))
    examples.set_json_value_custom_property("split_counts", {s: len(ids) for s, ids in splits.items()})
    for split, ids in splits.items():
        (root / f"Split-{split}").mkdir(parents=True)
        for video_id in set(ids) - set(lost):
            write_tfrecord(
                root / f"Split-{split}" / f"{video_id}.tfrecord", [video_example(video(video_id), True)]
            )
    return examples


def split_artifact(artifact, root, splits: dict[str, list[bytes]]):
    """`artifact` at `root` with one GZIP TFRecord file per split (`Split-<name>/part.gz`); returns it."""
    from tfx.types import standard_artifact_utils

    artifact.uri = str(root)
    artifact.split_names = standard_artifact_utils.encode_split_names(list(splits))
    for split, records in splits.items():
        (root / f"Split-{split}").mkdir(parents=True)
        with tf.io.TFRecordWriter(str(root / f"Split-{split}" / "part.gz"), "GZIP") as writer:
            for record in records:
                writer.write(record)
    return artifact


def read_split(uri, split: str) -> list[bytes]:
    """Every record of `Split-<split>` of an artifact directory (TFRecords; *.gz read as GZIP)."""
    files = tf.io.gfile.glob(f"{uri}/Split-{split}/*")
    return [record.numpy() for record in read_records(files)]


def transform_graph(root, splits: dict[str, list[bytes]], num_folds: int) -> str:
    """Runs the pipeline's Transform (VideoSchema, then TFX's Transform executor with the pipeline's
    preprocessing_fn and splits config) on an Examples artifact of video-level `splits` (fold_0..fold_{k-1}
    among them) under `root`; returns the transform graph's URI."""
    from tfx.components.transform.executor import Executor
    from tfx.components.util import examples_utils
    from tfx.proto import example_gen_pb2
    from tfx.types import standard_artifacts
    from tfx.utils import proto_utils

    from components.video_schema.executor import Executor as VideoSchemaExecutor
    from pipeline.pipeline import transform_splits_config
    from trainer.transform import PREPROCESSING_FN

    examples = split_artifact(standard_artifacts.Examples(), root / "examples", splits)
    examples_utils.set_payload_format(examples, example_gen_pb2.FORMAT_TF_EXAMPLE)
    schema, graph = standard_artifacts.Schema(), standard_artifacts.TransformGraph()
    schema.uri, graph.uri = str(root / "schema"), str(root / "transform_graph")
    tf.io.gfile.makedirs(schema.uri)
    VideoSchemaExecutor().Do({}, {"schema": [schema]}, {})
    Executor().Do(
        {"examples": [examples], "schema": [schema]},
        {"transform_graph": [graph]},
        {
            "preprocessing_fn": PREPROCESSING_FN,
            "splits_config": proto_utils.proto_to_json(transform_splits_config(num_folds)),
            "disable_statistics": 1,
            "force_tf_compat_v1": 0,
        },
    )
    return graph.uri
