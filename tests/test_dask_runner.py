"""Every Beam executor of the pipeline on its executor test's tiny data, under the local runs' runner and
under Beam's DaskRunner on a local dask.distributed cluster of two worker processes: the outputs are the same
(records per split, side files, artifact properties). The DaskRunner is tests/dask_runner.py's, Beam 2.77's
with its defects fixed (README "Runner portability")."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import apache_beam as beam
import distributed
import numpy as np
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
from apache_beam.options.pipeline_options import PipelineOptions
from google.protobuf import json_format
from tfx.dsl.components.base.base_beam_executor import BaseBeamExecutor
from tfx.proto import example_gen_pb2
from tfx.types import artifact

from components.example_gen import executor_test as example_gen_test
from components.fold_split import executor_test as fold_split_test
from components.head_examples import executor_test as head_examples_test
from components.l1_assemble import executor_test as l1_assemble_test
from components.l1_predict import executor_test as l1_predict_test
from components.l1_predict.executor_test import logistic  # noqa: F401 (a fixture)
from components.l2_features import executor_test as l2_features_test
from components.l2_merge import executor_test as l2_merge_test
from components.record_index import read_index
from components.soft_labels import executor_test as soft_labels_test
from pipeline.config import LOCAL_BEAM_PIPELINE_ARGS
from tests import builders
from trainer.predictions import decode_prediction
from trainer.readers import read_records

# The stages beyond a representative set (fold split with its GroupByKey and combine, a GroupByKey join,
# BatchElements' finish_bundle) take ~4 min more on 2 cores: `benchmarks/dask_bench.py` runs them.
SWEEP = pytest.mark.skipif(
    os.environ.get("YT8M_DASK_SWEEP") != "1", reason="full sweep: python -m benchmarks.dask_bench"
)
LOCAL = list(LOCAL_BEAM_PIPELINE_ARGS)  # the local runs' in-process runner (README "The local runner")
Build = Callable[[Path], list[artifact.Artifact]]


@dataclasses.dataclass
class Cluster:
    args: list[str]  # Beam args that run a pipeline on the cluster
    client: distributed.Client

    def tasks_per_worker(self) -> dict[str, int]:
        return self.client.run(lambda dask_worker: dask_worker.state.executed_count)


@pytest.fixture(scope="module")
def cluster():
    """A local dask.distributed cluster of 2 worker processes, 1 thread each, importing this checkout's code
    (`components`, `trainer`); Beam runs a pipeline on it as one bundle per element of each Create."""
    root = str(Path(__file__).parents[1])
    path = os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])
    environ = dict(os.environ)  # the Nanny sets its workers' variables in this process too (e.g. MALLOC_*)
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            env={"PYTHONPATH": path, "TF_CPP_MIN_LOG_LEVEL": "2"},
        ) as local,
        distributed.Client(local) as client,
    ):
        args = [
            "--runner=tests.dask_runner.DaskRunner",
            f"--dask_client_address={local.scheduler_address}",
            "--dask_partition_size=1",
        ]
        yield Cluster(args, client)
    os.environ.clear()
    os.environ.update(environ)


def _outputs_under(runner_args: list[str], module: ModuleType, build: Build, root: Path, monkeypatch):
    """`build(root)`, the executor test `module`'s Executor running its Beam pipeline under `runner_args`."""
    executor_class = module.Executor
    context = BaseBeamExecutor.Context(
        make_beam_pipeline_fn=lambda: beam.Pipeline(options=PipelineOptions(runner_args))
    )
    with monkeypatch.context() as patch:
        patch.setattr(module, "Executor", lambda: executor_class(context))
        return build(root)


def _file_items(path: str) -> list:
    """A file's contents as comparable items: Parquet rows, one parsed JSON value, the arrays of a record
    index, or TFRecord records."""
    if path.endswith(".index"):
        index = read_index(path)
        arrays = [index.lengths, index.keys.ids, index.keys.labels, index.keys.label_rows]
        return [f"{array.dtype} {array.tolist()}" for array in arrays]
    if path.endswith(".parquet"):
        return [json.dumps(row, sort_keys=True) for row in pq.read_table(path).to_pylist()]
    if path.endswith(".json"):
        with tf.io.gfile.GFile(path) as handle:
            return [json.dumps(json.load(handle), sort_keys=True)]
    return [_canonical(record.numpy()) for record in read_records([path])]


def _canonical(record: bytes) -> bytes:
    """A tf.train.Example's bytes with its feature map in key order: protobuf serializes a map in an order
    that differs between processes."""
    return tf.train.Example.FromString(record).SerializeToString(deterministic=True)


def _contents(uri: str) -> dict[str, list]:
    """{directory under `uri`: the sorted items of all its files}: the shard files a runner writes differ."""
    contents = {}
    for directory, _, names in tf.io.gfile.walk(uri):
        items = [item for name in names for item in _file_items(os.path.join(directory, name))]
        contents[os.path.relpath(directory, uri)] = sorted(items)
    return contents


def _properties(output: artifact.Artifact, root: Path) -> dict:
    """The artifact's properties, with the paths under `root` (where its runner's run wrote) as <root>."""
    message = json.dumps(json_format.MessageToDict(output.mlmd_artifact)).replace(str(root), "<root>")
    return {key: json.loads(message).get(key) for key in ("properties", "customProperties")}


def _assert_same_outputs(
    module: ModuleType, build: Build, tmp_path: Path, cluster: Cluster, monkeypatch, same_records: bool = True
) -> tuple[list[artifact.Artifact], list[artifact.Artifact]]:
    direct = _outputs_under(LOCAL, module, build, tmp_path / "direct", monkeypatch)
    before = cluster.tasks_per_worker()
    dask = _outputs_under(cluster.args, module, build, tmp_path / "dask", monkeypatch)
    after = cluster.tasks_per_worker()
    assert all(after[worker] > before[worker] for worker in after), f"not every worker ran: {before} {after}"
    assert len(direct) == len(dask)
    for expected, actual in zip(direct, dask, strict=True):
        assert _properties(actual, tmp_path / "dask") == _properties(expected, tmp_path / "direct")
        contents = _contents(expected.uri)
        assert sum(map(len, contents.values())) > 0, f"{expected.uri}: nothing written"
        if same_records:
            assert _contents(actual.uri) == contents
    return direct, dask


def _files(uri: str) -> dict[str, list[bytes]]:
    """{file under `uri`: its records in order}."""
    return {
        os.path.relpath(os.path.join(directory, name), uri): [
            _canonical(r.numpy()) for r in read_records([os.path.join(directory, name)])
        ]
        for directory, _, names in tf.io.gfile.walk(uri)
        for name in names
        if name.endswith(".tfrecord")
    }


def test_example_gen(tmp_path, cluster, monkeypatch):
    def build(root: Path) -> list[artifact.Artifact]:
        data = root / "data"
        data.mkdir(parents=True)
        for index in range(3):
            example_gen_test._write(data / f"train{index:04d}.tfrecord", count=5 + index)
        example_gen_test._write(data / "test0000.tfrecord", count=4)
        splits = {"train": "train*.tfrecord", "test": "test*.tfrecord"}
        return [
            example_gen_test._import(data, root / "out", splits, example_gen_pb2.FORMAT_TF_EXAMPLE, "test")[1]
        ]

    outputs = _assert_same_outputs(example_gen_test, build, tmp_path, cluster, monkeypatch)
    direct, dask = (_files(artifacts[0].uri) for artifacts in outputs)
    assert dask == direct and len(direct) == 4  # the same files, records in the same order


@pytest.mark.parametrize("indexed", [True, False], ids=["by record index", "by parsing"])
def test_fold_split(tmp_path, cluster, monkeypatch, indexed):
    splits = {
        "train": fold_split_test._videos("t", 60, "video"),
        "validate": fold_split_test._videos("v", 30, "video"),
        "test": fold_split_test._videos("x", 10, "video", labelled=False),
    }

    def build(root: Path) -> list[artifact.Artifact]:
        if not indexed:  # hand-written Examples without a record index
            return [fold_split_test._run(root, "video", splits)]
        data = root / "data"
        data.mkdir(parents=True)
        for split, records in splits.items():
            builders.write_tfrecord(data / f"{split}0000.tfrecord", records)
        patterns = {split: f"{split}*" for split in splits}
        examples = example_gen_test._import(
            data, root / "examples", patterns, example_gen_pb2.FORMAT_TF_EXAMPLE, "test"
        )[1]
        return [fold_split_test._fold_split(examples, root / "out")]

    outputs = _assert_same_outputs(fold_split_test, build, tmp_path, cluster, monkeypatch)
    direct, dask = (_files(artifacts[0].uri) for artifacts in outputs)
    assert dask == direct and len(direct) >= 5  # the same files, records in the same order


def test_l1_predict(tmp_path, cluster, monkeypatch, logistic):  # noqa: F811
    def build(root: Path) -> list[artifact.Artifact]:
        return [l1_predict_test._predict(root, logistic)]

    # A model's scores change in the last bits with the batch a record is scored in, and batches follow the
    # runner's bundles: the same videos and folds, scores within float32 rounding.
    outputs = _assert_same_outputs(l1_predict_test, build, tmp_path, cluster, monkeypatch, same_records=False)
    direct, dask = (_predictions(artifacts[0].uri) for artifacts in outputs)
    assert direct.keys() == dask.keys() and len(direct) > 0
    for video, (fold, scores) in direct.items():
        assert dask[video][0] == fold
        np.testing.assert_allclose(dask[video][1], scores, rtol=1e-5, atol=1e-6)


def _predictions(uri: str) -> dict[tuple[str, str], tuple[int, np.ndarray]]:
    """{(split directory, video id): (fold, scores)} of a predictions artifact."""
    predictions = {}
    for directory, _, names in tf.io.gfile.walk(uri):
        files = [os.path.join(directory, name) for name in names if name.endswith(".tfrecord")]
        for record in read_records(files) if files else []:
            video, fold, scores = decode_prediction(record.numpy())
            predictions[os.path.relpath(directory, uri), video] = (fold, scores)
    return predictions


@SWEEP
@pytest.mark.parametrize("shard_mb", [l1_assemble_test.ONE_JOIN, l1_assemble_test.TINY_SHARDS])
def test_l1_assemble(tmp_path, cluster, monkeypatch, shard_mb):
    def build(root: Path) -> list[artifact.Artifact]:
        folds = [l1_assemble_test._fold_predictions(root / f"fold{k}", k) for k in range(2)]
        return [l1_assemble_test._assemble(root, folds, shard_mb)]

    _assert_same_outputs(l1_assemble_test, build, tmp_path, cluster, monkeypatch)


def test_l2_merge(tmp_path, cluster, monkeypatch):
    def build(root: Path) -> list[artifact.Artifact]:
        models = [l2_merge_test._model(root, m) for m in range(2)]
        return [l2_merge_test._merge(root, models, top_k=1)]

    _assert_same_outputs(l2_merge_test, build, tmp_path, cluster, monkeypatch)


@SWEEP
def test_l2_features(tmp_path, cluster, monkeypatch):
    def build(root: Path) -> list[artifact.Artifact]:
        return [l2_features_test._features(root)]

    _assert_same_outputs(l2_features_test, build, tmp_path, cluster, monkeypatch)


@SWEEP
def test_soft_labels(tmp_path, cluster, monkeypatch):
    def build(root: Path) -> list[artifact.Artifact]:
        return list(soft_labels_test._run(root, soft_labels_test.ROWS, soft_labels_test.ONE_JOIN))

    _assert_same_outputs(soft_labels_test, build, tmp_path, cluster, monkeypatch)


@SWEEP
def test_head_examples(tmp_path, cluster, monkeypatch):
    def build(root: Path) -> list[artifact.Artifact]:
        return [head_examples_test._run(root)]

    _assert_same_outputs(head_examples_test, build, tmp_path, cluster, monkeypatch)
