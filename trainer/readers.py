"""tf.data readers: one parsing function per YouTube-8M layout, plus the dataset builder the trainers use."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from trainer import features as F
from trainer.file_errors import file_error_message
from trainer.records import InputDataError
from trainer.tfrecord import record_runs

VIDEO_FEATURE_SPEC = {
    F.ID: tf.io.FixedLenFeature([], tf.string),
    F.MEAN_RGB: tf.io.FixedLenFeature([F.RGB_SIZE], tf.float32),
    F.MEAN_AUDIO: tf.io.FixedLenFeature([F.AUDIO_SIZE], tf.float32),
    F.LABELS: tf.io.VarLenFeature(tf.int64),
}
FRAME_CONTEXT_SPEC = {
    F.ID: tf.io.FixedLenFeature([], tf.string),
    F.LABELS: tf.io.VarLenFeature(tf.int64),
}
FRAME_SEQUENCE_SPEC = {
    F.FRAME_RGB: tf.io.FixedLenSequenceFeature([], tf.string),
    F.FRAME_AUDIO: tf.io.FixedLenSequenceFeature([], tf.string),
}


def dequantize(quantized: tf.Tensor) -> tf.Tensor:
    """uint8 -> float32 with the official formula q * 4/255 + 4/512 - 2."""
    return tf.cast(quantized, tf.float32) * F.QUANTIZATION_STEP + F.QUANTIZATION_BIAS


def multi_hot(labels: tf.SparseTensor, num_classes: int) -> tf.Tensor:
    """Sparse class ids [B, ?] -> float32 multi-hot [B, num_classes]."""
    dense_shape = tf.stack([labels.dense_shape[0], tf.cast(num_classes, tf.int64)])
    ids = tf.SparseTensor(labels.indices, labels.values, dense_shape)
    return tf.cast(tf.sparse.to_indicator(ids, num_classes), tf.float32)


def parse_video_examples(serialized: tf.Tensor, num_classes: int) -> dict[str, tf.Tensor]:
    """A batch of serialized video-level tf.train.Example -> id, mean_rgb, mean_audio, multi-hot labels."""
    parsed = tf.io.parse_example(serialized, VIDEO_FEATURE_SPEC)
    parsed[F.LABELS] = multi_hot(parsed[F.LABELS], num_classes)
    return parsed


def parse_frame_example(serialized: tf.Tensor, num_classes: int, max_frames: int) -> dict[str, tf.Tensor]:
    """One serialized frame-level tf.train.SequenceExample -> id, rgb [T,1024], audio [T,128], mask [T],
    num_frames and multi-hot labels, with frames truncated or zero-padded to T = max_frames."""
    context, sequences = tf.io.parse_single_sequence_example(
        serialized, FRAME_CONTEXT_SPEC, FRAME_SEQUENCE_SPEC
    )
    num_frames = tf.minimum(tf.shape(sequences[F.FRAME_RGB])[0], max_frames)
    parsed = {F.ID: context[F.ID], F.NUM_FRAMES: num_frames}
    for name, size in ((F.FRAME_RGB, F.RGB_SIZE), (F.FRAME_AUDIO, F.AUDIO_SIZE)):
        frames = tf.reshape(tf.io.decode_raw(sequences[name][:max_frames], tf.uint8), [-1, size])
        frames = dequantize(frames)
        parsed[name] = tf.pad(frames, [[0, max_frames - num_frames], [0, 0]])
        parsed[name].set_shape([max_frames, size])
    parsed[F.MASK] = tf.sequence_mask(num_frames, max_frames, dtype=tf.float32)
    labels = tf.sparse.reshape(context[F.LABELS], [1, -1])
    parsed[F.LABELS] = multi_hot(labels, num_classes)[0]
    return parsed


@dataclass(frozen=True)
class RecordKeys:
    """What routing a batch of records needs: each record's video id (UTF-8 bytes) and the batch's class
    ids, flat, with the row of each."""

    ids: np.ndarray
    labels: np.ndarray
    label_rows: np.ndarray


def keys_of_parsed(parsed: dict[str, tf.Tensor]) -> RecordKeys:
    """The keys of a batch parsed with the specs above (video-level features or frame-level context)."""
    labels = parsed[F.LABELS]
    return RecordKeys(parsed[F.ID].numpy(), labels.values.numpy(), labels.indices.numpy()[:, 0])


def ids_and_labels(batch: np.ndarray, level: str) -> RecordKeys:
    """The keys of a batch of validated records of `level`, parsed in one op (frame-level records: the
    context only, never the frames)."""
    if level == "video":
        spec = {F.ID: VIDEO_FEATURE_SPEC[F.ID], F.LABELS: VIDEO_FEATURE_SPEC[F.LABELS]}
        return keys_of_parsed(tf.io.parse_example(batch, spec))
    return keys_of_parsed(tf.io.parse_sequence_example(batch, FRAME_CONTEXT_SPEC)[0])


def _compression_of(path: tf.Tensor) -> tf.Tensor:
    return tf.where(tf.strings.regex_full_match(path, r".*\.gz"), "GZIP", "")


def read_records(files: Sequence[str], parallel_reads: int = 1) -> tf.data.Dataset:
    """Serialized records of `files`, file after file (or `parallel_reads` files interleaved, in a fixed
    order); names ending in .gz are read as GZIP."""
    parallel = {"num_parallel_calls": tf.data.AUTOTUNE, "deterministic": True} if parallel_reads > 1 else {}
    return tf.data.Dataset.from_tensor_slices(list(files)).interleave(
        lambda path: tf.data.TFRecordDataset(path, compression_type=_compression_of(path)),
        cycle_length=max(1, min(parallel_reads, len(files))),
        **parallel,
    )


def file_records(path: str) -> Iterator[bytes]:
    """The serialized records of one TFRecord file (.gz read as GZIP); a file cut in the middle or corrupted
    fails naming it and the last good record (TF's own error names no file).

    Not read with tf.data: a tf.data pipeline costs ~70 ms to build and run per file, about as much as 1,000
    video-level records take to read this way."""
    if not path.endswith(".gz"):
        for run in record_runs(path):
            yield from run
        return
    records = 0
    try:
        for record in tf.compat.v1.io.tf_record_iterator(path, tf.io.TFRecordOptions("GZIP")):
            yield record
            records += 1
    except tf.errors.DataLossError as error:
        raise InputDataError(
            f"{path}: corrupted or truncated TFRecord after record {records}: {file_error_message(error)}"
        ) from None


def file_batches(path: str, batch_size: int = 256) -> Iterator[np.ndarray]:
    """Batches of the records of one TFRecord file (`file_records`)."""
    batch: list[bytes] = []
    for record in file_records(path):
        batch.append(record)
        if len(batch) == batch_size:
            yield np.array(batch, dtype=object)
            batch = []
    if batch:
        yield np.array(batch, dtype=object)


def make_dataset(
    file_patterns: Sequence[str],
    level: str,
    num_classes: int,
    batch_size: int,
    max_frames: int = F.MAX_FRAMES,
    shuffle_seed: int | None = None,
    repeat: bool = False,
    drop_remainder: bool = False,
) -> tf.data.Dataset:
    """Batches of parsed features from TFRecord files of one layout ("video" or "frame").

    Files ending in .gz (TFX artifacts) are read as GZIP, others as plain TFRecords. Files and records are
    shuffled only when `shuffle_seed` is given, and then deterministically.
    """
    files = sorted({path for pattern in file_patterns for path in tf.io.gfile.glob(pattern)})
    if not files:
        raise FileNotFoundError(f"no TFRecord files match {list(file_patterns)}")
    dataset = tf.data.Dataset.from_tensor_slices(files)
    if shuffle_seed is not None:
        dataset = dataset.shuffle(len(files), seed=shuffle_seed)
    dataset = dataset.interleave(
        lambda path: tf.data.TFRecordDataset(path, compression_type=_compression_of(path)),
        cycle_length=min(4, len(files)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    if shuffle_seed is not None:
        dataset = dataset.shuffle(10 * batch_size, seed=shuffle_seed)
    if repeat:
        dataset = dataset.repeat()
    if level == "video":
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
        dataset = dataset.map(
            lambda s: parse_video_examples(s, num_classes), num_parallel_calls=tf.data.AUTOTUNE
        )
    elif level == "frame":
        dataset = dataset.map(
            lambda s: parse_frame_example(s, num_classes, max_frames), num_parallel_calls=tf.data.AUTOTUNE
        )
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    else:
        raise ValueError(f"level must be 'video' or 'frame', got {level!r}")
    return dataset.prefetch(tf.data.AUTOTUNE)
