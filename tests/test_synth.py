"""The generator writes real YouTube-8M-format records, deterministic, learnable, with a known oracle."""

from __future__ import annotations

import csv
import json
import re
from collections import Counter

import numpy as np
import pytest
import tensorflow as tf

from pipeline import cli, synth
from pipeline.synth import SynthConfig, generate_videos, oracle_gap, oracle_scores, video_id, write_dataset
from tests.conftest import TINY
from trainer import features as F
from trainer.metrics import gap_at_k
from trainer.records import InputDataError
from trainer.submission import read_truth

VIDEO_SPEC = {
    "id": tf.io.FixedLenFeature([], tf.string),
    "labels": tf.io.VarLenFeature(tf.int64),
    "mean_rgb": tf.io.FixedLenFeature([1024], tf.float32),
    "mean_audio": tf.io.FixedLenFeature([128], tf.float32),
}


def _records(path) -> list[bytes]:
    return [r.numpy() for r in tf.data.TFRecordDataset(str(path))]


def test_layout_and_names(tiny_data):
    names = sorted(p.name for p in (tiny_data / "video").iterdir())
    assert names == sorted(p.name for p in (tiny_data / "frame").iterdir())
    assert {re.fullmatch(r"(train|validate|test)\d{4}\.tfrecord", n).group(1) for n in names} == {
        "train",
        "validate",
        "test",
    }
    summary = json.loads((tiny_data / "synth.json").read_text())
    assert sum(summary["split_videos"].values()) == TINY.videos


def test_video_level_parses_with_official_feature_names(tiny_data):
    parsed = tf.io.parse_single_example(_records(tiny_data / "video" / "train0000.tfrecord")[0], VIDEO_SPEC)
    assert parsed["mean_rgb"].shape == (1024,) and parsed["mean_audio"].shape == (128,)
    labels = tf.sparse.to_dense(parsed["labels"]).numpy()
    assert labels.size >= 1 and labels.min() >= 0 and labels.max() < TINY.classes


def test_frame_level_parses_and_means_match_video_level(tiny_data):
    video_records = _records(tiny_data / "video" / "validate0000.tfrecord")
    frame_records = _records(tiny_data / "frame" / "validate0000.tfrecord")
    assert len(video_records) == len(frame_records)
    for video_bytes, frame_bytes in zip(video_records[:10], frame_records[:10], strict=True):
        video = tf.io.parse_single_example(video_bytes, VIDEO_SPEC)
        context, frames = tf.io.parse_single_sequence_example(
            frame_bytes,
            context_features={
                "id": tf.io.FixedLenFeature([], tf.string),
                "labels": tf.io.VarLenFeature(tf.int64),
            },
            sequence_features={
                "rgb": tf.io.FixedLenSequenceFeature([], tf.string),
                "audio": tf.io.FixedLenSequenceFeature([], tf.string),
            },
        )
        assert context["id"].numpy() == video["id"].numpy()
        np.testing.assert_array_equal(
            tf.sparse.to_dense(context["labels"]).numpy(), tf.sparse.to_dense(video["labels"]).numpy()
        )
        rgb = tf.io.decode_raw(frames["rgb"], tf.uint8).numpy()
        audio = tf.io.decode_raw(frames["audio"], tf.uint8).numpy()
        assert rgb.shape[1] == 1024 and audio.shape[1] == 128 and 1 <= rgb.shape[0] <= TINY.frames
        np.testing.assert_allclose(F.dequantize(rgb).mean(0), video["mean_rgb"].numpy(), atol=1e-5)
        np.testing.assert_allclose(F.dequantize(audio).mean(0), video["mean_audio"].numpy(), atol=1e-5)


def test_test_split_has_no_labels_and_truth_is_written(tiny_data):
    ids = []
    for layout in ("video", "frame"):
        for record in _records(tiny_data / layout / "test0000.tfrecord"):
            if layout == "video":
                example = tf.train.Example.FromString(record)
                assert "labels" not in example.features.feature
                ids.append(example.features.feature["id"].bytes_list.value[0].decode())
            else:
                assert "labels" not in tf.train.SequenceExample.FromString(record).context.feature
    with open(tiny_data / "test_truth.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["VideoId"] for row in rows] == ids
    assert all(row["Labels"].split() for row in rows)


def test_deterministic_for_a_seed_and_independent_of_sharding(tmp_path):
    config = SynthConfig(videos=30, classes=12, frames=4, seed=5, videos_per_shard=7, layouts=("video",))
    write_dataset(config, tmp_path / "a")
    write_dataset(SynthConfig(**{**config.__dict__, "videos_per_shard": 100}), tmp_path / "b")
    write_dataset(SynthConfig(**{**config.__dict__, "seed": 6}), tmp_path / "c")
    first = [r for p in sorted((tmp_path / "a" / "video").glob("train*")) for r in _records(p)]
    second = _records(tmp_path / "b" / "video" / "train0000.tfrecord")
    other = _records(tmp_path / "c" / "video" / "train0000.tfrecord")
    assert first == second
    assert first != other
    for name in ("test_truth.csv", "oracle.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
        assert (tmp_path / "a" / name).read_bytes() != (tmp_path / "c" / name).read_bytes()


def test_label_statistics_are_realistic():
    config = SynthConfig(videos=3000, classes=100, frames=2, seed=1)
    counts = Counter()
    per_video = []
    for video in generate_videos(config, 0, config.videos):
        counts.update(video.labels.tolist())
        per_video.append(video.labels.size)
    assert 2.5 <= np.mean(per_video) <= 3.5  # ~3 labels per video
    frequencies = np.array(sorted(counts.values(), reverse=True))
    assert frequencies[0] > 10 * np.median(frequencies)  # Zipf-like head
    assert len(counts) > 90  # the tail still appears


def test_video_ids_are_unique_and_youtube8m_like():
    ids = [video_id(i) for i in range(100_000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 6 and i.isalnum() for i in ids[:100])


def test_many_classes_supported():
    config = SynthConfig(videos=4, classes=3862, frames=2, seed=0)
    labels = np.concatenate([v.labels for v in generate_videos(config, 0, 4)])
    assert labels.max() < 3862


@pytest.mark.parametrize(
    "changes",
    [
        {"videos": 0},
        {"frames": 301},
        {"validate_fraction": 0.6, "test_fraction": 0.5},
        {"layouts": ("x",)},
        {"missing_label_rate": 0.5, "missing_frame_local_rate": 0.5},
        {"missing_tail_rate": -0.1},
        {"confusion_rate": 1.0},
        {"spurious_label_rate": 1.5},
        {"confusers_per_class": -1},
    ],
)
def test_bad_settings_are_rejected(changes):
    with pytest.raises(ValueError, match="synth"):
        SynthConfig(**changes)


# --- Label noise and the oracle -----------------------------------------------------------------------------

NOISY = SynthConfig(
    videos=3000,
    classes=20,
    frames=1,
    topics=4,
    seed=2,
    layouts=("video",),
    missing_label_rate=0.1,
    missing_tail_rate=0.2,
    missing_frame_local_rate=0.3,
    confusion_rate=0.3,
    spurious_label_rate=0.6,
)
DEMO = SynthConfig(videos=3000, classes=100, frames=20, seed=0, layouts=("video",))  # as `make demo`


@pytest.fixture(scope="module")
def noisy_data(tmp_path_factory):
    """3000 videos x 20 classes with exaggerated noise, so that every term of the noise model is large."""
    out = tmp_path_factory.mktemp("noisy_data")
    write_dataset(NOISY, out)
    return out


@pytest.fixture(scope="module")
def default_data(tmp_path_factory):
    """The demo's data set (default noise model), video level only."""
    out = tmp_path_factory.mktemp("default_data")
    write_dataset(DEMO, out)
    return out


def _oracle_rows(data) -> list[dict]:
    return [json.loads(line) for line in (data / "oracle.jsonl").read_text().splitlines()]


def _multi_hot(label_lists, num_classes: int) -> np.ndarray:
    dense = np.zeros((len(label_lists), num_classes))
    for row, labels in enumerate(label_lists):
        dense[row, list(labels)] = 1
    return dense


def test_planted_probabilities_match_the_observed_label_frequencies(noisy_data):
    videos = list(generate_videos(NOISY, 0, NOISY.videos))
    probs = oracle_scores(noisy_data, [v.video_id for v in videos]).astype(np.float64)
    observed = _multi_hot([v.labels for v in videos], NOISY.classes)
    # Pairs (video, class) with the same planted probability share a latent configuration: each group's
    # observed frequency must be that probability, within 4 binomial standard errors.
    values, group = np.unique(np.round(probs, 6), return_inverse=True)
    tested = 0
    for index, p in enumerate(values):
        members = group.ravel() == index
        n = members.sum()
        if n >= 30:
            tested += 1
            freq = observed.ravel()[members].mean()
            assert abs(freq - p) <= 4 * np.sqrt(p * (1 - p) / n) + 1e-9, (p, n, freq)
    assert tested >= 15
    total_sd = np.sqrt((probs * (1 - probs)).sum())
    assert abs((observed - probs).sum()) <= 4 * total_sd
    # The classes left out of oracle.jsonl score their background rate of synth.json.
    background = json.loads((noisy_data / "synth.json").read_text())["noise_model"]["background_probs"]
    listed = _multi_hot([row["classes"] for row in _oracle_rows(noisy_data)], NOISY.classes).astype(bool)
    np.testing.assert_allclose(probs[~listed], np.broadcast_to(background, probs.shape)[~listed], rtol=1e-6)


def test_every_split_is_noisy_and_the_noise_is_structured(default_data):
    summary = json.loads((default_data / "synth.json").read_text())
    noise = summary["noise_model"]
    rows = _oracle_rows(default_data)
    truth = read_truth(default_data / "test_truth.csv")
    labels = {vid: set(classes) for vid, classes in truth.items()}
    for split in ("train", "validate"):
        ids, _, observed = _video_level(default_data, split)
        labels.update((vid, set(classes)) for vid, classes in zip(ids, observed, strict=True))
    missing = Counter()
    spurious = Counter()
    confused = 0
    misses, chances = np.zeros(DEMO.classes), np.zeros(DEMO.classes)
    for row in rows:
        true, seen = set(row["true"]), labels[row["id"]]
        missing[row["split"]] += len(true - seen)
        spurious[row["split"]] += len(seen - true)
        confusers = {d for c in true for d in noise["confusers"][c]}
        confused += len((seen - true) & confusers)
        np.add.at(chances, row["true"], 1)
        np.add.at(misses, list(true - seen), 1)
    # Missing and spurious labels in train, validate and test (test_truth.csv holds observed labels).
    assert all(missing[split] > 0 and spurious[split] > 0 for split in ("train", "validate", "test"))
    assert 0.8 < summary["observed_label_precision"] < 0.95 and 0.8 < summary["true_class_recall"] < 0.95
    # Most spurious labels are topic confusers of a true class, not random classes.
    assert confused > 0.6 * sum(spurious.values())
    # Frame-local classes go missing more often than the others.
    local = np.zeros(DEMO.classes, dtype=bool)
    local[summary["frame_local_classes"]] = True
    assert misses[local].sum() / chances[local].sum() > 1.5 * misses[~local].sum() / chances[~local].sum()


def test_oracle_file_is_complete_and_its_gap_is_recorded(tiny_data, monkeypatch):
    rows = _oracle_rows(tiny_data)
    assert len(rows) == TINY.videos and len({row["id"] for row in rows}) == TINY.videos
    truth = read_truth(tiny_data / "test_truth.csv")
    assert [row["id"] for row in rows if row["split"] == "test"] == list(truth)
    ids = list(truth)
    scores = oracle_scores(tiny_data, ids)
    assert scores.shape == (len(ids), TINY.classes) and (scores > 0).all() and (scores < 1).all()
    recorded = json.loads((tiny_data / "synth.json").read_text())["oracle"]["test_gap"]
    dense = gap_at_k(scores, _multi_hot(truth.values(), TINY.classes))
    monkeypatch.setattr(synth, "_ORACLE_CHUNK", 7)  # pools top-20 lists over several chunks
    assert recorded == pytest.approx(dense, abs=1e-6)
    assert oracle_gap(tiny_data, truth) == pytest.approx(dense, abs=1e-6)
    assert 0.5 < recorded < 1


def _video_level(data, split: str) -> tuple[list[str], np.ndarray, list[list[int]]]:
    """(ids, [mean_rgb, mean_audio] features, observed labels) of a split, read back from the records."""
    records = [r for path in sorted((data / "video").glob(f"{split}*.tfrecord")) for r in _records(path)]
    parsed = tf.io.parse_example(records, VIDEO_SPEC)
    labels = tf.RaggedTensor.from_sparse(parsed["labels"]).to_list()
    features = np.concatenate([parsed["mean_rgb"].numpy(), parsed["mean_audio"].numpy()], axis=1)
    return [i.decode() for i in parsed["id"].numpy()], features, labels


def _linear_probe(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, steps: int = 150
) -> np.ndarray:
    """Logistic regression (one sigmoid per class, L2 0.03, full-batch Adam) on standardised features."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    x, test_x = ((train_x - mean) / std).astype(np.float32), ((test_x - mean) / std).astype(np.float32)
    train_y = train_y.astype(np.float32)
    params = [np.zeros((x.shape[1], train_y.shape[1]), np.float32), np.zeros(train_y.shape[1], np.float32)]
    moments = [[np.zeros_like(p), np.zeros_like(p)] for p in params]
    for step in range(1, steps + 1):
        error = (1 / (1 + np.exp(-(x @ params[0] + params[1]))) - train_y) / len(x)
        grads = (x.T @ error + 0.03 * params[0], error.sum(0))
        for param, grad, moment in zip(params, grads, moments, strict=True):
            moment[0] = 0.9 * moment[0] + 0.1 * grad
            moment[1] = 0.999 * moment[1] + 0.001 * grad**2
            param -= 0.01 * moment[0] / (1 - 0.9**step) / (np.sqrt(moment[1] / (1 - 0.999**step)) + 1e-8)
    return test_x @ params[0] + params[1]


def test_oracle_leaves_headroom_above_a_linear_model_and_simpler_scorers(default_data):
    classes = DEMO.classes
    train = [_video_level(default_data, split) for split in ("train", "validate")]
    train_x = np.concatenate([part[1] for part in train])
    train_y = _multi_hot([labels for part in train for labels in part[2]], classes)
    test_ids, test_x, _ = _video_level(default_data, "test")
    truth = read_truth(default_data / "test_truth.csv")
    test_y = _multi_hot([truth[vid] for vid in test_ids], classes)
    oracle = oracle_gap(default_data, truth)
    linear = gap_at_k(_linear_probe(train_x, train_y, test_x), test_y)
    true_classes = {row["id"]: row["true"] for row in _oracle_rows(default_data)}
    indicator = gap_at_k(_multi_hot([true_classes[vid] for vid in test_ids], classes), test_y)
    prior = gap_at_k(np.tile(train_y.mean(0), (len(test_ids), 1)), test_y)
    assert prior < linear < oracle - 0.03
    assert indicator <= oracle < 0.95


def test_oracle_input_errors_name_the_file_and_video(tiny_data, tmp_path):
    with pytest.raises(InputDataError, match=r"oracle.jsonl: no planted label probabilities for video nope "):
        oracle_scores(tiny_data, ["nope"])
    (tmp_path / "synth.json").write_bytes((tiny_data / "synth.json").read_bytes())
    (tmp_path / "oracle.jsonl").write_text('{"id": "a", "classes": [1], "probs": [0.5]}\n[1, 2]\n')
    with pytest.raises(InputDataError, match=r"oracle.jsonl: line 2: expected a JSON object"):
        oracle_scores(tmp_path, ["a"])
    (tmp_path / "oracle.jsonl").write_text('{"id": "a", "classes": [1], "probs": [0.5]}\n')
    with pytest.raises(InputDataError, match=r"video a: labels outside \[0, 30\)"):
        oracle_gap(tmp_path, {"a": [30]})
    (tmp_path / "synth.json").write_text("{}")
    with pytest.raises(InputDataError, match=r"synth.json: not a synth.json with noise_model"):
        oracle_scores(tmp_path, ["a"])


def test_cli_prints_the_oracle_test_gap(tmp_path, capsys):
    out = tmp_path / "data"
    sizes = ["--videos", "60", "--classes", "10", "--frames", "2", "--layouts", "video"]
    assert cli.main(["synth", "--out", str(out), *sizes]) == 0
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    recorded = json.loads((out / "synth.json").read_text())["oracle"]["test_gap"]
    assert printed == f"oracle test GAP@20 {recorded:.6f}" and 0 < recorded < 1
