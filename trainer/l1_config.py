"""L1 model configs: one YAML file per model (name, registry model, builder params, training settings)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras

from trainer.config_schema import ConfigError, parse_yaml, read_text
from trainer.features import MAX_FRAMES
from trainer.losses import LOSSES
from trainer.models import FRAME_LEVEL, MODEL_BUILDERS, Level, ParamError, build_model, coerce_value

_TOP_LEVEL_KEYS = ("name", "model", "params", "training")
_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class TrainingConfig:
    """How one L1 model is trained; max_frames is set for frame-level models only."""

    epochs: int = 10
    batch_size: int = 512
    learning_rate: float = 0.001
    loss: str = "bce"
    mixup_alpha: float = 0.0
    early_stopping_patience: int = 3
    reduce_lr_patience: int = 1
    reduce_lr_factor: float = 0.5
    validation_fraction: float = 0.1
    # At most this many videos of the validation slice (the first in file order); 0 = the whole slice. Caps
    # the cached, parsed slice: 1.4 MB a frame-level video.
    max_validation_videos: int = 0
    max_frames: int | None = None
    seed: int = 0
    mixed_precision: bool = False  # float16 compute, float32 weights and logits (for GPUs)
    # Video-level: read mean_rgb / mean_audio standardised per dimension by the Transform graph.
    standardize_inputs: bool = False


# Per training key: its type and a (check, requirement) pair on the value.
_TRAINING_RULES: Mapping[str, tuple[type, Callable[[Any], bool], str]] = {
    "epochs": (int, lambda value: value >= 1, ">= 1"),
    "batch_size": (int, lambda value: value >= 1, ">= 1"),
    "learning_rate": (float, lambda value: value > 0, "> 0"),
    "loss": (str, lambda value: value in LOSSES, f"one of {', '.join(LOSSES)}"),
    "mixup_alpha": (float, lambda value: value >= 0, ">= 0 (0 = off)"),
    "early_stopping_patience": (int, lambda value: value >= 0, ">= 0"),
    "reduce_lr_patience": (int, lambda value: value >= 0, ">= 0"),
    "reduce_lr_factor": (float, lambda value: 0 < value < 1, "in (0, 1)"),
    "validation_fraction": (float, lambda value: 0 < value < 1, "in (0, 1)"),
    "max_validation_videos": (int, lambda value: value >= 0, ">= 0 (0 = the whole slice)"),
    "max_frames": (int, lambda value: value >= 1, ">= 1"),
    "seed": (int, lambda value: value >= 0, ">= 0"),
    "mixed_precision": (bool, lambda value: True, "true or false"),
    "standardize_inputs": (bool, lambda value: True, "true or false"),
}


@dataclass(frozen=True)
class L1Config:
    """One validated L1 config; `params` holds every builder param (the file's values over the defaults)."""

    name: str
    model: str
    level: Level
    params: dict[str, Any]
    training: TrainingConfig
    source: str = field(compare=False)

    def build_model(self, num_classes: int) -> keras.Model:
        """The untrained Keras model of this config."""
        return build_model(self.model, self.params, num_classes, self.training.max_frames)


def _fail(path: Path, key_path: str, reason: str) -> ConfigError:
    return ConfigError(f"{path}: {key_path}: {reason}")


def _mapping(path: Path, key_path: str, value: object) -> dict[str, Any]:
    """A YAML section as a dict (an empty section counts as {}); its keys must be strings."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail(path, key_path, f"expected a mapping, got {type(value).__name__} {value!r}")
    for key in value:
        if not isinstance(key, str):
            raise _fail(path, f"{key_path}.{key}", f"keys must be strings, got {type(key).__name__}")
    return value


def _training(path: Path, section: dict[str, Any], level: Level, model: str) -> TrainingConfig:
    values: dict[str, Any] = {}
    for key, value in section.items():
        if key not in _TRAINING_RULES:
            raise _fail(path, f"training.{key}", f"unknown key; valid keys: {', '.join(_TRAINING_RULES)}")
        if key == "max_frames" and level != FRAME_LEVEL:
            raise _fail(path, "training.max_frames", f"only for frame-level models; {model!r} is video-level")
        if key == "standardize_inputs" and level == FRAME_LEVEL:
            raise _fail(path, f"training.{key}", f"only for video-level models; {model!r} is frame-level")
        expected, is_valid, requirement = _TRAINING_RULES[key]
        try:
            values[key] = coerce_value(value, expected)
        except TypeError as error:
            raise _fail(path, f"training.{key}", str(error)) from None
        if not is_valid(values[key]):
            raise _fail(path, f"training.{key}", f"must be {requirement}, got {value!r}")
    if level == FRAME_LEVEL:
        values.setdefault("max_frames", MAX_FRAMES)
    return TrainingConfig(**values)


def load_l1_config(path: str | Path) -> L1Config:
    """Reads and validates one L1 config YAML file; raises ConfigError naming the file and key path."""
    return parse_l1_config(read_text(path), str(path))


def parse_l1_config(text: str, source: str) -> L1Config:
    """Validates the YAML text of an L1 config read from `source` (named in every error)."""
    path = Path(source)
    document = parse_yaml(text, source)
    for key in document:
        if key not in _TOP_LEVEL_KEYS:
            raise _fail(path, str(key), f"unknown key; valid keys: {', '.join(_TOP_LEVEL_KEYS)}")
    for key in ("name", "model"):
        if key not in document:
            raise _fail(path, key, "missing required key")
        if not isinstance(document[key], str):
            raise _fail(path, key, f"expected str, got {type(document[key]).__name__} {document[key]!r}")
    name, model = document["name"], document["model"]
    if not _NAME_PATTERN.fullmatch(name):
        raise _fail(
            path, "name", f"expected letters, digits, '_', '.' or '-' (no leading punctuation), got {name!r}"
        )
    if model not in MODEL_BUILDERS:
        raise _fail(path, "model", f"unknown model {model!r}; valid models: {', '.join(MODEL_BUILDERS)}")
    spec = MODEL_BUILDERS[model]
    try:
        params = spec.resolve_params(_mapping(path, "params", document.get("params")))
    except ParamError as error:
        raise _fail(path, f"params.{error.key}", error.reason) from None
    training = _training(path, _mapping(path, "training", document.get("training")), spec.level, model)
    return L1Config(name, model, spec.level, params, training, str(path))


def load_l1_configs(directory: str | Path) -> list[L1Config]:
    """Every `*.yaml` config of `directory`, sorted by name; duplicate names or no files raise ConfigError."""
    directory = Path(directory)
    configs: dict[str, L1Config] = {}
    for path in sorted(directory.glob("*.yaml")):
        config = load_l1_config(path)
        if config.name in configs:
            raise _fail(
                path, "name", f"duplicate name {config.name!r} (also in {configs[config.name].source})"
            )
        configs[config.name] = config
    if not configs:
        raise ConfigError(f"{directory}: no *.yaml config files")
    return [configs[name] for name in sorted(configs)]
