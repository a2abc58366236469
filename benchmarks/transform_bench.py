"""Transform benchmarks: (1) does per-dimension standardisation of mean_rgb / mean_audio help the video-level
L1 models, and (2) the Transform node's time and memory.

(1) `--part standardize`: on generated data, each video-level L1 config of `configs/l1/` is trained (the
pipeline's `trainer.l1_run.train_model`, early stopping on its own validation slice of the training split)
once on the raw features and once on features standardised by the training split's per-dimension mean and
standard deviation, with the same seeds; both are scored on the `validate` split, which neither run chose
anything on. Reported: GAP@20 of each, the paired difference and its paired-bootstrap 95% interval over
the validate videos, and the mean difference over all (config, seed) pairs.

(2) `--part node`: the TFX Transform executor (the pipeline's preprocessing_fn and splits config) on
generated fold-split examples of `--videos` videos: wall time, CPU time and peak RSS of the process.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from benchmarks.common import print_table
from pipeline.config import LOCAL_BEAM_PIPELINE_ARGS
from pipeline.synth import SynthConfig, write_dataset
from trainer import features as F
from trainer.l1_config import load_l1_config
from trainer.l1_run import train_model
from trainer.metrics import bootstrap_gaps, gap_at_k
from trainer.readers import make_dataset

VIDEO_CONFIGS = ("logistic", "moe", "gated_mlp_lsep", "mlp_bottleneck", "resnet_like_mixup")
CONFIG_DIR = Path(__file__).parents[1] / "configs" / "l1"
BEAM_ARGS = list(LOCAL_BEAM_PIPELINE_ARGS)  # the local runs'


def _data(out: Path, videos: int, classes: int, seed: int) -> Path:
    data = out / f"standardize_{videos}_{classes}_{seed}"
    if not (data / "synth.json").exists():
        write_dataset(SynthConfig(videos=videos, classes=classes, seed=seed, layouts=("video",)), data)
    return data


def _arrays(patterns: list[str], classes: int) -> dict[str, np.ndarray]:
    batches = list(make_dataset(patterns, "video", classes, 1024))
    return {
        key: np.concatenate([b[key].numpy() for b in batches]) for key in (F.MEAN_RGB, F.MEAN_AUDIO, F.LABELS)
    }


def standardize_part(args) -> None:
    data = _data(args.out, args.videos, args.classes, args.data_seed)
    train_patterns = [str(data / "video" / "train*")]
    validate = _arrays([str(data / "video" / "validate*")], args.classes)
    training = _arrays(train_patterns, args.classes)
    moments = {
        key: (training[key].mean(axis=0), training[key].std(axis=0)) for key in (F.MEAN_RGB, F.MEAN_AUDIO)
    }

    def standardize(parsed):
        return {
            **parsed,
            **{key: (parsed[key] - mean) / np.maximum(std, 1e-12) for key, (mean, std) in moments.items()},
        }

    rows, differences = [], []
    for name in args.configs:
        base = load_l1_config(CONFIG_DIR / f"{name}.yaml")
        for seed in range(args.seeds):
            config = dataclasses.replace(
                base, training=dataclasses.replace(base.training, seed=base.training.seed + 100 * seed)
            )
            scores = {}
            for variant, transform in (("raw", None), ("standardised", standardize)):
                started = time.perf_counter()
                model, _ = train_model(config, train_patterns, args.classes, transform=transform)
                inputs = {key: validate[key] for key in (F.MEAN_RGB, F.MEAN_AUDIO)}
                if transform is not None:
                    inputs = standardize(inputs)
                scores[variant] = tf.sigmoid(model.predict(inputs, batch_size=1024, verbose=0)).numpy()
                print(f"{name} seed {seed} {variant}: {time.perf_counter() - started:.0f} s", flush=True)
            gaps = bootstrap_gaps(scores, validate[F.LABELS], resamples=args.resamples, seed=seed)
            difference = gaps["standardised"] - gaps["raw"]
            raw, standardised = (gap_at_k(scores[v], validate[F.LABELS]) for v in ("raw", "standardised"))
            low, high = np.percentile(difference, [2.5, 97.5])
            rows.append((name, seed, raw, standardised, standardised - raw, f"[{low:+.4f}, {high:+.4f}]"))
            differences.append(difference)
    print_table(
        f"validate GAP@20, {len(validate[F.LABELS])} videos (trained on the train split)",
        ("config", "seed", "raw", "standardised", "std - raw", "95% interval"),
        rows,
        lambda v: f"{v:+.4f}" if v < 0 else f"{v:.4f}",
    )
    mean = np.mean(differences, axis=0)  # per resample: the mean over every (config, seed) pair
    low, high = np.percentile(mean, [2.5, 97.5])
    mean_difference = np.mean([row[4] for row in rows])
    print(f"\nmean std - raw over {len(rows)} pairs: {mean_difference:+.4f} [{low:+.4f}, {high:+.4f}]")


def node_part(args) -> None:
    from tfx.components.transform.executor import Executor
    from tfx.components.util import examples_utils
    from tfx.dsl.components.base.base_beam_executor import BaseBeamExecutor
    from tfx.proto import example_gen_pb2
    from tfx.types import standard_artifacts
    from tfx.utils import proto_utils

    from components.fold_split.executor import Executor as FoldSplitExecutor
    from components.video_schema.executor import Executor as SchemaExecutor
    from pipeline.pipeline import transform_splits_config
    from tests.builders import split_artifact
    from trainer.transform import PREPROCESSING_FN

    root = (args.out / f"transform_node_{args.videos}").resolve()
    context = BaseBeamExecutor.Context(beam_pipeline_args=BEAM_ARGS, tmp_dir=str(root / "tmp"))
    data = root / "data"
    if not (data / "synth.json").exists():
        write_dataset(
            SynthConfig(
                videos=args.videos, classes=args.classes, layouts=("video",), videos_per_shard=10_000
            ),
            data,
        )
    folds = standard_artifacts.Examples()
    folds.uri = str(root / "folds")
    if not (root / "folds").exists():
        raw = standard_artifacts.Examples()
        splits = {split: [] for split in ("train", "validate", "test")}
        split_artifact(raw, root / "raw", splits)
        for split in splits:
            for path in (data / "video").glob(f"{split}*"):
                os.link(path, root / "raw" / f"Split-{split}" / path.name)
        examples_utils.set_payload_format(raw, example_gen_pb2.FORMAT_TF_EXAMPLE)
        params = {"num_folds": 5, "holdout_fraction": 0.05, "seed": 0, "num_classes": args.classes}
        FoldSplitExecutor(context).Do(
            {"examples": [raw]}, {"split_examples": [folds]}, {**params, "unlabelled_splits": "test"}
        )
    folds.split_names = '["fold_0","fold_1","fold_2","fold_3","fold_4","holdout","test"]'
    examples_utils.set_payload_format(folds, example_gen_pb2.FORMAT_TF_EXAMPLE)
    schema = standard_artifacts.Schema()
    schema.uri = str(root / "schema")
    os.makedirs(schema.uri, exist_ok=True)
    SchemaExecutor().Do({}, {"schema": [schema]}, {})
    graph = standard_artifacts.TransformGraph()
    graph.uri = str(root / f"graph_{time.time_ns()}")
    started, cpu = time.perf_counter(), time.process_time()
    Executor(context).Do(
        {"examples": [folds], "schema": [schema]},
        {"transform_graph": [graph]},
        {
            "preprocessing_fn": PREPROCESSING_FN,
            "splits_config": proto_utils.proto_to_json(transform_splits_config(5)),
            "disable_statistics": 1,
            "force_tf_compat_v1": 0,
        },
    )
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"Transform node, {args.videos} videos: {wall:.1f} s wall, {cpu:.1f} s CPU, peak RSS {peak:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("standardize", "node"), required=True)
    parser.add_argument("--out", type=Path, default=Path("bench_out"))
    parser.add_argument("--videos", type=int, default=3000)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--configs", nargs="+", default=list(VIDEO_CONFIGS))
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    standardize_part(args) if args.part == "standardize" else node_part(args)


if __name__ == "__main__":
    main()
