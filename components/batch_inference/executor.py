"""Executor of BatchInference: the pushed model over the test split, streamed into a Kaggle CSV."""

from __future__ import annotations

import os
from typing import Any

import tensorflow as tf
from tfx.dsl.components.base import base_executor
from tfx.types import artifact

from components.splits import TEST, check_split_counts, split_batches, split_files
from trainer.submission import write_submission

SUBMISSION_FILE = "submission.csv"


class Executor(base_executor.BaseExecutor):
    def Do(  # noqa: N802 (TFX API)
        self,
        input_dict: dict[str, list[artifact.Artifact]],
        output_dict: dict[str, list[artifact.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        pushed, examples = input_dict["pushed_model"][0], input_dict["examples"][0]
        if pushed.get_int_custom_property("pushed") != 1:
            raise ValueError(
                f"{pushed.uri}: the model was not pushed; there is nothing to run inference with"
            )
        videos = sum(len(batch) for batch in split_batches(examples, TEST))
        check_split_counts(examples, {TEST: videos})  # before the model runs: a submission of every video
        submission = output_dict["submission"][0]
        path = os.path.join(submission.uri, SUBMISSION_FILE)
        tf.io.gfile.makedirs(submission.uri)  # Kubeflow's entrypoint creates no output folder
        rows = write_submission(pushed.uri, split_files(examples, TEST), path, exec_properties["top_k"])
        submission.set_int_custom_property("rows", rows)
        submission.set_string_custom_property("file", path)
        submission.set_string_custom_property("model_uri", pushed.uri)
