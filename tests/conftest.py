"""Shared fixtures: a tiny generated YouTube-8M data set and helpers to run the pipeline on it."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from pipeline.config import (  # noqa: E402
    DataConfig,
    FoldConfig,
    L1Settings,
    L2Settings,
    PipelineConfig,
    StudentSettings,
)
from pipeline.synth import SynthConfig, write_dataset  # noqa: E402

TINY_L1_CONFIGS = tuple(
    str(Path(__file__).parent / "configs" / f"tiny_{level}.yaml") for level in ("video", "frame")
)
TINY_STUDENTS = str(Path(__file__).parent / "configs" / "students")
LIGHTGBM_CONFIG = str(Path(__file__).parents[1] / "configs" / "l2" / "lightgbm.yaml")
TINY = SynthConfig(videos=240, classes=30, frames=8, seed=3, videos_per_shard=60)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """240 videos, 30 classes, up to 8 frames, both layouts, 60 videos per shard."""
    out = tmp_path_factory.mktemp("tiny_data")
    write_dataset(TINY, out)
    return out


def tiny_pipeline_config(
    data_dir: Path, home: Path, l1_configs: tuple[str, ...] = (), num_folds: int = 5, **changes
) -> PipelineConfig:
    """A pipeline config for a data set written like `tiny_data`."""
    config = PipelineConfig(
        data=DataConfig(
            video_dir=str(data_dir / "video"),
            frame_dir=str(data_dir / "frame") if (data_dir / "frame").exists() else None,
            num_classes=TINY.classes,
            test_truth=str(data_dir / "test_truth.csv") if (data_dir / "test_truth.csv").exists() else None,
        ),
        pipeline_name="yt8m-test",
        home=str(home),
        folds=FoldConfig(num_folds=num_folds, holdout_fraction=0.1, seed=7),
        l1=L1Settings(configs=l1_configs),
        l2=L2Settings(lightgbm_config=LIGHTGBM_CONFIG),
    )
    return config.with_overrides(**changes)


def tiny_pipeline_nodes(directory: Path, num_folds: int) -> list:
    """Every node of the whole tiny pipeline (both L1 configs, the students), built on empty data dirs under
    `directory` (nothing runs)."""
    from pipeline.pipeline import create_pipeline

    (directory / "frame").mkdir(exist_ok=True)
    config = tiny_pipeline_config(
        directory,
        directory / "home",
        l1_configs=TINY_L1_CONFIGS,
        num_folds=num_folds,
        students=StudentSettings(configs=TINY_STUDENTS),
    )
    return create_pipeline(config).components


@pytest.fixture(scope="session")
def tiny_run(tiny_data, tmp_path_factory) -> PipelineConfig:
    """The whole pipeline, run once on `tiny_data` (3 folds, both tiny L1 configs, two tiny towers and a head;
    blessed at half the stack's GAP). Tests only read it."""
    from pipeline.runner import run_pipeline

    config = tiny_pipeline_config(
        tiny_data,
        tmp_path_factory.mktemp("tiny_run") / "home",
        l1_configs=TINY_L1_CONFIGS,
        num_folds=3,
        students=StudentSettings(configs=TINY_STUDENTS, stack_fraction=0.5),
    )
    run_pipeline(config)
    return config


@pytest.fixture(scope="session")
def tiny_transform_graph(tiny_data, tmp_path_factory) -> str:
    """The Transform graph of `tiny_data`'s video records: its train split as the one training fold
    (`fold_0`, analysed), validate as `holdout` and test as `test` (not analysed)."""
    from tests.builders import transform_graph
    from trainer.readers import read_records

    splits = {
        split: [
            record.numpy()
            for record in read_records(sorted(str(p) for p in (tiny_data / "video").glob(f"{name}*")))
        ]
        for split, name in (("fold_0", "train"), ("holdout", "validate"), ("test", "test"))
    }
    return transform_graph(tmp_path_factory.mktemp("tiny_transform"), splits, num_folds=1)


@pytest.fixture(scope="session")
def gcs(tmp_path_factory):
    """A local GCS emulator (tests/gcs_emulator.py) with bucket `gcs.bucket`; pass `gcs.env` to every
    subprocess that should reach it (set before Python starts)."""
    from tests.gcs_emulator import gcs_emulator

    with gcs_emulator(tmp_path_factory.mktemp("gcs")) as emulator:
        yield emulator
