"""Synthetic YouTube-8M-format data: learnable, realistic, deterministic for a seed, streamed to disk.

Layout written under `out`:
  video/{train,validate,test}NNNN.tfrecord   video-level tf.train.Example
  frame/{train,validate,test}NNNN.tfrecord   frame-level tf.train.SequenceExample (same videos)
  test_truth.csv                             VideoId,Labels: the observed (noisy) labels of the test videos
  oracle.jsonl                               per video: latent true classes, planted label probabilities
  synth.json                                 settings, split sizes, frame-local classes, the noise model and
                                             the oracle GAP@20 of the test split

How a video is made: its true classes are drawn with Zipf-like frequencies (1 + Poisson(2) of them, ~3 on
average). Each class has an rgb and an audio prototype built from a shared "topic" direction plus a class
direction, so classes of a topic get confused. Every frame is a video-specific background (low-rank, does not
average out) plus frame noise plus the prototypes of the video's classes. A "frame-local" class puts its
evidence, strongly, into only a few frames: mean pooling dilutes it, max/attention pooling finds it.

Label noise, in every split (test_truth.csv holds observed labels too), from independent events per class:
  * missing: a true class c goes unlabelled with probability m_c, higher for tail and frame-local classes;
  * confusion: each class has a few "confusers" in its topic; each confuser d of a true class is labelled
    with probability `confusion_rate`;
  * background: any class d is labelled with probability b_d = spurious_label_rate * frequency(d).
So P(d observed | true classes T) = 1 - (1 - [d in T](1 - m_d)) (1 - b_d) (1 - confusion_rate)^n_d, n_d the
number of classes of T that have d as a confuser. oracle.jsonl holds these for every class above b_d. They are
the best scores a model that knew T could give (calibrated across videos, as pooled GAP needs); their GAP,
the "oracle GAP", is what no model can beat in expectation.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from trainer import features as F
from trainer.config_schema import ConfigError
from trainer.metrics import gap_from_candidates, top_k
from trainer.records import InputDataError

log = logging.getLogger(__name__)

_ID_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_ID_SPACE = len(_ID_ALPHABET) ** 6
_ID_MULTIPLIER = 2_147_483_647  # prime, coprime with 62**6: index -> id is a bijection
ORACLE_FILE = "oracle.jsonl"
SUMMARY_FILE = "synth.json"
_ORACLE_CHUNK = 1000  # videos scored densely at once by `oracle_gap`


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
    signal: float = 0.05
    frame_local_fraction: float = 0.2
    frame_local_frames: int = 2
    frame_local_signal: float = 0.9
    background: float = 0.35
    noise: float = 0.5
    missing_label_rate: float = 0.05
    missing_tail_rate: float = 0.1
    missing_frame_local_rate: float = 0.1
    confusers_per_class: int = 3
    confusion_rate: float = 0.04
    spurious_label_rate: float = 0.04

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
        missing = (self.missing_label_rate, self.missing_tail_rate, self.missing_frame_local_rate)
        if min(missing) < 0 or sum(missing) >= 1:
            raise ConfigError(
                "synth: missing_label_rate, missing_tail_rate and missing_frame_local_rate must be >= 0 "
                "and sum to less than 1"
            )
        if not (0 <= self.confusion_rate < 1 and 0 <= self.spurious_label_rate <= 1):
            raise ConfigError("synth: confusion_rate must be in [0, 1) and spurious_label_rate in [0, 1]")
        if self.confusers_per_class < 0 or self.topics < 1:
            raise ConfigError("synth: confusers_per_class >= 0 and topics >= 1 are required")


def video_id(index: int) -> str:
    """A unique 6-character YouTube-8M-like id for a video index."""
    code = (index * _ID_MULTIPLIER + 12345) % _ID_SPACE
    chars = []
    for _ in range(6):
        code, digit = divmod(code, len(_ID_ALPHABET))
        chars.append(_ID_ALPHABET[digit])
    return "".join(chars)


class _World:
    """Class frequencies, prototypes and the label noise model shared by all videos of a seed."""

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
        # Label noise: P(true class missed), P(class labelled at random), each class's confusers in its topic.
        self.missing_probs = (
            cfg.missing_label_rate
            + cfg.missing_tail_rate * ranks / (cfg.classes - 1)
            + cfg.missing_frame_local_rate * self.frame_local
        )
        self.background_probs = cfg.spurious_label_rate * self.class_probs
        self.confusion_rate = cfg.confusion_rate
        confusion_rng = np.random.default_rng([cfg.seed, 2])
        self.confusers = np.full((cfg.classes, cfg.confusers_per_class), -1, dtype=np.int64)
        for topic in range(cfg.topics):  # each class: a random choice of other classes of its topic
            members = np.flatnonzero(topic_of_class == topic)
            keys = confusion_rng.random((members.size, members.size))
            np.fill_diagonal(keys, np.inf)
            chosen = np.argsort(keys, axis=1)[:, : min(cfg.confusers_per_class, max(members.size - 1, 0))]
            self.confusers[members, : chosen.shape[1]] = members[chosen]

    def observe(self, true: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The observed labels of a video with true classes `true`: kept, confused and background labels."""
        kept = true[rng.random(true.size) >= self.missing_probs[true]]
        confusers = self.confusers[true]
        confused = confusers[(rng.random(confusers.shape) < self.confusion_rate) & (confusers >= 0)]
        background = np.flatnonzero(rng.random(self.background_probs.size) < self.background_probs)
        return np.unique(np.concatenate([kept, confused, background]).astype(np.int64))

    def label_probs(self, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(classes, P(observed | true)) for every class whose probability exceeds its background rate."""
        confusers = self.confusers[true]
        confusers = confusers[confusers >= 0]
        classes = np.unique(np.concatenate([true, confusers]))
        not_observed = 1.0 - self.background_probs[classes]
        not_observed[np.searchsorted(classes, true)] *= self.missing_probs[true]
        times_confused = np.bincount(np.searchsorted(classes, confusers), minlength=classes.size)
        not_observed *= (1.0 - self.confusion_rate) ** times_confused
        return classes, 1.0 - not_observed

    def noise_model(self) -> dict:
        """The per-class noise parameters, as saved in synth.json."""
        return {
            "missing_probs": self.missing_probs.tolist(),
            "background_probs": self.background_probs.tolist(),
            "confusers": [row[row >= 0].tolist() for row in self.confusers],
            "confusion_rate": self.confusion_rate,
        }


@dataclass
class SyntheticVideo:
    """One generated video: its id, observed labels, quantised frames [T, 1152] and latent true classes."""

    video_id: str
    labels: np.ndarray
    quantized_frames: np.ndarray
    true_classes: np.ndarray | None = None


def generate_videos(cfg: SynthConfig, start: int, count: int) -> Iterator[SyntheticVideo]:
    """Videos start..start+count-1; each video has its own random stream, so sharding never changes it."""
    return _generate(cfg, _World(cfg), start, count)


def _generate(cfg: SynthConfig, world: _World, start: int, count: int) -> Iterator[SyntheticVideo]:
    dims = F.RGB_SIZE + F.AUDIO_SIZE
    for index in range(start, start + count):
        rng = np.random.default_rng([cfg.seed, 1, index])
        n_labels = min(1 + rng.poisson(cfg.mean_extra_labels), cfg.classes)
        true = np.sort(rng.choice(cfg.classes, size=n_labels, replace=False, p=world.class_probs))
        length = int(rng.integers(max(1, cfg.frames // 2), cfg.frames + 1))
        style = rng.standard_normal(16).astype(np.float32) @ world.background_basis
        frames = world.video_bias + style + cfg.noise * rng.standard_normal((length, dims)).astype(np.float32)
        frames += world.prototypes[true[~world.frame_local[true]]].sum(axis=0)
        for cls in true[world.frame_local[true]]:
            hits = rng.choice(length, size=min(cfg.frame_local_frames, length), replace=False)
            frames[hits] += world.prototypes[cls] * (cfg.frame_local_signal / cfg.signal)
        yield SyntheticVideo(video_id(index), world.observe(true, rng), F.quantize(frames), true)


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
    """Write every shard of every layout, the test ground truth and the planted label probabilities; returns
    the summary it also saves (synth.json, written last)."""
    import tensorflow as tf

    from trainer.submission import read_truth

    out = Path(out)
    for layout in cfg.layouts:
        (out / layout).mkdir(parents=True, exist_ok=True)
    world = _World(cfg)
    counts: dict[str, int] = {}
    observed_total = true_total = true_observed = 0
    with open(out / "test_truth.csv", "w", newline="") as truth_file, open(out / ORACLE_FILE, "w") as oracle:
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
                for video in _generate(cfg, world, shard_start, shard_count):
                    observed_total += video.labels.size
                    true_total += video.true_classes.size
                    true_observed += len(set(video.true_classes.tolist()) & set(video.labels.tolist()))
                    if "video" in writers:
                        writers["video"].write(video_example(video, labelled))
                    if "frame" in writers:
                        writers["frame"].write(frame_example(video, labelled))
                    if not labelled:
                        truth.writerow([video.video_id, " ".join(str(c) for c in video.labels)])
                    classes, probs = world.label_probs(video.true_classes)
                    row = {"id": video.video_id, "split": split, "true": video.true_classes.tolist()}
                    oracle.write(json.dumps({**row, "classes": classes.tolist(), "probs": probs.tolist()}))
                    oracle.write("\n")
                for writer in writers.values():
                    writer.close()
                log.info("synth: wrote %s shard %d (%d videos)", split, shard, shard_count)
    summary = {
        "config": asdict(cfg),
        "split_videos": counts,
        "mean_labels_per_video": observed_total / cfg.videos,
        "mean_true_classes_per_video": true_total / cfg.videos,
        "observed_label_precision": true_observed / max(observed_total, 1),
        "true_class_recall": true_observed / true_total,
        "frame_local_classes": np.flatnonzero(world.frame_local).tolist(),
        "noise_model": world.noise_model(),
        "oracle": {"file": ORACLE_FILE},
    }
    test_truth = read_truth(out / "test_truth.csv")
    if test_truth:
        summary["oracle"]["test_gap"] = _oracle_gap(out / ORACLE_FILE, world.background_probs, test_truth)
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=1))
    return summary


def _read_planted(path: Path, video_ids: Sequence[str]) -> dict[str, tuple[list[int], list[float]]]:
    """video id -> (classes, planted probabilities) from oracle.jsonl for the given ids (all must exist)."""
    wanted = set(video_ids)
    planted = {}
    with open(path) as handle:
        for line_number, line in enumerate(handle, 1):
            try:
                row = json.loads(line)
                if row["id"] in wanted:
                    planted[row["id"]] = (list(row["classes"]), list(row["probs"]))
            except (ValueError, KeyError, TypeError):
                raise InputDataError(
                    f"{path}: line {line_number}: expected a JSON object with id, classes and probs"
                ) from None
    missing = sorted(wanted - planted.keys())
    if missing:
        raise InputDataError(
            f"{path}: no planted label probabilities for video {missing[0]} ({len(missing)} ids missing)"
        )
    return planted


def _dense_scores(
    planted: Mapping[str, tuple[list[int], list[float]]], background: np.ndarray, video_ids: Sequence[str]
) -> np.ndarray:
    scores = np.tile(background.astype(np.float32), (len(video_ids), 1))
    for row, vid in enumerate(video_ids):
        classes, probs = planted[vid]
        scores[row, classes] = probs
    return scores


def _background_probs(data_dir: Path) -> np.ndarray:
    path = Path(data_dir) / SUMMARY_FILE
    try:
        return np.asarray(json.loads(path.read_text())["noise_model"]["background_probs"], dtype=np.float64)
    except (ValueError, KeyError, TypeError):
        raise InputDataError(f"{path}: not a synth.json with noise_model.background_probs") from None


def oracle_scores(data_dir: str | Path, video_ids: Sequence[str]) -> np.ndarray:
    """Planted P(class observed | latent true classes) of the given videos, float32 [len(video_ids), classes].

    Reads `data_dir`/oracle.jsonl (classes above their background rate) and the background rates of
    synth.json (every other class).
    """
    planted = _read_planted(Path(data_dir) / ORACLE_FILE, video_ids)
    return _dense_scores(planted, _background_probs(Path(data_dir)), video_ids)


def oracle_gap(data_dir: str | Path, labels: Mapping[str, Sequence[int]], k: int = 20) -> float:
    """GAP@k of the oracle scores of the videos in `labels` (video id -> observed class ids) against them."""
    return _oracle_gap(Path(data_dir) / ORACLE_FILE, _background_probs(Path(data_dir)), labels, k)


def _oracle_gap(
    path: Path, background: np.ndarray, labels: Mapping[str, Sequence[int]], k: int = 20
) -> float:
    """`oracle_gap` in chunks: each video's top k from its dense scores, pooled (memory ~ k per video)."""
    ids = list(labels)
    planted = _read_planted(path, ids)
    num_classes = background.size
    rows: list[tuple[np.ndarray, ...]] = []
    for start in range(0, len(ids), _ORACLE_CHUNK):
        chunk = ids[start : start + _ORACLE_CHUNK]
        truth = np.zeros((len(chunk), num_classes), dtype=bool)
        for row, vid in enumerate(chunk):
            classes = np.asarray(labels[vid], dtype=np.int64)
            if classes.size and (classes.min() < 0 or classes.max() >= num_classes):
                raise InputDataError(f"video {vid}: labels outside [0, {num_classes}): {classes.tolist()}")
            truth[row, classes] = True
        classes, values = top_k(_dense_scores(planted, background, chunk), k)
        videos = np.repeat(np.arange(start, start + len(chunk)), classes.shape[1])
        rows.append((videos, classes.ravel(), values.ravel(), np.take_along_axis(truth, classes, 1).ravel()))
    if not rows:
        return 0.0
    num_true_labels = sum(len(set(classes)) for classes in labels.values())
    pooled = (np.concatenate(part) for part in zip(*rows, strict=True))
    return gap_from_candidates(*pooled, num_true_labels, k)
