"""Our executors, chained on tiny hand-made inputs, with every input and output artifact URI on gs://:
FoldSplit -> VideoSchema -> Transform (TFX's executor, the pipeline's preprocessing_fn and splits), and
L2Merge (two models' hand-made predictions, sharded join) -> L2Features -> L2LightGBM -> SoftLabels, and an
untrained student (tower + head reading the Transform graph, saved as a student Trainer saves them) ->
StudentExport -> StudentEvaluator -> SizeLimitedPusher -> BatchInference. Output directories are made
first, as TFX's launcher does.

Run by tests/test_gcs_executors.py in a process whose environment points every GCS client at the local
emulator (tests/gcs_emulator.py), set before Python starts:
    python -m tests.gcs_executors gs://BUCKET/PREFIX RESULT_JSON
RESULT_JSON gets each output artifact's URI and custom properties, by step.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
import tensorflow as tf
from tfx import v1 as tfx
from tfx.components.transform.executor import Executor as Transform
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_beam_executor
from tfx.proto import example_gen_pb2
from tfx.types import artifact, standard_artifact_utils, standard_artifacts
from tfx.utils import proto_utils

from components import artifacts
from components.batch_inference.executor import Executor as BatchInference
from components.fold_split.executor import Executor as FoldSplit
from components.head_examples.executor import towers_key
from components.l2_features.executor import Executor as L2Features
from components.l2_lightgbm.executor import Executor as L2LightGBM
from components.l2_merge.executor import Executor as L2Merge
from components.model_pusher.executor import Executor as Pusher
from components.soft_labels.executor import Executor as SoftLabels
from components.splits import SPLIT_COUNTS
from components.student_evaluator import executor as evaluator
from components.student_export.executor import Executor as StudentExport
from components.video_schema.executor import Executor as VideoSchema
from pipeline.config import LOCAL_BEAM_PIPELINE_ARGS
from pipeline.pipeline import transform_splits_config
from pipeline.synth import video_example
from tests import builders
from trainer.l1_run import write_export
from trainer.predictions import AVERAGED, encode_prediction
from trainer.readers import read_records
from trainer.records import video_id_of
from trainer.student_run import KERAS_MODEL, REFIT, head_scores_function, scores_function
from trainer.students import parse_student_config
from trainer.transform import PREPROCESSING_FN, graph_transform, transform_layer

START = time.monotonic()
CLASSES = 8
LABELLED, TEST_VIDEOS = 48, 8
NUM_FOLDS = 2
MODELS = ("m0", "m1")
LIGHTGBM = """
num_boost_round: 20
early_stopping_rounds: 5
validation_fraction: 0.2
seed: 3
params: {learning_rate: 0.1, num_leaves: 7, min_data_in_leaf: 5, num_threads: 1}
"""
TRAINING = "{epochs: 1, batch_size: 4}"
BEAM_ARGS = list(LOCAL_BEAM_PIPELINE_ARGS)  # the local runs'


def labels_of(index: int) -> tuple[int, ...]:
    return (index % CLASSES, (index * 3 + 1) % CLASSES)


class Chain:
    """The executors one after another, every artifact under `url`; `result` holds each step's outputs."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.context = base_beam_executor.BaseBeamExecutor.Context(
            beam_pipeline_args=BEAM_ARGS, tmp_dir=f"{url}/tmp"
        )
        self.result: dict[str, dict] = {}

    def output(self, kind: type[artifact.Artifact], name: str) -> artifact.Artifact:
        output = kind()
        output.uri = f"{self.url}/{name}"
        tf.io.gfile.makedirs(output.uri)
        return output

    def record(self, step: str, **outputs: artifact.Artifact) -> None:
        print(f"gcs_executors: {step} done at {time.monotonic() - START:.0f} s", file=sys.stderr, flush=True)
        self.result[step] = {
            key: {"uri": output.uri, "properties": _properties(output)} for key, output in outputs.items()
        }

    def write_split(self, source: artifact.Artifact, split: str, records: list[bytes]) -> None:
        directory = f"{source.uri}/Split-{split}"
        tf.io.gfile.makedirs(directory)
        with tf.io.TFRecordWriter(f"{directory}/part.gz", "GZIP") as writer:
            for record in records:
                writer.write(record)

    def fold_split(self) -> artifact.Artifact:
        examples = self.output(standard_artifacts.Examples, "ingested")
        examples.split_names = standard_artifact_utils.encode_split_names(["train", "test"])
        examples_utils.set_payload_format(examples, example_gen_pb2.FORMAT_TF_EXAMPLE)
        videos = [builders.video(video_id=f"v{i}", labels=labels_of(i), frames=2) for i in range(LABELLED)]
        self.write_split(examples, "train", [video_example(video, True) for video in videos])
        tests = [builders.video(video_id=f"t{i}", labels=(), frames=2) for i in range(TEST_VIDEOS)]
        self.write_split(examples, "test", [video_example(video, False) for video in tests])
        examples.set_json_value_custom_property(SPLIT_COUNTS, {"train": LABELLED, "test": TEST_VIDEOS})
        folds = self.output(standard_artifacts.Examples, "FoldSplit/split_examples")
        FoldSplit(self.context).Do(
            {"examples": [examples]},
            {"split_examples": [folds]},
            {
                "num_folds": NUM_FOLDS,
                "holdout_fraction": 0.25,
                "seed": 5,
                "num_classes": CLASSES,
                "unlabelled_splits": "test",
            },
        )
        self.record("FoldSplit", split_examples=folds)
        return folds

    def transform(self, folds: artifact.Artifact) -> artifact.Artifact:
        schema = self.output(standard_artifacts.Schema, "VideoSchema/schema")
        VideoSchema().Do({}, {"schema": [schema]}, {})
        graph = self.output(standard_artifacts.TransformGraph, "Transform/transform_graph")
        Transform(self.context).Do(
            {"examples": [folds], "schema": [schema]},
            {"transform_graph": [graph]},
            {
                "preprocessing_fn": PREPROCESSING_FN,
                "splits_config": proto_utils.proto_to_json(transform_splits_config(NUM_FOLDS)),
                "disable_statistics": 1,
                "force_tf_compat_v1": 0,
            },
        )
        self.record("VideoSchema", schema=schema)
        self.record("Transform", transform_graph=graph)
        return graph

    def predictions(self, folds: artifact.Artifact, name: str, seed: int, splits) -> artifact.Artifact:
        """Assembled predictions of a model: scores that lean towards each video's labels."""
        rng = np.random.default_rng(seed)
        output = self.output(artifacts.Predictions, f"predictions/{name}")
        output.set_string_custom_property("config_name", name)
        output.set_int_custom_property("num_classes", CLASSES)
        output.split_names = standard_artifact_utils.encode_split_names(list(splits))
        for split in splits:
            sources = [f"fold_{k}" for k in range(NUM_FOLDS)] if split == "oof" else [split]
            records = []
            for fold, source in enumerate(sources):
                files = tf.io.gfile.glob(f"{folds.uri}/Split-{source}/*")
                for serialized in read_records(files).as_numpy_iterator():
                    video_id = video_id_of(serialized, "video")
                    truth = np.zeros(CLASSES, np.float32)
                    if video_id.startswith("v"):
                        truth[list(labels_of(int(video_id[1:])))] = 1
                    scores = (0.6 * truth + 0.4 * rng.random(CLASSES)).astype(np.float32)
                    records.append(encode_prediction(video_id, scores, fold if split == "oof" else AVERAGED))
            self.write_split(output, split, records)
        return output

    def stack(self, folds: artifact.Artifact, models: list[artifact.Artifact]) -> artifact.Artifact:
        merged = self.output(artifacts.MergedPredictions, "L2Merge/merged")
        inputs = {"examples": [folds], **{f"predictions_{m}": [p] for m, p in enumerate(models)}}
        # shard_mb below the input size (~0.27 MB): a join in 2 shards, its scratch directory on gs:// too
        L2Merge(self.context).Do(
            inputs, {"merged": [merged]}, {"num_models": len(models), "top_k": 3, "shard_mb": 0.2}
        )
        self.record("L2Merge", merged=merged)
        features = self.output(artifacts.CandidateFeatures, "L2Features/features")
        L2Features(self.context).Do({"merged": [merged]}, {"features": [features]}, {})
        self.record("L2Features", features=features)
        outputs = {
            "scores": self.output(artifacts.CandidateScores, "L2LightGBM/scores"),
            "model": self.output(standard_artifacts.Model, "L2LightGBM/model"),
            "metrics": self.output(artifacts.StageMetrics, "L2LightGBM/metrics"),
        }
        L2LightGBM().Do(
            {"features": [features]},
            {key: [value] for key, value in outputs.items()},
            {"config_yaml": LIGHTGBM, "config_source": "inline.yaml", "gap_k": 20},
        )
        self.record("L2LightGBM", **outputs)
        soft_labels = self.output(artifacts.SoftLabelIndex, "SoftLabels/soft_labels")
        student_examples = self.output(standard_artifacts.Examples, "SoftLabels/student_examples")
        SoftLabels(self.context).Do(
            {"scores": [outputs["scores"]], "examples": [folds]},
            {"soft_labels": [soft_labels], "student_examples": [student_examples]},
            {},
        )
        self.record("SoftLabels", soft_labels=soft_labels, student_examples=student_examples)
        return outputs["scores"]

    def trained(self, name: str, keras_model, serve, info: dict, layer) -> artifact.Artifact:
        """A Model artifact laid out as a student Trainer writes it (SavedModel with the Transform graph's
        `layer`, training info, .keras)."""
        model = self.output(standard_artifacts.Model, f"{name}/model")
        path = f"{model.uri}/Format-Serving"
        write_export(keras_model, serve, path, info, layer)
        keras_model.save(os.path.join(path, KERAS_MODEL))
        return model

    def student(self, folds, models, tower_predictions, stack_scores, graph) -> None:
        tower = parse_student_config(f"name: t\nmodel: A\nparams: {{widths: [4]}}\ntraining: {TRAINING}", "t")
        head = parse_student_config(
            f"name: h\nmodel: ensemble\nparams: {{hidden: [4]}}\ntraining: {TRAINING}", "h"
        )
        tower_model, head_model = tower.build_model(CLASSES), head.build_model(CLASSES, 1)
        layer = transform_layer(graph.uri)
        transform = graph_transform(layer)
        towers = self.trained(
            "tower",
            tower_model,
            scores_function(tower_model, CLASSES, transform),
            {"config": "t", "fold": REFIT},
            layer,
        )
        head_info = {"config": "h", "fold": REFIT, "tower_names": ["t"], "num_classes": CLASSES}
        heads = self.trained(
            "head",
            head_model,
            head_scores_function(head_model, CLASSES, CLASSES, transform),
            head_info,
            layer,
        )
        exported = self.output(standard_artifacts.Model, "StudentExport/model")
        StudentExport().Do(
            {towers_key(0): [towers], "head": [heads], "transform_graph": [graph]},
            {"model": [exported]},
            {"num_towers": 1, "top_k": 5},
        )
        self.record("StudentExport", model=exported)
        evaluation = self.output(artifacts.StageMetrics, "StudentEvaluator/evaluation")
        blessing = self.output(standard_artifacts.ModelBlessing, "StudentEvaluator/blessing")
        evaluator.Executor().Do(
            {
                "examples": [folds],
                "model": [exported],
                "stack_scores": [stack_scores],
                evaluator.tower_key(0): [tower_predictions],
                evaluator.served_tower_key(0): [towers],
                **{evaluator.l1_key(m): [p] for m, p in enumerate(models)},
            },
            {"evaluation": [evaluation], "blessing": [blessing]},
            {
                "num_classes": CLASSES,
                "num_l1_models": len(models),
                "num_towers": 1,
                "num_served_towers": 1,
                "gap_k": 20,
                "gap_floor": 0.0,
                "stack_fraction": 0.0,
                "bootstrap_resamples": 50,
                "bootstrap_seed": 0,
            },
        )
        self.record("StudentEvaluator", evaluation=evaluation, blessing=blessing)
        pushed = self.output(standard_artifacts.PushedModel, "Pusher/pushed_model")
        destination = tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=f"{self.url}/serving")
        )
        Pusher().Do(
            {"model": [exported], "model_blessing": [blessing]},
            {"pushed_model": [pushed]},
            {
                "push_destination": proto_utils.proto_to_json(destination),
                "custom_config": json.dumps({"max_model_bytes": 10**9}),
            },
        )
        self.record("Pusher", pushed_model=pushed)
        submission = self.output(artifacts.Submission, "BatchInference/submission")
        BatchInference().Do(
            {"pushed_model": [pushed], "examples": [folds]}, {"submission": [submission]}, {"top_k": 5}
        )
        self.record("BatchInference", submission=submission)


def _properties(output: artifact.Artifact) -> dict:
    names = output.mlmd_artifact.custom_properties
    values = {}
    for name in names:
        value = names[name]
        kind = value.WhichOneof("value")
        if kind == "struct_value":
            values[name] = output.get_json_value_custom_property(name)
        else:
            values[name] = getattr(value, kind)
    return values


def main(url: str, result_path: str) -> None:
    chain = Chain(url)
    folds = chain.fold_split()
    graph = chain.transform(folds)
    splits = ("oof", "holdout", "test")
    models = [chain.predictions(folds, name, seed, splits) for seed, name in enumerate(MODELS)]
    scores = chain.stack(folds, models)
    tower_predictions = chain.predictions(folds, "t", 9, ("holdout",))
    chain.student(folds, models, tower_predictions, scores, graph)
    with open(result_path, "w") as handle:  # a local file: the test's own result, not an artifact
        json.dump(chain.result, handle, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
