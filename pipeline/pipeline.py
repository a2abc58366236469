"""create_pipeline(config): the yt8m-tfx TFX pipeline as a pure function of its config."""

from __future__ import annotations

from tfx import v1 as tfx
from tfx.proto import example_gen_pb2

from components.example_gen.component import YT8MExampleGen, split_input_config
from components.fold_split.component import FoldSplit
from pipeline.config import PipelineConfig


def create_components(config: PipelineConfig) -> list:
    """All nodes of the pipeline, in dependency order."""
    data, folds = config.data, config.folds
    input_config = split_input_config(data.split_patterns)
    video_examples = YT8MExampleGen(
        input_base=data.video_dir,
        input_config=input_config,
        num_classes=data.num_classes,
        unlabelled_splits=data.unlabelled_splits,
    ).with_id("VideoExampleGen")
    statistics = tfx.components.StatisticsGen(examples=video_examples.outputs["examples"])
    schema = tfx.components.SchemaGen(statistics=statistics.outputs["statistics"], infer_feature_shape=True)
    video_folds = FoldSplit(
        examples=video_examples.outputs["examples"],
        num_classes=data.num_classes,
        num_folds=folds.num_folds,
        holdout_fraction=folds.holdout_fraction,
        seed=folds.seed,
        unlabelled_splits=data.unlabelled_splits,
    ).with_id("VideoFoldSplit")
    nodes = [video_examples, statistics, schema, video_folds]
    if data.frame_dir:
        frame_examples = YT8MExampleGen(
            input_base=data.frame_dir,
            input_config=input_config,
            num_classes=data.num_classes,
            unlabelled_splits=data.unlabelled_splits,
            payload_format=example_gen_pb2.FORMAT_TF_SEQUENCE_EXAMPLE,
        ).with_id("FrameExampleGen")
        frame_folds = FoldSplit(
            examples=frame_examples.outputs["examples"],
            num_classes=data.num_classes,
            unlabelled_splits=data.unlabelled_splits,
            fold_reference=video_folds.outputs["split_examples"],
        ).with_id("FrameFoldSplit")
        nodes += [frame_examples, frame_folds]
    return nodes


def create_pipeline(config: PipelineConfig, metadata_connection_config=None) -> tfx.dsl.Pipeline:
    """The TFX pipeline for `config` (sqlite ML Metadata under the config's home unless given)."""
    if metadata_connection_config is None:
        metadata_connection_config = tfx.orchestration.metadata.sqlite_metadata_connection_config(
            config.metadata_path
        )
    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=create_components(config),
        enable_cache=config.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(config.beam_pipeline_args),
    )
