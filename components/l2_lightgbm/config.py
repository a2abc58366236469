"""LightGBM stacker settings (configs/l2/*.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trainer import config_schema

# Set by the component, not by configs: binary probabilities, reproducible models.
FIXED_PARAMS = {"objective": "binary", "deterministic": True, "force_row_wise": True, "verbosity": -1}


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
    """Boosting rounds, early stopping, the validation slice of the training rows, and LightGBM params."""

    num_boost_round: int = 3000
    early_stopping_rounds: int = 30
    validation_fraction: float = 0.1
    seed: int = 0
    params: dict[str, Any] = field(default_factory=_default_params)

    def __post_init__(self) -> None:
        if self.num_boost_round < 1 or self.early_stopping_rounds < 1:
            raise ValueError("num_boost_round and early_stopping_rounds must be >= 1")
        if not 0 < self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in (0, 1), got {self.validation_fraction}")
        fixed = sorted(set(self.params) & {*FIXED_PARAMS, "seed", "metric"})
        if fixed:
            raise ValueError(f"params.{fixed[0]} is set by the component and cannot be configured")

    def lightgbm_params(self) -> dict[str, Any]:
        return {
            **_default_params(),
            **self.params,
            **FIXED_PARAMS,
            "seed": self.seed,
            "metric": "binary_logloss",
        }


def parse_lightgbm_config(text: str, source: str) -> LightGBMConfig:
    """Validate the YAML text of a LightGBM config read from `source`."""
    return config_schema.build(LightGBMConfig, config_schema.parse_yaml(text, source), source)
