"""L1 config files: validation errors name the file and key path; every shipped config loads and builds."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import numpy as np
import pytest

from trainer.features import (
    AUDIO_SIZE,
    FRAME_AUDIO,
    FRAME_RGB,
    MASK,
    MAX_FRAMES,
    MEAN_AUDIO,
    MEAN_RGB,
    RGB_SIZE,
)
from trainer.l1_config import ConfigError, L1Config, TrainingConfig, load_l1_config, load_l1_configs
from trainer.models import FRAME_LEVEL, MODEL_BUILDERS, VIDEO_LEVEL

CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"
SHIPPED = sorted((CONFIGS_DIR / "l1").glob("*.yaml")) + sorted((CONFIGS_DIR / "l1_full").glob("*.yaml"))


def _write(directory: Path, filename: str, text: str) -> Path:
    path = directory / filename
    path.write_text(textwrap.dedent(text))
    return path


def test_video_config_loads_with_defaults(tmp_path):
    path = _write(
        tmp_path,
        "small.yaml",
        """
        name: small
        model: resnet_like
        params: {rgb_units: 32}
        """,
    )
    config = load_l1_config(path)
    assert (config.name, config.model, config.level, config.source) == (
        "small",
        "resnet_like",
        "video",
        str(path),
    )
    assert config.params == {**MODEL_BUILDERS["resnet_like"].defaults, "rgb_units": 32}
    assert config.training == TrainingConfig()
    assert config.training.max_frames is None


def test_frame_config_reads_training_and_defaults_max_frames(tmp_path):
    path = _write(
        tmp_path,
        "gru.yaml",
        """
        name: gru
        model: rnn
        params:
          cell: lstm
          hidden_units: [8, 4]
        training:
          epochs: 3
          learning_rate: 1      # an int is a fine float
          loss: lsep
          mixup_alpha: 0.3
        """,
    )
    config = load_l1_config(path)
    assert config.level == FRAME_LEVEL and config.params["hidden_units"] == (8, 4)
    assert config.training == TrainingConfig(
        epochs=3, learning_rate=1.0, loss="lsep", mixup_alpha=0.3, max_frames=MAX_FRAMES
    )
    assert isinstance(config.training.learning_rate, float)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "name: a\nmodel: logistic\noptimizer: adam\n",
            "optimizer: unknown key; valid keys: name, model, params",
        ),
        (
            "name: a\nmodel: logistic\ntraining: {epoch: 3}\n",
            "training.epoch: unknown key; valid keys: epochs,",
        ),
        ("name: a\nmodel: logistic\nparams: {width: 3}\n", "params.width: unknown param; valid params: l2"),
        (
            "name: a\nmodel: logistic\ntraining: {epochs: ten}\n",
            "training.epochs: expected int, got str 'ten'",
        ),
        (
            "name: a\nmodel: logistic\ntraining: {epochs: true}\n",
            "training.epochs: expected int, got bool True",
        ),
        ("name: a\nmodel: logistic\nparams: {l2: small}\n", "params.l2: expected float, got str 'small'"),
        ("name: a\nmodel: logistic\ntraining: {learning_rate: 1e-3}\n", "write 1.0e-3"),
        ("name: a\nmodel: rnn\nparams: {cell: rnn}\n", "params.cell: expected one of gru, lstm, got 'rnn'"),
        (
            "name: a\nmodel: mlp\nparams: {hidden_units: [8, x]}\n",
            "params.hidden_units: expected a list of ints",
        ),
        ("name: a\nmodel: logistic\ntraining: {loss: focal}\n", "training.loss: must be one of bce, lsep"),
        (
            "name: a\nmodel: logistic\ntraining: {validation_fraction: 1.5}\n",
            "must be in \\(0, 1\\), got 1.5",
        ),
        (
            "name: a\nmodel: rnn\ntraining: {max_validation_videos: -1}\n",
            "training.max_validation_videos: must be >= 0",
        ),
        (
            "name: a\nmodel: logistic\ntraining: {max_frames: 20}\n",
            "training.max_frames: only for frame-level",
        ),
        (
            "name: a\nmodel: rnn\ntraining: {standardize_inputs: true}\n",
            "training.standardize_inputs: only for video-level",
        ),
        ("name: a\nmodel: logistic\nparams: [l2]\n", "params: expected a mapping, got list"),
        ("name: a\nparams: {}\n", "model: missing required key"),
        ("model: logistic\n", "name: missing required key"),
        ("name: a b\nmodel: logistic\n", "name: expected letters, digits"),
        ("- name: a\n", "expected a mapping at the top level, got list"),
        ("name: a\nmodel: [logistic\n", "not valid YAML"),
    ],
)
def test_invalid_config_names_file_and_key(tmp_path, text: str, message: str):
    path = _write(tmp_path, "bad.yaml", text)
    with pytest.raises(ConfigError, match=re.escape(f"{path}: ") + ".*" + message):
        load_l1_config(path)


def test_wrong_type_message_is_exact(tmp_path):
    path = _write(tmp_path, "foo.yaml", "name: foo\nmodel: logistic\ntraining:\n  epochs: ten\n")
    with pytest.raises(ConfigError) as error:
        load_l1_config(path)
    assert str(error.value) == f"{path}: training.epochs: expected int, got str 'ten'"


def test_unknown_model_lists_every_valid_model(tmp_path):
    path = _write(tmp_path, "foo.yaml", "name: foo\nmodel: resnet\n")
    with pytest.raises(
        ConfigError, match=re.escape(f"{path}: model: unknown model 'resnet'; valid models: ")
    ) as error:
        load_l1_config(path)
    assert all(name in str(error.value) for name in MODEL_BUILDERS)


def test_directory_loading_sorts_by_name_and_rejects_duplicates(tmp_path):
    _write(tmp_path, "1.yaml", "name: zeta\nmodel: logistic\n")
    _write(tmp_path, "2.yaml", "name: alpha\nmodel: moe\n")
    assert [config.name for config in load_l1_configs(tmp_path)] == ["alpha", "zeta"]
    duplicate = _write(tmp_path, "3.yaml", "name: zeta\nmodel: mlp\n")
    with pytest.raises(
        ConfigError, match=re.escape(f"{duplicate}: name: duplicate name 'zeta'") + ".*1.yaml"
    ):
        load_l1_configs(tmp_path)


def test_empty_directory_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="no \\*.yaml config files"):
        load_l1_configs(tmp_path)


def _tiny_inputs(config: L1Config) -> dict[str, np.ndarray]:
    if config.level == VIDEO_LEVEL:
        return {
            MEAN_RGB: np.ones((2, RGB_SIZE), np.float32),
            MEAN_AUDIO: np.ones((2, AUDIO_SIZE), np.float32),
        }
    frames = config.training.max_frames
    return {
        FRAME_RGB: np.ones((2, frames, RGB_SIZE), np.float32),
        FRAME_AUDIO: np.ones((2, frames, AUDIO_SIZE), np.float32),
        MASK: np.ones((2, frames), np.float32),
    }


@pytest.mark.parametrize("path", SHIPPED, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_shipped_config_loads_and_builds(path: Path):
    config = load_l1_config(path)
    model = config.build_model(num_classes=7)
    if path.parent.name == "l1":  # the full-size models only build: a forward pass at T=300 costs seconds
        assert model(_tiny_inputs(config), training=False).shape == (2, 7)


def test_demo_set_covers_the_families_losses_and_mixup():
    configs = load_l1_configs(CONFIGS_DIR / "l1")
    video = [config for config in configs if config.level == VIDEO_LEVEL]
    frame = [config for config in configs if config.level == FRAME_LEVEL]
    video_families = {name for name, spec in MODEL_BUILDERS.items() if spec.level == VIDEO_LEVEL}
    assert len(video) >= 4 and {config.model for config in video} == video_families
    assert len(frame) >= 3 and all(20 <= config.training.max_frames <= 32 for config in frame)
    assert any(config.training.loss == "lsep" for config in video)
    assert any(config.training.mixup_alpha == 0.3 for config in video)


def test_full_set_uses_full_sizes():
    configs = load_l1_configs(CONFIGS_DIR / "l1_full")
    assert {config.model for config in configs} == set(MODEL_BUILDERS)
    assert all(config.training.batch_size >= 256 for config in configs)
    assert all(config.training.max_frames == MAX_FRAMES for config in configs if config.level == FRAME_LEVEL)
