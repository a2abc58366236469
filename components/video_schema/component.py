"""VideoSchema: the schema of the video-level records, as the trainers' readers parse them."""

from __future__ import annotations

from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import channel, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec

from components.video_schema import executor


class VideoSchemaSpec(ComponentSpec):
    PARAMETERS = {}
    INPUTS = {}
    OUTPUTS = {"schema": ChannelParameter(type=standard_artifacts.Schema)}


class VideoSchema(base_component.BaseComponent):
    """The Transform node's input schema, written from `trainer.readers.VIDEO_FEATURE_SPEC` (id, mean_rgb,
    mean_audio, labels) so that the Transform decodes records as the models do. SchemaGen's inferred schema
    marks the variable-length `labels` deprecated, which would drop them from the transform."""

    SPEC_CLASS = VideoSchemaSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self) -> None:
        super().__init__(spec=VideoSchemaSpec(schema=channel.Channel(type=standard_artifacts.Schema)))
