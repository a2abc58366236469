"""SizeLimitedPusher executor: pushes a blessed model that fits, refuses an oversize one, skips unblessed."""

from __future__ import annotations

import json
import os

import pytest
from tfx import v1 as tfx
from tfx.types import standard_artifacts
from tfx.utils import proto_utils

from components.model_pusher.executor import Executor, ModelTooLargeError

MODEL_BYTES = 3000


def _run(tmp_path, blessed: int, limit: int) -> standard_artifacts.PushedModel:
    model = standard_artifacts.Model()
    model.uri = str(tmp_path / "model")
    serving = tmp_path / "model" / "Format-Serving"
    (serving / "variables").mkdir(parents=True)
    (serving / "saved_model.pb").write_bytes(b"m" * 1000)
    (serving / "variables" / "variables.data").write_bytes(b"v" * (MODEL_BYTES - 1000))
    blessing = standard_artifacts.ModelBlessing()
    blessing.uri = str(tmp_path / "blessing")
    blessing.set_int_custom_property("blessed", blessed)
    pushed = standard_artifacts.PushedModel()
    pushed.uri = str(tmp_path / "pushed")
    destination = tfx.proto.PushDestination(
        filesystem=tfx.proto.PushDestination.Filesystem(base_directory=str(tmp_path / "serving"))
    )
    Executor().Do(
        {"model": [model], "model_blessing": [blessing]},
        {"pushed_model": [pushed]},
        {
            "push_destination": proto_utils.proto_to_json(destination),
            "custom_config": json.dumps({"max_model_bytes": limit}),
        },
    )
    return pushed


def _pushed_files(tmp_path) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(root, name), tmp_path / "serving")
        for root, _, names in os.walk(tmp_path / "serving")
        for name in names
    )


def test_a_blessed_model_within_the_limit_is_pushed(tmp_path):
    pushed = _run(tmp_path, blessed=1, limit=MODEL_BYTES)
    assert pushed.get_int_custom_property("pushed") == 1
    version = pushed.get_string_custom_property("pushed_version")
    assert _pushed_files(tmp_path) == [f"{version}/saved_model.pb", f"{version}/variables/variables.data"]


def test_an_oversize_model_is_refused_and_nothing_is_pushed(tmp_path):
    with pytest.raises(ModelTooLargeError, match=r"3,000 bytes on disk, over the push limit of 2,999 bytes"):
        _run(tmp_path, blessed=1, limit=MODEL_BYTES - 1)
    assert _pushed_files(tmp_path) == [] and not (tmp_path / "pushed").exists()


def test_an_unblessed_model_is_not_pushed(tmp_path):
    pushed = _run(tmp_path, blessed=0, limit=MODEL_BYTES)
    assert pushed.get_int_custom_property("pushed") == 0 and _pushed_files(tmp_path) == []
