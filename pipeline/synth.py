"""Synthetic YouTube-8M-format data: learnable, realistic, deterministic for a seed, streamed to disk.

Layout written under `out`:
  video/{train,validate,test}NNNN.tfrecord   video-level tf.train.Example
  frame/{train,validate,test}NNNN.tfrecord   frame-level tf.train.SequenceExample (same videos)
  test_truth.csv                             VideoId,Labels for the unlabelled test videos
  synth.json                                 the generation settings and which classes are frame-local

How a video is made: its true classes are drawn with Zipf-like frequencies (1 + Poisson(2) of them, ~3 on
average). Each class has an rgb and an audio prototype built from a shared "topic" direction plus a class
direction, so classes of a topic get confused. Every frame is a video-specific background (low-rank, does not
average out) plus frame noise plus the prototypes of the video's classes. A "frame-local" class puts its
evidence, strongly, into only a few frames: mean pooling dilutes it, max/attention pooling finds it. The
observed labels are noisy: true labels go missing and spurious ones appear.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from trainer import features as F
from trainer.config_schema import ConfigError

log = logging.getLogger(__name__)

_ID_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_ID_SPACE = len(_ID_ALPHABET) ** 6
_ID_MULTIPLIER = 2_147_483_647  # prime, coprime with 62**6: index -> id is a bijection


@dataclass(frozen=True)
class SynthConfig:
    """Settings of one generated data set."""

    videos: int = 3000
    classes: int = 100
    frames: int = 20
    seed: int = 0
    validate_fraction: float = 0.25
    test_fraction: float = 0.15
    videos_per_shard: int = 1000
    layouts: tuple[str, ...] = ("video", "frame")
    zipf_exponent: float = 1.0
    mean_extra_labels: float = 2.0
    topics: int = 10
    signal: float = 0.12
    frame_local_fraction: float = 0.2
    frame_local_frames: int = 2
    frame_local_signal: float = 0.9
    background: float = 0.35
    noise: float = 0.5
    missing_label_rate: float = 0.1
    spurious_label_rate: float = 0.15

    def __post_init__(self) -> None:
        if self.videos < 1 or self.classes < 2 or self.frames < 1:
            raise ConfigError("synth: --videos >= 1, --classes >= 2 and --frames >= 1 are required")
        if self.frames > F.MAX_FRAMES:
            raise ConfigError(
                f"synth: --frames must be <= {F.MAX_FRAMES} (YouTube-8M keeps at most 300 frames)"
            )
        if not 0 <= self.validate_fraction + self.test_fraction < 1:
            raise ConfigError("synth: validate and test fractions must sum to less than 1")
        unknown = set(self.layouts) - {"video", "frame"}
        if unknown or not self.layouts:
            raise ConfigError(f"synth: layouts must be a non-empty subset of video,frame; got {self.layouts}")


def video_id(index: int) -> str:
    """A unique 6-character YouTube-8M-like id for a video index."""
    code = (index * _ID_MULTIPLIER + 12345) % _ID_SPACE
    chars = []
    for _ in range(6):
        code, digit = divmod(code, len(_ID_ALPHABET))
        chars.append(_ID_ALPHABET[digit])
    return "".join(chars)


class _World:
    """Class frequencies and prototypes shared by all videos of a seed."""

    def __init__(self, cfg: SynthConfig) -> None:
        rng = np.random.default_rng([cfg.seed, 0])
        ranks = rng.permutation(cfg.classes)
        weights = 1.0 / (ranks + 1.0) ** cfg.zipf_exponent
        self.class_probs = weights / weights.sum()
        dims = F.RGB_SIZE + F.AUDIO_SIZE
        topic_of_class = rng.integers(0, cfg.topics, size=cfg.classes)
        topic_dirs = rng.standard_normal((cfg.topics, dims)).astype(np.float32)
        class_dirs = rng.standard_normal((cfg.classes, dims)).astype(np.float32)
        self.prototypes = cfg.signal * (0.6 * topic_dirs[topic_of_class] + 0.8 * class_dirs)
        n_local = int(round(cfg.frame_local_fraction * cfg.classes))
        self.frame_local = np.zeros(cfg.classes, dtype=bool)
        self.frame_local[rng.choice(cfg.classes, size=n_local, replace=False)] = True
        self.background_basis = rng.standard_normal((16, dims)).astype(np.float32) * cfg.background / 4.0
        self.video_bias = rng.standard_normal(dims).astype(np.float32) * 0.2


@dataclass
class SyntheticVideo:
    """One generated video: its id, observed labels and quantised frames [T, 1152]."""

    video_id: str
    labels: np.ndarray
    quantized_frames: np.ndarray


def generate_videos(cfg: SynthConfig, start: int, count: int) -> Iterator[SyntheticVideo]:
    """Videos start..start+count-1; each video has its own random stream, so sharding never changes it."""
    world = _World(cfg)
    dims = F.RGB_SIZE + F.AUDIO_SIZE
    for index in range(start, start + count):
        rng = np.random.default_rng([cfg.seed, 1, index])
        n_labels = min(1 + rng.poisson(cfg.mean_extra_labels), cfg.classes)
        true = rng.choice(cfg.classes, size=n_labels, replace=False, p=world.class_probs)
        length = int(rng.integers(max(1, cfg.frames // 2), cfg.frames + 1))
        style = rng.standard_normal(16).astype(np.float32) @ world.background_basis
        frames = world.video_bias + style + cfg.noise * rng.standard_normal((length, dims)).astype(np.float32)
        frames += world.prototypes[true[~world.frame_local[true]]].sum(axis=0)
        for cls in true[world.frame_local[true]]:
            hits = rng.choice(length, size=min(cfg.frame_local_frames, length), replace=False)
            frames[hits] += world.prototypes[cls] * (cfg.frame_local_signal / cfg.signal)
        kept = true[rng.random(true.size) >= cfg.missing_label_rate]
        spurious = rng.choice(
            cfg.classes, size=rng.binomial(2, cfg.spurious_label_rate / 2), p=world.class_probs
        )
        observed = np.unique(np.concatenate([kept, spurious]).astype(np.int64))
        yield SyntheticVideo(video_id(index), observed, F.quantize(frames))


def video_example(video: SyntheticVideo, with_labels: bool) -> bytes:
    """Serialized video-level tf.train.Example with the dequantised frame means."""
    import tensorflow as tf

    means = F.dequantize(video.quantized_frames).mean(axis=0)
    feature = {
        F.ID: tf.train.Feature(bytes_list=tf.train.BytesList(value=[video.video_id.encode()])),
        F.MEAN_RGB: tf.train.Feature(float_list=tf.train.FloatList(value=means[: F.RGB_SIZE])),
        F.MEAN_AUDIO: tf.train.Feature(float_list=tf.train.FloatList(value=means[F.RGB_SIZE :])),
    }
    if with_labels:
        feature[F.LABELS] = tf.train.Feature(int64_list=tf.train.Int64List(value=video.labels))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def frame_example(video: SyntheticVideo, with_labels: bool) -> bytes:
    """Serialized frame-level tf.train.SequenceExample, one uint8 bytes value per frame."""
    import tensorflow as tf

    context = {F.ID: tf.train.Feature(bytes_list=tf.train.BytesList(value=[video.video_id.encode()]))}
    if with_labels:
        context[F.LABELS] = tf.train.Feature(int64_list=tf.train.Int64List(value=video.labels))
    q = video.quantized_frames

    def frame_list(part: np.ndarray) -> tf.train.FeatureList:
        return tf.train.FeatureList(
            feature=[tf.train.Feature(bytes_list=tf.train.BytesList(value=[row.tobytes()])) for row in part]
        )

    lists = {F.FRAME_RGB: frame_list(q[:, : F.RGB_SIZE]), F.FRAME_AUDIO: frame_list(q[:, F.RGB_SIZE :])}
    return tf.train.SequenceExample(
        context=tf.train.Features(feature=context),
        feature_lists=tf.train.FeatureLists(feature_list=lists),
    ).SerializeToString()


def _split_plan(cfg: SynthConfig) -> list[tuple[str, int, int]]:
    """(split name, first video index, video count) for train / validate / test."""
    n_test = int(round(cfg.videos * cfg.test_fraction))
    n_validate = int(round(cfg.videos * cfg.validate_fraction))
    n_train = cfg.videos - n_test - n_validate
    return [("train", 0, n_train), ("validate", n_train, n_validate), ("test", n_train + n_validate, n_test)]


def write_dataset(cfg: SynthConfig, out: Path) -> dict:
    """Write every shard of every layout plus the test ground truth; returns the summary it also saves."""
    import tensorflow as tf

    out = Path(out)
    for layout in cfg.layouts:
        (out / layout).mkdir(parents=True, exist_ok=True)
    world = _World(cfg)
    counts: dict[str, int] = {}
    label_total = 0
    with open(out / "test_truth.csv", "w", newline="") as truth_file:
        truth = csv.writer(truth_file)
        truth.writerow(["VideoId", "Labels"])
        for split, first, count in _split_plan(cfg):
            counts[split] = count
            labelled = split != "test"
            for shard, shard_start in enumerate(range(first, first + count, cfg.videos_per_shard)):
                shard_count = min(cfg.videos_per_shard, first + count - shard_start)
                writers = {
                    layout: tf.io.TFRecordWriter(str(out / layout / f"{split}{shard:04d}.tfrecord"))
                    for layout in cfg.layouts
                }
                for video in generate_videos(cfg, shard_start, shard_count):
                    label_total += video.labels.size
                    if "video" in writers:
                        writers["video"].write(video_example(video, labelled))
                    if "frame" in writers:
                        writers["frame"].write(frame_example(video, labelled))
                    if not labelled:
                        truth.writerow([video.video_id, " ".join(str(c) for c in video.labels)])
                for writer in writers.values():
                    writer.close()
                log.info("synth: wrote %s shard %d (%d videos)", split, shard, shard_count)
    summary = {
        "config": asdict(cfg),
        "split_videos": counts,
        "mean_labels_per_video": label_total / cfg.videos,
        "frame_local_classes": np.flatnonzero(world.frame_local).tolist(),
    }
    (out / "synth.json").write_text(json.dumps(summary, indent=1))
    return summary
