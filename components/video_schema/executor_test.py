"""VideoSchema executor: the schema it writes decodes records as the trainers' readers parse them."""

from __future__ import annotations

import os

from tensorflow_transform.tf_metadata import schema_utils
from tfx.types import standard_artifacts
from tfx.utils import io_utils

from components.video_schema.executor import SCHEMA_FILE, Executor
from trainer.readers import VIDEO_FEATURE_SPEC


def test_schema_is_the_readers_feature_spec(tmp_path):
    schema = standard_artifacts.Schema()
    schema.uri = str(tmp_path)
    Executor().Do({}, {"schema": [schema]}, {})
    written = io_utils.SchemaReader().read(os.path.join(tmp_path, SCHEMA_FILE))
    assert schema_utils.schema_as_feature_spec(written).feature_spec == VIDEO_FEATURE_SPEC
    assert "labels" in {feature.name for feature in written.feature}  # not deprecated, as SchemaGen's is
