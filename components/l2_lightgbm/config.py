"""LightGBM stacker settings (configs/l2/*.yaml)."""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
from lightgbm.basic import _ConfigAliases

from trainer import config_schema
from trainer.config_schema import ConfigError

# Set by the component, not by configs: binary probabilities, reproducible models.
# Column-wise histograms: row-wise ones keep a second, row-major copy of every training row's bins, at 2 B a
# feature once class_id has over 256 bins (+83 B a training row at 20 models; see BENCHMARKS.md).
FIXED_PARAMS = {"objective": "binary", "deterministic": True, "force_col_wise": True, "verbosity": -1}
COMPONENT_PARAMS = {*FIXED_PARAMS, "seed", "metric"}
PARAMETERS_URL = "https://lightgbm.readthedocs.io/en/latest/Parameters.html"


def _default_params() -> dict[str, Any]:
    return {
        "learning_rate": 0.01,
        "num_leaves": 63,
        "min_data_in_leaf": 50,
        "feature_fraction": 0.8,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "lambda_l2": 1.0,
        "num_threads": 0,
    }


@dataclass(frozen=True)
class LightGBMConfig:
    """Boosting rounds, early stopping, the validation slice of the training rows, the share of negative rows
    trained on (every positive row is; the kept negatives weigh 1 / negative_fraction), LightGBM params."""

    num_boost_round: int = 3000
    early_stopping_rounds: int = 30
    validation_fraction: float = 0.1
    negative_fraction: float = 1.0
    seed: int = 0
    params: dict[str, Any] = field(default_factory=_default_params)

    def __post_init__(self) -> None:
        if self.num_boost_round < 1 or self.early_stopping_rounds < 1:
            raise ValueError("num_boost_round and early_stopping_rounds must be >= 1")
        if not 0 < self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in (0, 1), got {self.validation_fraction}")
        if not 0 < self.negative_fraction <= 1:
            raise ValueError(f"negative_fraction must be in (0, 1], got {self.negative_fraction}")

    def lightgbm_params(self) -> dict[str, Any]:
        """The defaults (less those the config sets under any alias), the config's params, the fixed ones."""
        names = lightgbm_parameter_names()
        configured = {names.get(key, key) for key in self.params}
        return {
            **{key: value for key, value in _default_params().items() if key not in configured},
            **self.params,
            **FIXED_PARAMS,
            "seed": self.seed,
            "metric": "binary_logloss",
        }


def lightgbm_parameter_names() -> dict[str, str]:
    """Every name LightGBM accepts for a parameter (its aliases included) -> the parameter's own name."""
    return {
        alias: name for name, aliases in _ConfigAliases._get_all_param_aliases().items() for alias in aliases
    }


def _lightgbm_rejection(params: dict[str, Any]) -> str | None:
    """LightGBM's own complaint about `params` (parsed and checked as for training), or None."""
    data = lgb.Dataset(np.arange(8.0).reshape(4, 2), label=[0, 1, 0, 1], params={"verbosity": -1})
    try:
        lgb.Booster({**params, **FIXED_PARAMS}, data)
    except lgb.basic.LightGBMError as error:
        return str(error).split(" at ")[0].strip()
    return None


def check_lightgbm_params(params: dict[str, Any], source: str) -> None:
    """Each key a LightGBM parameter (or alias) named once, not one the component sets, with a finite value
    that LightGBM's own parser accepts; raises ConfigError naming `source` and the key."""
    names = lightgbm_parameter_names()
    seen: dict[str, str] = {}
    for key, value in params.items():
        if key not in names:
            close = difflib.get_close_matches(key, names, n=3)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise ConfigError(
                f"{source}: params.{key}: unknown LightGBM parameter ({hint}valid: {PARAMETERS_URL})"
            )
        name = names[key]
        if name in COMPONENT_PARAMS:
            raise ConfigError(f"{source}: params.{key}: set by the component ({name}), cannot be configured")
        if name in seen:
            raise ConfigError(f"{source}: params.{key}: the same LightGBM parameter as params.{seen[name]}")
        seen[name] = key
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{source}: params.{key}: expected a finite number, got {value!r}")
        if (reason := _lightgbm_rejection({key: value})) is not None:
            raise ConfigError(f"{source}: params.{key}: LightGBM rejects {value!r}: {reason}")


def parse_lightgbm_config(text: str, source: str) -> LightGBMConfig:
    """Validate the YAML text of a LightGBM config read from `source`, its params by LightGBM itself."""
    config = config_schema.build(LightGBMConfig, config_schema.parse_yaml(text, source), source)
    check_lightgbm_params(config.params, source)
    if (reason := _lightgbm_rejection(config.lightgbm_params())) is not None:
        raise ConfigError(f"{source}: params: LightGBM rejects them with the defaults: {reason}")
    return config
