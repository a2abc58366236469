"""SizeLimitedPusher: TFX's Pusher to a filesystem destination, refusing models over a size limit."""

from __future__ import annotations

from tfx.components import Pusher
from tfx.dsl.components.base import executor_spec
from tfx.proto import pusher_pb2
from tfx.types import channel

from components.model_pusher import executor
from components.model_pusher.executor import MAX_MODEL_BYTES


class SizeLimitedPusher(Pusher):
    """Pushes a blessed model to `<base_directory>/<unix time>/`; a model whose files exceed `max_model_bytes`
    fails the node with a message naming both sizes, and nothing is pushed."""

    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(
        self,
        model: channel.BaseChannel,
        model_blessing: channel.BaseChannel,
        base_directory: str,
        max_model_bytes: int,
    ) -> None:
        super().__init__(
            model=model,
            model_blessing=model_blessing,
            push_destination=pusher_pb2.PushDestination(
                filesystem=pusher_pb2.PushDestination.Filesystem(base_directory=base_directory)
            ),
            custom_config={MAX_MODEL_BYTES: max_model_bytes},
        )
