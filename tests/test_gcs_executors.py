"""Our executors with every artifact URI on gs:// (a local GCS emulator): their objects are in the bucket with
the right contents, and nothing lands in a local `gs:` folder (what os.makedirs/open on a gs:// URI do).

The executors run in one subprocess (tests/gcs_executors.py) whose environment points TF's, Beam's and
pyarrow's GCS clients at the emulator before Python starts; this process reads the bucket through
google-cloud-storage only.
"""

from __future__ import annotations

import csv
import io
import json
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from components.student_evaluator.executor import L1_MEAN, STACK, STUDENT, served_name
from tests.gcs_executors import LABELLED, NUM_FOLDS, TEST_VIDEOS

REPO = Path(__file__).parents[1]
PREFIX = "executors"


@pytest.fixture(scope="module")
def chain(gcs, tmp_path_factory):
    """(result: step -> output key -> {uri, properties}, bucket objects under PREFIX, the run's cwd)."""
    work = tmp_path_factory.mktemp("gcs_executors")
    cwd, result = work / "cwd", work / "result.json"
    cwd.mkdir()
    env = {
        **os.environ,
        **gcs.env,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    run = subprocess.run(
        [sys.executable, "-m", "tests.gcs_executors", gcs.url(PREFIX), str(result)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    return json.loads(result.read_text()), gcs.objects(f"{PREFIX}/"), cwd


def _files(objects: dict[str, bytes], uri: str, gcs) -> dict[str, bytes]:
    """Objects under an artifact URI, by path relative to it (directory markers left out)."""
    prefix = uri.removeprefix(f"gs://{gcs.bucket}/") + "/"
    return {
        name.removeprefix(prefix): data
        for name, data in objects.items()
        if name.startswith(prefix) and not name.endswith("/")
    }


def _tfrecord_count(data: bytes) -> int:
    """Records in uncompressed TFRecord bytes (length, length CRC, payload, payload CRC)."""
    count, offset = 0, 0
    while offset < len(data):
        (length,) = struct.unpack_from("<Q", data, offset)
        offset += 8 + 4 + length + 4
        count += 1
    assert offset == len(data)
    return count


def _parquet(files: dict[str, bytes], split: str) -> pd.DataFrame:
    """Every Parquet file of a split, in name order, as one frame."""
    names = sorted(name for name in files if name.startswith(f"Split-{split}/") and name.endswith(".parquet"))
    return pd.concat(
        [pq.read_table(io.BytesIO(files[name])).to_pandas() for name in names], ignore_index=True
    )


def test_every_output_is_in_the_bucket_and_no_local_gs_folder_appears(chain, gcs):
    result, objects, cwd = chain
    assert list(result) == [
        "FoldSplit",
        "VideoSchema",
        "Transform",
        "L2Merge",
        "L2Features",
        "L2LightGBM",
        "SoftLabels",
        "StudentExport",
        "StudentEvaluator",
        "Pusher",
        "BatchInference",
    ]
    for step, outputs in result.items():
        for key, output in outputs.items():
            assert output["uri"].startswith(gcs.url(PREFIX, "")), (step, key)
            assert _files(objects, output["uri"], gcs), f"{step}.{key}: no object under {output['uri']}"
    for directory in (cwd, REPO, Path(tempfile.gettempdir())):
        assert not list(directory.glob("gs:*")), directory
    assert not list(cwd.rglob("*")), "the executors wrote into their working directory"


def test_fold_split_summary_and_records_match_its_counts(chain, gcs):
    result, objects, _ = chain
    output = result["FoldSplit"]["split_examples"]
    files = _files(objects, output["uri"], gcs)
    summary = json.loads(files["fold_summary.json"])
    counts = output["properties"]["split_counts"]
    assert counts == {split: stats["videos"] for split, stats in summary["splits"].items()}
    assert sum(counts[f"fold_{k}"] for k in range(NUM_FOLDS)) + counts["holdout"] == LABELLED
    assert counts["test"] == TEST_VIDEOS
    for split, count in counts.items():
        records = sum(
            _tfrecord_count(data) for name, data in files.items() if name.startswith(f"Split-{split}/")
        )
        assert records == count, split


def test_lightgbm_models_in_the_bucket_reproduce_the_scores_they_wrote(chain, gcs):
    result, objects, _ = chain
    features_out = result["L2Features"]["features"]
    features = _files(objects, features_out["uri"], gcs)
    assert (
        json.loads(features["features_summary.json"])["holdout"]["rows"]
        == features_out["properties"]["rows"]["holdout"]
    )
    holdout = _parquet(features, "holdout")
    assert len(holdout) == features_out["properties"]["rows"]["holdout"] > 0
    models = _files(objects, result["L2LightGBM"]["model"]["uri"], gcs)
    boosters = [lgb.Booster(model_str=models[f"fold_{k}.txt"].decode()) for k in range(NUM_FOLDS)]
    columns = json.loads(models["folds.json"])["feature_columns"]
    assert columns == features_out["properties"]["feature_columns"]
    averaged = np.mean([booster.predict(holdout[columns]) for booster in boosters], axis=0)
    scores = _parquet(_files(objects, result["L2LightGBM"]["scores"]["uri"], gcs), "holdout")
    assert scores["video_id"].tolist() == holdout["video_id"].tolist()
    np.testing.assert_allclose(scores["score"], averaged, rtol=1e-6)
    metrics = json.loads(_files(objects, result["L2LightGBM"]["metrics"]["uri"], gcs)["metrics.json"])
    assert metrics["holdout_gap"] == pytest.approx(
        result["L2LightGBM"]["metrics"]["properties"]["holdout_gap"]
    )


def test_blessed_student_is_pushed_into_the_bucket_and_writes_the_submission(chain, gcs):
    result, objects, _ = chain
    blessing = _files(objects, result["StudentEvaluator"]["blessing"]["uri"], gcs)
    assert list(blessing) == ["BLESSED"]
    evaluation = json.loads(
        _files(objects, result["StudentEvaluator"]["evaluation"]["uri"], gcs)["metrics.json"]
    )
    assert evaluation["blessed"] == 1
    assert set(evaluation["holdout"]) == {"m0", "m1", L1_MEAN, "t", served_name("t"), STACK, STUDENT}
    pushed = result["Pusher"]["pushed_model"]["properties"]
    assert pushed["pushed"] == 1
    version = pushed["pushed_version"]
    serving = _files(objects, gcs.url(PREFIX, "serving", version), gcs)
    exported = _files(objects, result["StudentExport"]["model"]["uri"], gcs)
    assert serving == {name.removeprefix("Format-Serving/"): data for name, data in exported.items()}
    assert "saved_model.pb" in serving
    submission = result["BatchInference"]["submission"]
    rows = list(csv.reader(io.StringIO(_files(objects, submission["uri"], gcs)["submission.csv"].decode())))
    assert rows[0] == ["VideoId", "LabelConfidencePairs"]
    assert sorted(row[0] for row in rows[1:]) == sorted(f"t{i}" for i in range(TEST_VIDEOS))
    assert submission["properties"]["rows"] == TEST_VIDEOS
    assert all(len(row[1].split()) == 2 * 5 for row in rows[1:])  # top_k 5 (class, score) pairs
