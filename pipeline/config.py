"""Pipeline configuration (configs/*.yaml) as typed, validated dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from trainer import config_schema
from trainer.config_schema import ConfigError
from trainer.features import NUM_CLASSES

DEFAULT_SPLIT_PATTERNS = {
    "train": "train*.tfrecord",
    "validate": "validate*.tfrecord",
    "test": "test*.tfrecord",
}


# The local runs' Beam: the FnApiRunner in this process, one worker. Named, because Beam's DirectRunner
# (2.77 here) first tries to download and start its Prism runner: where github.com is reachable the stages
# would run on another runner than the one tested and benchmarked here, and each try leaves entries in
# /tmp. Naming an SDK image stops TFX from building a ~50 MB sdist of itself in /tmp for every Beam node; the
# in-process runner ignores the image.
LOCAL_BEAM_RUNNER = "FnApiRunner"
LOCAL_BEAM_PIPELINE_ARGS = (
    f"--runner={LOCAL_BEAM_RUNNER}",
    "--direct_running_mode=in_memory",
    "--direct_num_workers=1",
    "--sdk_container_image=apache/beam_python3.11_sdk:2.77.0",
)


@dataclass(frozen=True)
class DataConfig:
    """Where the YouTube-8M TFRecords are; `frame_dir: null` runs without frame-level data."""

    video_dir: str
    frame_dir: str | None = None
    num_classes: int = NUM_CLASSES
    split_patterns: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_SPLIT_PATTERNS))
    unlabelled_splits: tuple[str, ...] = ("test",)
    test_truth: str | None = None  # VideoId,Labels CSV of the test videos: the run then scores its submission

    def __post_init__(self) -> None:
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        missing = set(self.unlabelled_splits) - set(self.split_patterns)
        if missing:
            raise ValueError(f"unlabelled_splits {sorted(missing)} are not in split_patterns")


@dataclass(frozen=True)
class FoldConfig:
    num_folds: int = 5
    holdout_fraction: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_folds < 2:
            raise ValueError(f"num_folds must be >= 2, got {self.num_folds}")
        if not 0.0 < self.holdout_fraction < 1.0:  # the stack and the gate are measured on the holdout
            raise ValueError(f"holdout_fraction must be in (0, 1), got {self.holdout_fraction}")


@dataclass(frozen=True)
class L1Settings:
    """Which L1 model configs (YAML files, see configs/l1/) the pipeline trains, each over every fold."""

    configs: tuple[str, ...] = ()


@dataclass(frozen=True)
class L2Settings:
    """The stacker: candidates per model (top_k) and the LightGBM config file (see configs/l2/; required with
    L1 models: no default path that would depend on the working directory)."""

    top_k: int = 20
    lightgbm_config: str | None = None

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")


@dataclass(frozen=True)
class NodeResources:
    """One node's container: CPU and memory (request = limit) and `accelerator_count` accelerators of
    `accelerator` (the Kubernetes resource name on open-source KFP, e.g. nvidia.com/gpu; a type such as
    NVIDIA_TESLA_T4 on Vertex AI)."""

    cpu: float
    memory_gb: float
    accelerator: str = ""
    accelerator_count: int = 0

    def __post_init__(self) -> None:
        for name in ("cpu", "memory_gb"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.accelerator_count < 0:
            raise ValueError(f"accelerator_count must be >= 0, got {self.accelerator_count}")
        if bool(self.accelerator) != (self.accelerator_count > 0):
            raise ValueError("accelerator and accelerator_count > 0 go together")


@dataclass(frozen=True)
class NodeClassResources:
    """Resources of each class of node (pipeline/kubeflow.py `node_class`; sizing rule: README "Sizing")."""

    beam: NodeResources  # nodes that run a Beam pipeline; their workers are the runner's (beam_pipeline_args)
    trainer: NodeResources  # L1 trainers of video-level configs, student towers and head
    frame_trainer: NodeResources  # L1 trainers of frame-level configs
    l2_lightgbm: NodeResources
    student_evaluator: NodeResources
    student_export: NodeResources
    batch_inference: NodeResources
    default: NodeResources  # every other node (SchemaGen, Pusher)


@dataclass(frozen=True)
class KubeflowSettings:
    """How `yt8m compile` targets Kubeflow Pipelines: the component image (every node; Dockerfile), the Beam
    workers' image (Dockerfile.beam; compiled into --sdk_container_image), the artifact root, the resources of
    each node class and the Beam runner's args."""

    image: str
    beam_image: str
    pipeline_root: str
    resources: NodeClassResources
    beam_pipeline_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if any(arg.startswith("--sdk_container_image") for arg in self.beam_pipeline_args):
            raise ValueError("beam_pipeline_args: --sdk_container_image is set from beam_image")


@dataclass(frozen=True)
class StudentSettings:
    """The distilled student (see configs/students/): a directory of tower and head configs (null: no student
    stage), its blessing (holdout GAP >= gap_floor and >= stack_fraction x the stack's GAP) and where the
    blessed model is pushed (relative paths are under home) if its files fit in max_model_bytes."""

    configs: str | None = None
    gap_floor: float = 0.0
    stack_fraction: float = 0.97
    push_directory: str = "serving"
    max_model_bytes: int = 1_000_000_000

    def __post_init__(self) -> None:
        if not 0.0 <= self.gap_floor <= 1.0:
            raise ValueError(f"gap_floor must be in [0, 1], got {self.gap_floor}")
        if self.stack_fraction < 0.0:
            raise ValueError(f"stack_fraction must be >= 0, got {self.stack_fraction}")
        if self.max_model_bytes < 1:
            raise ValueError(f"max_model_bytes must be >= 1, got {self.max_model_bytes}")


_GLOB_CHARACTERS = "*?[]"


@dataclass(frozen=True)
class PipelineConfig:
    """Everything `create_pipeline` needs. Relative paths are resolved against the working directory."""

    data: DataConfig
    pipeline_name: str = "yt8m"
    home: str = "yt8m_home"
    folds: FoldConfig = field(default_factory=FoldConfig)
    l1: L1Settings = field(default_factory=L1Settings)
    l2: L2Settings = field(default_factory=L2Settings)
    students: StudentSettings = field(default_factory=StudentSettings)
    kubeflow: KubeflowSettings | None = None  # only `yt8m compile` reads it
    runner: Literal["beam", "local"] = "local"
    enable_cache: bool = True
    # Joins by video id (L1Assemble, StudentAssemble, L2Merge, HeadExamples) run in hash shards of about this
    # many MB of input, so the in-memory DirectRunner's memory stays bounded; 0 = one join (use it on a
    # runner with a shuffle service, e.g. Dataflow).
    join_shard_mb: float = 256.0
    beam_pipeline_args: tuple[str, ...] = LOCAL_BEAM_PIPELINE_ARGS

    def __post_init__(self) -> None:
        if self.join_shard_mb < 0:
            raise ValueError(f"join_shard_mb must be >= 0, got {self.join_shard_mb}")
        if set(self.home) & set(_GLOB_CHARACTERS):
            raise ValueError(
                f"home {self.home!r} contains a glob character ({' '.join(_GLOB_CHARACTERS)}): Beam's file "
                "writers match the paths they write as patterns"
            )
        if self.l1.configs and not self.l2.lightgbm_config:
            raise ValueError("l2.lightgbm_config is required with l1.configs (e.g. configs/l2/lightgbm.yaml)")

    @property
    def pipeline_root(self) -> str:
        return str(Path(self.home, "pipeline_root").absolute())

    @property
    def metadata_path(self) -> str:
        return str(Path(self.home, "metadata.sqlite").absolute())

    @property
    def push_directory(self) -> str:
        directory = self.students.push_directory
        return directory if "://" in directory else str(Path(self.home, directory).absolute())

    def with_overrides(self, **changes) -> PipelineConfig:
        """A copy with top-level fields replaced (`None` values are ignored)."""
        return replace(self, **{key: value for key, value in changes.items() if value is not None})


def _absolute(path: str) -> str:
    """A local path made absolute; URLs (gs://bucket/...) unchanged."""
    return path if "://" in path else str(Path(path).absolute())


def load_pipeline_config(path: str | Path) -> PipelineConfig:
    """Load and validate a pipeline config; local data paths become absolute."""
    config = config_schema.load(PipelineConfig, path)
    data = replace(
        config.data,
        video_dir=_absolute(config.data.video_dir),
        frame_dir=_absolute(config.data.frame_dir) if config.data.frame_dir else None,
        test_truth=_absolute(config.data.test_truth) if config.data.test_truth else None,
    )
    l1 = L1Settings(configs=tuple(str(Path(path).absolute()) for path in config.l1.configs))
    l2 = config.l2
    if l2.lightgbm_config:
        l2 = replace(l2, lightgbm_config=str(Path(l2.lightgbm_config).absolute()))
    students = config.students
    if students.configs:
        students = replace(students, configs=str(Path(students.configs).absolute()))
        if not Path(students.configs).is_dir():
            raise ConfigError(f"{path}: students.configs: no such directory {students.configs}")
    return replace(config, data=data, l1=l1, l2=l2, students=students)
