"""Student benchmark: the distilled EnsembleModel's holdout GAP against the stack and its hard-label ablation,
its size, and the serving throughput of its SavedModel against the Keras model.

Reads the latest demo run (configs/demo.yaml, --home) from ML Metadata; waits (--wait) while a `yt8m run` of
that config is in progress.

1. The pipeline's own holdout table: the StudentEvaluator `evaluation` artifact (every L1 model, the stack,
   each tower's fold-averaged predictions, the EnsembleModel) and the blessing reason.
2. Ablation, one process, one harness: on the SoftLabels `student_examples`, the whole student trained twice,
   as the pipeline does (towers per fold -> out-of-fold predictions (float32 records) -> head examples;
   towers refit on every fold; head on the OOF tower outputs; refit towers feed the head), once with each
   config's own `hard_label_weight` (soft labels) and once with hard_label_weight = 1.0 (hard labels only).
   Same configs (epochs, seeds, early stopping) as the pipeline. Holdout GAP@k of each refit tower and of the
   ensemble; targets: ensemble (soft) >= 0.99 x stack GAP, ensemble (soft) - ensemble (hard) > 0.
3. Size: the StudentExport artifact's parameter count and bytes on disk, the analytic count of the demo
   configs, and the full-size (configs/students_full) float32 bytes against the 1 GB limit.
4. Serving: the pushed SavedModel's `serving_default` (parse + towers + head + top-k in one graph) against
   the Keras serving ensemble built from the pipeline's refit towers' and head's `model.keras`
   (parse_video_examples + eager call + top-k), on the same batches of 256 serialized holdout + test records.
   Parsing is included in both. Repeated 3 times, alternating, median videos/s.
5. Head skew (--head-skew): the head trains on the fold towers' out-of-fold outputs but is served on the
   refit towers. Two head inputs x two servings: head on OOF outputs or on in-sample ones (each training
   video: the mean of the fold towers that trained on it), served on the refit towers or on each tower's
   fold models averaged (5x the towers' size); plus the towers' mean without a head. The choice is made on
   a slice of the training folds: nested, the last fold held out and the whole procedure (fold towers,
   refit, head) run on the other folds, scored on it; the holdout (outer procedure on all folds) is reported
   beside it. Paired-bootstrap 95% intervals of each variant - today's (head on OOF, refit towers served).
   Without a demo run, --synth-videos N runs it on N generated videos (pipeline.synth, 100 classes;
   hard labels as targets since there is no stack).

    python -m benchmarks.student_bench [--home yt8m_home] [--config configs/demo.yaml] [--towers A,C]
    python -m benchmarks.student_bench --head-skew --synth-videos 3000 [--towers A,C]

Results also go to bench_out/student_bench.json; the ablation's training logs to
bench_out/student_bench_train.log. Every number is one run on a shared machine.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import hashlib  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from dataclasses import dataclass, replace  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402

DEMO_CONFIG = "configs/demo.yaml"
FULL_CONFIGS = "configs/students_full"
STACK_FRACTION_TARGET = 0.99
SERVING_BATCH, REPEATS = 256, 3
DONE = ("COMPLETE", "CACHED")
STACK, STUDENT = "L2 stack", "EnsembleModel"  # the StudentEvaluator's names
VARIANTS = ("soft", "hard")
TODAY = "head(OOF) + refit towers"
SYNTH_HOLDOUT_FRACTION = 0.1


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A fixed-width table; floats: 4 decimals below 10 (GAPs, ratios), 1 below 1000, none above."""
    common.print_table(title, headers, rows, _decimals)


def _decimals(value: float) -> str:
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}" if abs(value) < 1000 else f"{value:.0f}"


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISS"


# ------------------------------------------------------------------------------------------------ the run


def demo_running(config: Path) -> bool:
    """Whether a `yt8m run` (pipeline.cli run) of `config` is in progress on this machine."""
    done = subprocess.run(["pgrep", "-af", "pipeline.cli run"], capture_output=True, text=True)
    return any(config.name in line for line in done.stdout.splitlines())


def wait_for_run(config: Path, max_wait_s: float) -> None:
    start = time.perf_counter()
    if not demo_running(config):
        return
    print(f"a run of {config} is in progress; waiting up to {max_wait_s:.0f}s for it to end", flush=True)
    while demo_running(config) and time.perf_counter() - start < max_wait_s:
        time.sleep(30)
    state = "still running (reading a partial run)" if demo_running(config) else "ended"
    print(f"the run {state} after {time.perf_counter() - start:.0f}s", flush=True)


@dataclass(frozen=True)
class Run:
    """What the benchmark needs from the latest run."""

    name: str
    sqlite: Path
    executions: dict[str, Any]

    def artifact(self, node: str, key: str):
        return self.executions[node].outputs[key][0]


REQUIRED = ("SoftLabels", "StudentTrainer_head", "StudentExport", "StudentEvaluator")


def load_run(home: Path, name: str) -> Run | None:
    from pipeline.metadata import open_store, run_executions

    sqlite = home / "metadata.sqlite"
    executions = run_executions(open_store(str(sqlite)), name) if sqlite.exists() else {}
    missing = [n for n in REQUIRED if n not in executions or executions[n].state not in DONE]
    if missing:
        print(
            f"no finished student stage of '{name}' in {sqlite} ({', '.join(missing)} not done); `make demo`"
        )
        return None
    return Run(name, sqlite, executions)


# --------------------------------------------------------------------------------- 1. the pipeline's table


def pipeline_table(run: Run) -> dict[str, Any]:
    from components.student_evaluator.executor import role_rank
    from pipeline.metadata import property_value

    evaluation = run.artifact("StudentEvaluator", "evaluation")
    holdout, roles = property_value(evaluation, "holdout"), property_value(evaluation, "roles")
    k, videos = int(property_value(evaluation, "k")), int(property_value(evaluation, "holdout_videos"))
    blessed, reason = bool(property_value(evaluation, "blessed")), property_value(evaluation, "reason")
    order = sorted(holdout, key=lambda model: (role_rank(roles[model]), -holdout[model]["gap"]))
    rows = [
        (
            model,
            roles[model],
            holdout[model]["gap"],
            "[{:.4f}, {:.4f}]".format(*holdout[model].get("gap_interval", (math.nan, math.nan))),
            *(holdout[model][m] for m in ("hit_at_1", "perr", "map")),
        )
        for model in order
    ]
    execution = run.executions["StudentEvaluator"]
    print_table(
        f"1. holdout metrics of the pipeline ({videos} videos; latest '{run.name}' run in {run.sqlite}, "
        f"StudentEvaluator execution {execution.execution_id}, {execution.state})",
        ("model", "role", f"GAP@{k}", "95% interval", "Hit@1", "PERR", "MAP"),
        rows,
    )
    differences = (
        property_value(evaluation, "differences") if "differences" in evaluation.custom_properties else {}
    )
    for label, difference in differences.items():
        print(
            f"   {label}: {difference['value']:+.4f} [{difference['interval'][0]:+.4f}, "
            f"{difference['interval'][1]:+.4f}]"
        )
    stack, student = holdout[STACK]["gap"], holdout[STUDENT]["gap"]
    print(f"   {'BLESSED' if blessed else 'NOT BLESSED'}: {reason}")
    print(
        f"   {STUDENT} / stack GAP = {student / stack:.4f} (target >= {STACK_FRACTION_TARGET}): "
        f"{verdict(student >= STACK_FRACTION_TARGET * stack)}"
    )
    return {
        "k": k,
        "holdout_videos": videos,
        "holdout": holdout,
        "roles": roles,
        "blessed": blessed,
        "reason": reason,
    }


# -------------------------------------------------------------------------------------------- 2. ablation


@dataclass(frozen=True)
class SplitData:
    """One split of the student examples: ids, raw records, model inputs and multi-hot labels."""

    ids: list[str]
    records: list[bytes]
    inputs: dict[str, np.ndarray]
    labels: np.ndarray


def split_files(uri: str, split: str) -> list[str]:
    import tensorflow as tf

    return sorted(tf.io.gfile.glob(os.path.join(uri, f"Split-{split}", "*")))


def read_split(uri: str, split: str, num_classes: int) -> SplitData:

    from trainer.features import ID, LABELS, MEAN_AUDIO, MEAN_RGB
    from trainer.readers import parse_video_examples, read_records
    from trainer.transform import FEATURES, l2_normalized_concat

    files = split_files(uri, split)
    if not files:
        raise FileNotFoundError(f"{uri}: no files in Split-{split}")
    ids, records, parts = [], [], {MEAN_RGB: [], MEAN_AUDIO: [], LABELS: []}
    for batch in read_records(files).batch(1024):
        parsed = parse_video_examples(batch, num_classes)
        records += list(batch.numpy())
        ids += [v.decode() for v in parsed[ID].numpy()]
        for key, values in parts.items():
            values.append(parsed[key].numpy())
    inputs = {
        FEATURES: l2_normalized_concat(*(np.concatenate(parts[k]) for k in (MEAN_RGB, MEAN_AUDIO))).numpy()
    }
    return SplitData(ids, records, inputs, np.concatenate(parts[LABELS]))


def features_transform(parsed):
    """The students' `features` as the pipeline's Transform graph computes them (no analyser involved)."""
    from trainer.features import MEAN_AUDIO, MEAN_RGB
    from trainer.transform import FEATURES, l2_normalized_concat

    return {**parsed, FEATURES: l2_normalized_concat(parsed[MEAN_RGB], parsed[MEAN_AUDIO])}


def predict(model, inputs: dict[str, np.ndarray], batch: int = 1024) -> np.ndarray:
    """Probabilities [N, C], the model called in inference mode."""
    count = len(next(iter(inputs.values())))
    return np.concatenate(
        [
            np.asarray(model({k: v[s : s + batch] for k, v in inputs.items()}, training=False))
            for s in range(0, count, batch)
        ]
    )


def hard_labels_only(config):
    return replace(config, training=replace(config.training, hard_label_weight=1.0))


def write_head_examples(records: list[bytes], tower_outputs: np.ndarray, path: Path) -> None:
    """Student records with `tower_outputs` ([N, towers * C], tower order) added, GZIP, as HeadExamples."""
    import tensorflow as tf
    from tensorflow.core.example import example_pb2

    from trainer.students import TOWER_OUTPUTS

    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path), tf.io.TFRecordOptions(compression_type="GZIP")) as writer:
        for record, outputs in zip(records, tower_outputs, strict=True):
            example = example_pb2.Example.FromString(record)
            example.features.feature[TOWER_OUTPUTS].float_list.value.extend(outputs.tolist())
            writer.write(example.SerializeToString())


def train_variant(
    variant: str,
    towers: Sequence,
    head,
    uri: str,
    data: dict[str, SplitData],
    folds: list[str],
    num_classes: int,
    k: int,
    log,
) -> dict[str, Any]:
    """The whole student on `variant` targets: per tower OOF over the folds and a refit, the head on the OOF
    outputs, the refit towers feeding the head; holdout metrics of each refit tower and of the ensemble."""
    from trainer.metrics import evaluate
    from trainer.student_run import train_student
    from trainer.students import build_serving_ensemble

    if variant == "hard":
        towers, head = [hard_labels_only(t) for t in towers], hard_labels_only(head)
    start = time.perf_counter()
    patterns = {split: os.path.join(uri, f"Split-{split}", "*") for split in folds}
    oof: dict[str, list[np.ndarray]] = {split: [] for split in folds}
    refits, result = [], {"towers": {}, "hard_label_weight": {}}
    for tower in towers:
        tower_start = time.perf_counter()
        for split in folds:
            others = [patterns[s] for s in folds if s != split]
            with contextlib.redirect_stdout(log):
                print(f"\n=== {variant} {tower.name} without {split}", flush=True)
                model, _ = train_student(tower, others, num_classes, features_transform)
            oof[split].append(predict(model, data[split].inputs))
            del model
        with contextlib.redirect_stdout(log):
            print(f"\n=== {variant} {tower.name} refit", flush=True)
            refit, _ = train_student(tower, list(patterns.values()), num_classes, features_transform)
        refits.append(refit)
        result["towers"][tower.name] = evaluate(
            predict(refit, data["holdout"].inputs), data["holdout"].labels, k
        )
        result["hard_label_weight"][tower.name] = tower.training.hard_label_weight
        print(
            f"   {variant}: {tower.name} ({len(folds)} folds + refit) "
            f"{time.perf_counter() - tower_start:.0f}s, "
            f"refit holdout GAP {result['towers'][tower.name]['gap']:.4f}",
            flush=True,
        )
    head_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="student_bench_head_") as tmp:
        for split in folds:
            path = Path(tmp, f"Split-{split}", "head_examples.gz")
            write_head_examples(data[split].records, np.concatenate(oof[split], axis=1), path)
        with contextlib.redirect_stdout(log):
            print(f"\n=== {variant} {head.name}", flush=True)
            head_model, _ = train_student(
                head,
                [os.path.join(tmp, f"Split-{s}", "*") for s in folds],
                num_classes,
                features_transform,
                len(towers),
            )
    ensemble = build_serving_ensemble(refits, head_model)
    result["ensemble_scores"] = predict(ensemble, data["holdout"].inputs)  # for the paired bootstrap
    result["ensemble"] = evaluate(result["ensemble_scores"], data["holdout"].labels, k)
    result["hard_label_weight"][head.name] = head.training.hard_label_weight
    result["seconds"] = time.perf_counter() - start
    print(
        f"   {variant}: head {time.perf_counter() - head_start:.0f}s, ensemble holdout GAP "
        f"{result['ensemble']['gap']:.4f}; variant {result['seconds']:.0f}s",
        flush=True,
    )
    return result


def select_towers(towers: Sequence, wanted: str | None) -> list:
    """The suite's towers (A..F order), restricted to `wanted` (comma-separated models or names)."""
    if not wanted:
        return list(towers)
    keys = {w.strip() for w in wanted.split(",") if w.strip()}
    chosen = [t for t in towers if t.model in keys or t.name in keys]
    unknown = keys - {t.model for t in chosen} - {t.name for t in chosen}
    if unknown or not chosen:
        raise SystemExit(f"--towers: unknown towers {sorted(unknown)}; have {[t.model for t in towers]}")
    return chosen


def ablation(run: Run, config, towers_arg: str | None, stack_gap: float, k: int, out: Path) -> dict[str, Any]:
    from pipeline.metadata import property_value
    from trainer.metrics import bootstrap_gaps
    from trainer.students import load_student_suite

    suite = load_student_suite(config.students.configs)
    towers = select_towers(suite.towers, towers_arg)
    examples = run.artifact("SoftLabels", "student_examples")
    num_folds, num_classes = int(property_value(examples, "num_folds")), config.data.num_classes
    folds = [f"fold_{f}" for f in range(num_folds)]
    data = {split: read_split(examples.uri, split, num_classes) for split in [*folds, "holdout"]}
    names = [t.name for t in towers]
    restricted = (
        ""
        if len(towers) == len(suite.towers)
        else f" (restricted by --towers; suite has {len(suite.towers)})"
    )
    print(
        f"\n2. ablation on {examples.uri}: towers {names}{restricted}; {num_folds} folds, "
        f"{sum(len(data[s].ids) for s in folds)} training videos, {len(data['holdout'].ids)} holdout videos",
        flush=True,
    )
    log_path = out / "student_bench_train.log"
    with log_path.open("w") as log:
        results = {
            v: train_variant(v, towers, suite.head, examples.uri, data, folds, num_classes, k, log)
            for v in VARIANTS
        }
    rows = []
    for name in names:
        soft, hard = results["soft"]["towers"][name]["gap"], results["hard"]["towers"][name]["gap"]
        rows.append((f"{name} (refit)", soft, hard, soft - hard, soft / stack_gap))
    soft, hard = results["soft"]["ensemble"]["gap"], results["hard"]["ensemble"]["gap"]
    rows.append((STUDENT, soft, hard, soft - hard, soft / stack_gap))
    rows.append(("time s", results["soft"]["seconds"], results["hard"]["seconds"], "", ""))
    weights = sorted({w for w in results["soft"]["hard_label_weight"].values()})
    print_table(
        f"2. ablation: holdout GAP@{k}, soft targets (configs' hard_label_weight {weights}) vs hard labels "
        f"only (hard_label_weight 1.0); same harness, one process; training log {log_path}",
        ("model", "soft", "hard", "soft - hard", "soft / stack"),
        rows,
    )
    print(
        f"   {STUDENT} (soft) / stack GAP {stack_gap:.4f} = {soft / stack_gap:.4f} "
        f"(target >= {STACK_FRACTION_TARGET}): {verdict(soft >= STACK_FRACTION_TARGET * stack_gap)}"
    )
    gaps = bootstrap_gaps(
        {v: results[v].pop("ensemble_scores") for v in VARIANTS}, data["holdout"].labels, k, seed=0
    )
    low, high = np.percentile(gaps["soft"] - gaps["hard"], [2.5, 97.5])
    print(
        f"   {STUDENT} soft - hard = {soft - hard:+.4f}, paired-bootstrap 95% interval "
        f"[{low:+.4f}, {high:+.4f}] (target > 0, interval above 0): {verdict(soft > hard and low > 0)}"
    )
    return {
        "towers": names,
        "num_folds": num_folds,
        "stack_gap": stack_gap,
        "soft_minus_hard": [soft - hard, float(low), float(high)],
        **results,
    }


# ------------------------------------------------------------------------------------------- 5. head skew


@dataclass(frozen=True)
class TowerOutputs:
    """Per tower (suite order), what the head skew variants need, from one run of the fold procedure."""

    oof: dict[str, list[np.ndarray]]  # training split -> out-of-fold predictions (float16, as stored)
    in_sample: dict[str, list[np.ndarray]]  # training split -> mean of the fold models trained on it
    refit: list[np.ndarray]  # the refit tower on the evaluation split
    fold_mean: list[np.ndarray]  # the fold models averaged, on the evaluation split


def fit_towers(towers, folds: list[str], target: str, data, patterns, num_classes: int, log) -> TowerOutputs:
    """Each tower trained once per fold of `folds` (on the others) and refit on all of them, as the
    pipeline does; their predictions on the training folds and on the `target` split."""
    from trainer.student_run import train_student

    oof: dict[str, list[np.ndarray]] = {split: [] for split in folds}
    in_sample: dict[str, list[np.ndarray]] = {split: [] for split in folds}
    refit, fold_mean = [], []
    for tower in towers:
        inside = {split: [] for split in folds}
        on_target = []
        for split in folds:
            with contextlib.redirect_stdout(log):
                print(f"\n=== head skew {tower.name} without {split} (target {target})", flush=True)
                model, _ = train_student(
                    tower, [patterns[s] for s in folds if s != split], num_classes, features_transform
                )
            oof[split].append(predict(model, data[split].inputs))
            for other in folds:
                if other != split:
                    inside[other].append(predict(model, data[other].inputs))
            on_target.append(predict(model, data[target].inputs))
        for split in folds:
            in_sample[split].append(np.mean(inside[split], axis=0))
        fold_mean.append(np.mean(on_target, axis=0))
        with contextlib.redirect_stdout(log):
            print(f"\n=== head skew {tower.name} refit on {folds}", flush=True)
            model, _ = train_student(tower, [patterns[s] for s in folds], num_classes, features_transform)
        refit.append(predict(model, data[target].inputs))
    return TowerOutputs(oof, in_sample, refit, fold_mean)


def fit_head(head, inputs: dict[str, list[np.ndarray]], data, num_classes: int, log, tag: str):
    """The head trained as the pipeline trains it (train_student on head examples): every training split's
    records with `tower_outputs` = the given per-tower predictions, concatenated in tower order."""
    from trainer.student_run import train_student

    with tempfile.TemporaryDirectory(prefix="student_bench_skew_") as tmp:
        for split, outputs in inputs.items():
            path = Path(tmp, f"Split-{split}", "head_examples.gz")
            write_head_examples(data[split].records, np.concatenate(outputs, axis=1), path)
        with contextlib.redirect_stdout(log):
            print(f"\n=== head skew: head on {tag} inputs", flush=True)
            model, _ = train_student(
                head,
                [os.path.join(tmp, f"Split-{s}", "*") for s in inputs],
                num_classes,
                features_transform,
                len(next(iter(inputs.values()))),
            )
    return model


def skew_variants(towers, head, folds: list[str], target: str, data, patterns, num_classes: int, log):
    """Scores [N, C] on `target` of each head input x tower serving, and of the towers' means."""
    from trainer.students import TOWER_OUTPUTS

    outputs = fit_towers(towers, folds, target, data, patterns, num_classes, log)
    heads = {
        "OOF": fit_head(head, outputs.oof, data, num_classes, log, "OOF"),
        "in-sample": fit_head(head, outputs.in_sample, data, num_classes, log, "in-sample"),
    }
    servings = {"refit towers": outputs.refit, "fold-mean towers": outputs.fold_mean}
    scores = {}
    for (head_input, model), (serving, towers_out) in itertools.product(heads.items(), servings.items()):
        inputs = {**data[target].inputs, TOWER_OUTPUTS: np.concatenate(towers_out, axis=1)}
        scores[f"head({head_input}) + {serving}"] = predict(model, inputs)
    for serving, towers_out in servings.items():
        scores[f"mean of {serving} (no head)"] = np.mean(towers_out, axis=0)
    return scores


def synth_student_examples(videos: int, seed: int, num_folds: int, root: Path) -> Path:
    """Generated labelled video records in Split-fold_k / Split-holdout (fold by a hash of the id)."""
    import tensorflow as tf

    from pipeline.synth import SynthConfig, generate_videos, video_example

    config = SynthConfig(videos=videos, classes=100, seed=seed, layouts=("video",))
    writers = {}
    for video in generate_videos(config, 0, videos):
        bucket = (
            int.from_bytes(hashlib.sha256(f"{seed}:{video.video_id}".encode()).digest()[:8], "big") / 2**64
        )
        split = "holdout" if bucket < SYNTH_HOLDOUT_FRACTION else f"fold_{int(bucket * 1e6) % num_folds}"
        if split not in writers:
            (root / f"Split-{split}").mkdir(parents=True, exist_ok=True)
            writers[split] = tf.io.TFRecordWriter(str(root / f"Split-{split}" / "part.gz"), "GZIP")
        writers[split].write(video_example(video, with_labels=True))
    for writer in writers.values():
        writer.close()
    return root


def head_skew(
    towers,
    head,
    uri: str,
    num_folds: int,
    num_classes: int,
    k: int,
    source: str,
    out: Path,
    selection_only: bool = False,
):
    """The head's train/serve skew alternatives, chosen on the last training fold, reported on the holdout."""
    from trainer.metrics import bootstrap_gaps, evaluate

    folds = [f"fold_{f}" for f in range(num_folds)]
    data = {split: read_split(uri, split, num_classes) for split in [*folds, "holdout"]}
    patterns = {split: os.path.join(uri, f"Split-{split}", "*") for split in folds}
    selection = folds[-1]
    runs = {
        f"selection: {selection} (inner CV on {folds[0]}..{folds[-2]})": (folds[:-1], selection),
        f"holdout (all {num_folds} folds; report only)": (folds, "holdout"),
    }
    if selection_only:
        runs = dict(list(runs.items())[:1])
    print(
        f"\n5. head skew on {source}: towers {[t.name for t in towers]}, "
        f"{sum(len(data[s].ids) for s in folds)} training videos, {len(data[selection].ids)} in {selection}, "
        f"{len(data['holdout'].ids)} holdout",
        flush=True,
    )
    results: dict[str, Any] = {"source": source, "towers": [t.name for t in towers]}
    with (out / "student_bench_head_skew.log").open("w") as log:
        for title, (train_folds, target) in runs.items():
            start = time.perf_counter()
            scores = skew_variants(towers, head, train_folds, target, data, patterns, num_classes, log)
            labels = data[target].labels
            gaps = bootstrap_gaps(scores, labels, k)
            rows, table = [], {}
            for name, values in scores.items():
                gap = evaluate(values, labels, k)["gap"]
                low, high = np.percentile(gaps[name], [2.5, 97.5])
                diff = gaps[name] - gaps[TODAY]
                dlow, dhigh = np.percentile(diff, [2.5, 97.5])
                delta = gap - evaluate(scores[TODAY], labels, k)["gap"]
                table[name] = {
                    "gap": gap,
                    "interval": [low, high],
                    "minus_today": delta,
                    "minus_today_interval": [dlow, dhigh],
                }
                rows.append(
                    (name, gap, f"[{low:.4f}, {high:.4f}]", f"{delta:+.4f}", f"[{dlow:+.4f}, {dhigh:+.4f}]")
                )
            seconds = time.perf_counter() - start
            print_table(
                f"5. head skew, {title}: {len(labels)} videos, GAP@{k} with paired-bootstrap 95% intervals "
                f"(1000 resamples of videos); {seconds:.0f}s",
                ("variant", f"GAP@{k}", "95% interval", "- today", "95% interval"),
                rows,
            )
            results[title] = {"videos": len(labels), "seconds": seconds, "variants": table}
    choice_title = next(iter(runs))
    served = {n: v for n, v in results[choice_title]["variants"].items() if n.startswith("head(")}
    best = max(served, key=lambda name: served[name]["gap"])
    print(f"   best on {choice_title}: {best}")
    results["best_on_selection"] = best
    return results


# ------------------------------------------------------------------------------------------------ 3. size


def size_report(run: Run, config, full_configs: str) -> dict[str, Any]:
    from components.student_export.executor import directory_bytes
    from pipeline.metadata import property_value
    from trainer.features import NUM_CLASSES
    from trainer.students import (
        SIZE_LIMIT_BYTES,
        load_student_suite,
        serving_parameter_count,
        serving_size_bytes,
    )

    model = run.artifact("StudentExport", "model")
    exported = int(property_value(model, "parameter_count"))
    disk = int(property_value(model, "size_bytes"))
    num_classes = config.data.num_classes
    demo = load_student_suite(config.students.configs)
    full = load_student_suite(full_configs)
    demo_count, full_count = serving_parameter_count(demo, num_classes), serving_parameter_count(full)
    full_bytes = serving_size_bytes(full)
    pushed = pushed_path(run)
    pushed_bytes = directory_bytes(pushed) if pushed else None

    def mb(size: float | None) -> str:
        return "" if size is None else f"{size / 1e6:.2f}"

    rows = [
        (f"export (demo, {num_classes} classes)", exported, mb(4 * exported), mb(disk), "", ""),
        ("analytic, demo configs", demo_count, mb(4 * demo_count), "", "", verdict(demo_count == exported)),
        ("pushed directory", "", "", mb(pushed_bytes) or "not pushed", "", ""),
        (
            f"analytic, {full_configs} ({NUM_CLASSES} classes)",
            full_count,
            mb(full_bytes),
            "",
            mb(SIZE_LIMIT_BYTES),
            verdict(full_bytes <= SIZE_LIMIT_BYTES),
        ),
    ]
    print_table(
        "3. student size: StudentExport artifact (parameter_count, size_bytes on disk) and float32 weights "
        "(4 bytes per parameter, BatchNorm statistics included); check of the demo row: analytic = exported",
        ("model", "parameters", "float32 MB", "disk MB", "limit MB", "check"),
        rows,
    )
    return {
        "export_parameter_count": exported,
        "export_size_bytes": disk,
        "demo_analytic_parameter_count": demo_count,
        "pushed_bytes": pushed_bytes,
        "full_parameter_count": full_count,
        "full_float32_bytes": full_bytes,
        "limit_bytes": SIZE_LIMIT_BYTES,
    }


# --------------------------------------------------------------------------------------------- 4. serving


def pushed_path(run: Run) -> str | None:
    from pipeline.metadata import property_value

    pusher = run.executions.get("Pusher")
    if pusher is None or pusher.state not in DONE or not pusher.outputs.get("pushed_model"):
        return None
    pushed = pusher.outputs["pushed_model"][0]
    if "pushed_destination" not in pushed.custom_properties or not property_value(pushed, "pushed"):
        return None
    return property_value(pushed, "pushed_destination")


def keras_ensemble(run: Run):
    """The serving ensemble rebuilt from the pipeline's refit towers' and head's `model.keras`."""
    import keras
    from tfx.utils import path_utils

    from pipeline.metadata import property_value
    from pipeline.pipeline import _node_name
    from trainer.student_run import KERAS_MODEL
    from trainer.students import build_serving_ensemble

    def load(node: str):
        uri = run.artifact(node, "model").uri
        return keras.saving.load_model(
            os.path.join(path_utils.serving_model_path(uri), KERAS_MODEL), compile=False
        )

    tower_names = property_value(run.artifact("StudentExport", "model"), "tower_names")
    towers = [load(f"StudentTrainer_{_node_name(name)}_refit") for name in tower_names]
    return build_serving_ensemble(towers, load("StudentTrainer_head"))


def serving(run: Run, config, min_videos: int) -> dict[str, Any]:
    import tensorflow as tf
    from tfx.utils import path_utils

    from trainer.readers import parse_video_examples
    from trainer.transform import FEATURES

    num_classes = config.data.num_classes
    source = pushed_path(run)
    origin = "Pusher pushed_destination"
    if source is None:
        source, origin = (
            path_utils.serving_model_path(run.artifact("StudentExport", "model").uri),
            "StudentExport",
        )
    signature = tf.saved_model.load(source).signatures["serving_default"]
    model = keras_ensemble(run)
    uri = run.artifact("SoftLabels", "student_examples").uri
    records = [r for split in ("holdout", "test") for r in read_split(uri, split, num_classes).records]
    batches = [tf.constant(records[s : s + SERVING_BATCH]) for s in range(0, len(records), SERVING_BATCH)]

    def saved_model(batch):
        return signature(examples=batch)["predictions"].numpy()

    top_k = saved_model(batches[0]).shape[-1]

    def keras_model(batch):
        parsed = features_transform(parse_video_examples(batch, num_classes))
        probabilities = model({FEATURES: parsed[FEATURES]}, training=False)
        return tf.math.top_k(probabilities, k=top_k).values.numpy()

    paths = {"SavedModel": saved_model, "Keras": keras_model}
    outputs = {name: np.concatenate([fn(b) for b in batches]) for name, fn in paths.items()}  # warm-up
    difference = float(np.abs(outputs["SavedModel"] - outputs["Keras"]).max())
    passes = max(1, math.ceil(min_videos / len(records)))
    rates: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(REPEATS):
        for name, fn in paths.items():
            start = time.perf_counter()
            for _ in range(passes):
                for batch in batches:
                    fn(batch)
            rates[name].append(passes * len(records) / (time.perf_counter() - start))
    median = {name: statistics.median(values) for name, values in rates.items()}
    ratio = median["SavedModel"] / median["Keras"]
    rows = [
        (
            "SavedModel serving_default",
            "records -> parse, towers, head, top-k (one graph)",
            *rates["SavedModel"],
            median["SavedModel"],
        ),
        (
            "Keras serving ensemble",
            "parse_video_examples + eager model call + top-k",
            *rates["Keras"],
            median["Keras"],
        ),
    ]
    print_table(
        f"4. serving throughput (videos/s), {len(records)} holdout + test records in batches of "
        f"{SERVING_BATCH}, {passes} passes per repeat, {REPEATS} repeats alternating; parsing included in "
        f"both; SavedModel from {origin}: {source}",
        ("model", "work per batch", *(f"run {r + 1}" for r in range(REPEATS)), "median"),
        rows,
    )
    print(f"   SavedModel / Keras = {ratio:.3f}; max |top-{top_k} score difference| = {difference:.2e}")
    return {
        "saved_model": source,
        "saved_model_from": origin,
        "records": len(records),
        "batch": SERVING_BATCH,
        "passes": passes,
        "videos_per_s": rates,
        "median_videos_per_s": median,
        "ratio_saved_model_over_keras": ratio,
        "max_top_k_score_difference": difference,
        "parsing": "included in both",
    }


# ------------------------------------------------------------------------------------------------- summary


def summary(results: dict[str, Any]) -> None:
    rows = []
    pipeline = results.get("pipeline")
    if pipeline:
        holdout = pipeline["holdout"]
        ratio = holdout[STUDENT]["gap"] / holdout[STACK]["gap"]
        target = f">= {STACK_FRACTION_TARGET}"
        rows.append(
            (
                "pipeline EnsembleModel / stack GAP",
                f"{ratio:.4f}",
                target,
                verdict(ratio >= STACK_FRACTION_TARGET),
            )
        )
    ablation_results = results.get("ablation")
    if ablation_results:
        soft, hard = ablation_results["soft"]["ensemble"]["gap"], ablation_results["hard"]["ensemble"]["gap"]
        ratio = soft / ablation_results["stack_gap"]
        target = f">= {STACK_FRACTION_TARGET}"
        rows.append(
            (
                "ablation EnsembleModel (soft) / stack GAP",
                f"{ratio:.4f}",
                target,
                verdict(ratio >= STACK_FRACTION_TARGET),
            )
        )
        rows.append(
            ("ablation EnsembleModel soft - hard GAP", f"{soft - hard:+.4f}", "> 0", verdict(soft > hard))
        )
    size = results.get("size")
    if size:
        limit = size["limit_bytes"]
        rows.append(
            (
                "export on disk (demo), MB",
                f"{size['export_size_bytes'] / 1e6:.2f}",
                f"<= {limit / 1e6:.0f}",
                verdict(size["export_size_bytes"] <= limit),
            )
        )
        rows.append(
            (
                "full-size float32 weights, MB",
                f"{size['full_float32_bytes'] / 1e6:.1f}",
                f"<= {limit / 1e6:.0f}",
                verdict(size["full_float32_bytes"] <= limit),
            )
        )
    speed = results.get("serving")
    if speed:
        median = speed["median_videos_per_s"]
        rows.append(("SavedModel videos/s", f"{median['SavedModel']:.0f}", "", ""))
        rows.append(("Keras videos/s", f"{median['Keras']:.0f}", "", ""))
        rows.append(("SavedModel / Keras", f"{speed['ratio_saved_model_over_keras']:.3f}", "", ""))
    print_table("5. summary", ("measure", "value", "target", "check"), rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path(DEMO_CONFIG))
    parser.add_argument("--home", type=Path, help="default: the config's home")
    parser.add_argument("--towers", help="comma-separated towers for the ablation (e.g. A,C); default: all")
    parser.add_argument("--full-configs", default=FULL_CONFIGS)
    parser.add_argument(
        "--serving-videos", type=int, default=10_000, help="at least this many videos per repeat"
    )
    parser.add_argument("--out", type=Path, default=Path("bench_out"))
    parser.add_argument("--wait", type=float, default=3600, help="max seconds to wait for a running demo")
    parser.add_argument("--skip-ablation", action="store_true")
    parser.add_argument("--skip-serving", action="store_true")
    parser.add_argument("--head-skew", action="store_true", help="5. the head's train/serve skew variants")
    parser.add_argument(
        "--synth-videos", type=int, help="run only 5. on this many generated videos (no demo run needed)"
    )
    parser.add_argument("--synth-seed", type=int, default=11)
    parser.add_argument(
        "--skew-selection-only", action="store_true", help="5. without the holdout report (half the time)"
    )
    args = parser.parse_args(argv)
    logging.getLogger().setLevel(logging.WARNING)
    from pipeline.config import load_pipeline_config
    from trainer.students import load_student_suite

    start = time.perf_counter()
    config = load_pipeline_config(args.config)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.synth_videos:
        suite = load_student_suite(config.students.configs)
        towers = [hard_labels_only(t) for t in select_towers(suite.towers, args.towers)]
        with tempfile.TemporaryDirectory(prefix="student_bench_synth_") as tmp:
            uri = synth_student_examples(
                args.synth_videos, args.synth_seed, config.folds.num_folds, Path(tmp)
            )
            source = (
                f"{args.synth_videos} generated videos (seed {args.synth_seed}, 100 classes, hard labels)"
            )
            results = {
                "head_skew": head_skew(
                    towers,
                    hard_labels_only(suite.head),
                    str(uri),
                    config.folds.num_folds,
                    config.data.num_classes,
                    20,
                    source,
                    args.out,
                    args.skew_selection_only,
                )
            }
        results["seconds"] = time.perf_counter() - start
        path = args.out / "student_bench_head_skew.json"
        path.write_text(json.dumps(results, indent=1, default=float))
        print(f"\nresults in {path}; total {results['seconds']:.0f}s")
        return
    home = args.home or Path(config.home)
    wait_for_run(args.config, args.wait)
    run = load_run(home, config.pipeline_name)
    if run is None:
        return
    results: dict[str, Any] = {"config": str(args.config), "home": str(home)}
    results["pipeline"] = pipeline_table(run)
    stack_gap, k = results["pipeline"]["holdout"][STACK]["gap"], results["pipeline"]["k"]
    if not args.skip_ablation:
        results["ablation"] = ablation(run, config, args.towers, stack_gap, k, args.out)
    if args.head_skew:
        suite = load_student_suite(config.students.configs)
        examples = run.artifact("SoftLabels", "student_examples")
        results["head_skew"] = head_skew(
            select_towers(suite.towers, args.towers),
            suite.head,
            examples.uri,
            config.folds.num_folds,
            config.data.num_classes,
            k,
            f"{examples.uri} (soft labels)",
            args.out,
            args.skew_selection_only,
        )
    results["size"] = size_report(run, config, args.full_configs)
    if not args.skip_serving:
        results["serving"] = serving(run, config, args.serving_videos)
    summary(results)
    results["seconds"] = time.perf_counter() - start
    path = args.out / "student_bench.json"
    path.write_text(json.dumps(results, indent=1, default=float))
    print(f"\nresults in {path}; total {results['seconds']:.0f}s")


if __name__ == "__main__":
    main()
