"""create_pipeline(config): the yt8m-tfx TFX pipeline as a pure function of its config."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from tfx.components import SchemaGen, StatisticsGen, Trainer, Transform
from tfx.dsl.experimental.conditionals.conditional import Cond
from tfx.orchestration import metadata
from tfx.orchestration.pipeline import Pipeline
from tfx.proto import example_gen_pb2, trainer_pb2, transform_pb2
from tfx.types.channel import ChannelWrappedPlaceholder

from components.batch_inference.component import BatchInference
from components.example_gen.component import YT8MExampleGen, split_input_config
from components.fold_split.component import FoldSplit
from components.head_examples.component import HeadExamples
from components.l1_assemble.component import L1Assemble
from components.l1_predict.component import L1Predict
from components.l2_features.component import L2Features
from components.l2_features.executor import model_columns
from components.l2_lightgbm.component import L2LightGBM
from components.l2_merge.component import L2Merge
from components.model_pusher.component import SizeLimitedPusher
from components.soft_labels.component import SoftLabels
from components.student_evaluator.component import StudentEvaluator
from components.student_evaluator.executor import L1_MEAN, STACK, STUDENT
from components.student_export.component import StudentExport
from components.video_schema.component import VideoSchema
from pipeline.code_fingerprint import stamp_code_fingerprints
from pipeline.config import L2Settings, PipelineConfig
from trainer.config_schema import ConfigError, read_text
from trainer.l1_config import parse_l1_config
from trainer.student_run import REFIT
from trainer.students import StudentConfig, StudentSuite, check_serving_size, load_student_suite
from trainer.transform import PREPROCESSING_FN

L1_RUN_FN = "trainer.l1_run.run_fn"
STUDENT_RUN_FN = "trainer.student_run.run_fn"


# Row names the stages give to what is not a config: evaluation rows, report lines.
RESERVED_NAMES = {
    STACK: "the L2 stack's row",
    STUDENT: "the distilled student's row",
    L1_MEAN: "the L1 mean's row",
}


def _node_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


def check_unique_model_names(named_configs: list[tuple[str, str]]) -> None:
    """Each (name, config file) of an L1 model, tower or head named apart from every other and from the
    reserved names, also once reduced to a node id (a.b and a_b clash); raises ConfigError naming both."""
    taken = {_node_name(name): (name, f"reserved for {what}") for name, what in RESERVED_NAMES.items()}
    for name, source in named_configs:
        if _node_name(name) in taken:
            other_name, other_source = taken[_node_name(name)]
            raise ConfigError(f"{source}: name: {name!r} clashes with {other_name!r} ({other_source})")
        taken[_node_name(name)] = (name, source)


def fold_model_nodes(
    kind: str,
    config_name: str,
    examples,
    num_folds: int,
    trainer_of_fold: Callable[[int, list[str]], Any],
    shard_mb: float,
) -> list:
    """Per fold a Trainer (`trainer_of_fold(fold, train_splits)`) and an L1Predict of its out-of-fold split,
    holdout and test; then one L1Assemble (joining in shards of `shard_mb`). Ids:
    <kind>Trainer_<name>_fold<k>, likewise Predict, Assemble."""
    name = _node_name(config_name)
    nodes, fold_predictions = [], []
    for fold in range(num_folds):
        train_splits = [f"fold_{k}" for k in range(num_folds) if k != fold]
        trainer = trainer_of_fold(fold, train_splits).with_id(f"{kind}Trainer_{name}_fold{fold}")
        predict = L1Predict(
            model=trainer.outputs["model"], examples=examples, fold=fold, config_name=config_name
        ).with_id(f"{kind}Predict_{name}_fold{fold}")
        nodes += [trainer, predict]
        fold_predictions.append(predict.outputs["predictions"])
    assemble = L1Assemble(
        examples=examples, fold_predictions=fold_predictions, config_name=config_name, shard_mb=shard_mb
    )
    return [*nodes, assemble.with_id(f"{kind}Assemble_{name}")]


def transform_splits_config(num_folds: int) -> transform_pb2.SplitsConfig:
    """Analyse the training folds only (never holdout or test). Nothing is materialised: the models apply
    the graph to the records they parse, in training and in serving."""
    return transform_pb2.SplitsConfig(analyze=[f"fold_{k}" for k in range(num_folds)])


def transform_nodes(video_folds, num_folds: int) -> list:
    """The readers' schema and the Transform of the video-level features (trainer.transform)."""
    schema = VideoSchema().with_id("VideoSchema")
    transform = Transform(
        examples=video_folds,
        schema=schema.outputs["schema"],
        preprocessing_fn=PREPROCESSING_FN,
        splits_config=transform_splits_config(num_folds),
        materialize=False,
        disable_statistics=True,  # StatisticsGen describes the raw features; the transform is 1:1 per video
    )
    return [schema, transform.with_id("Transform")]


def l1_nodes(
    config_path: str, folds, num_folds: int, num_classes: int, shard_mb: float, transform_graph
) -> list:
    """Trainer + L1Predict per fold and one L1Assemble for the L1 model config at `config_path`; a
    video-level model reads `transform_graph`."""
    text = read_text(config_path)
    l1_config = parse_l1_config(text, config_path)
    examples = folds[l1_config.level]
    if examples is None:
        raise ConfigError(f"{config_path}: {l1_config.level}-level model but data.frame_dir is not set")

    def trainer(fold: int, train_splits: list[str]):
        return Trainer(
            run_fn=L1_RUN_FN,
            examples=examples,
            transform_graph=transform_graph if l1_config.level == "video" else None,
            train_args=trainer_pb2.TrainArgs(splits=train_splits),
            # the run_fn validates on a slice of the training splits
            eval_args=trainer_pb2.EvalArgs(splits=["holdout"], num_steps=0),
            custom_config={
                "l1_config_yaml": text,
                "l1_config_source": config_path,
                "fold": fold,
                "train_splits": train_splits,
                "num_classes": num_classes,
            },
        )

    return fold_model_nodes("L1", l1_config.name, examples, num_folds, trainer, shard_mb)


def student_trainer(
    config: StudentConfig,
    examples,
    transform_graph,
    fold: int,
    train_splits: list[str],
    num_classes: int,
    tower_names=(),
):
    """A Trainer of one student config (a tower, or the head when tower_names are given)."""
    return Trainer(
        run_fn=STUDENT_RUN_FN,
        examples=examples,
        transform_graph=transform_graph,
        train_args=trainer_pb2.TrainArgs(splits=train_splits),
        eval_args=trainer_pb2.EvalArgs(splits=["holdout"], num_steps=0),  # the run_fn validates on a slice
        custom_config={
            "student_config_yaml": read_text(config.source),
            "student_config_source": config.source,
            "fold": fold,
            "train_splits": train_splits,
            "num_classes": num_classes,
            "tower_names": list(tower_names),
        },
    )


def student_nodes(
    config: PipelineConfig,
    suite: StudentSuite,
    soft_labels,
    video_folds,
    l1_predictions,
    stack_scores,
    transform_graph,
) -> list:
    """Towers per fold (OOF predictions) and refit on every fold, the head on the towers' OOF outputs, the
    one-graph export, its evaluation and blessing, and (when blessed) push and batch inference."""
    settings, num_folds, num_classes = config.students, config.folds.num_folds, config.data.num_classes
    try:
        check_serving_size(suite, num_classes, settings.max_model_bytes)
    except ValueError as error:
        raise ConfigError(f"students.max_model_bytes: {error}") from None
    examples = soft_labels.outputs["student_examples"]
    all_folds = [f"fold_{k}" for k in range(num_folds)]
    nodes, tower_predictions, refit_towers = [], [], []
    for tower in suite.towers:
        tower_nodes = fold_model_nodes(
            "Student",
            tower.name,
            examples,
            num_folds,
            lambda fold, splits, tower=tower: student_trainer(
                tower, examples, transform_graph, fold, splits, num_classes
            ),
            config.join_shard_mb,
        )
        refit = student_trainer(tower, examples, transform_graph, REFIT, all_folds, num_classes)
        nodes += [*tower_nodes, refit.with_id(f"StudentTrainer_{_node_name(tower.name)}_refit")]
        tower_predictions.append(tower_nodes[-1].outputs["predictions"])
        refit_towers.append(refit.outputs["model"])
    head_examples = HeadExamples(
        examples=examples, towers=tower_predictions, shard_mb=config.join_shard_mb
    ).with_id("HeadExamples")
    head = student_trainer(
        suite.head,
        head_examples.outputs["head_examples"],
        transform_graph,
        REFIT,
        all_folds,
        num_classes,
        [tower.name for tower in suite.towers],
    ).with_id("StudentTrainer_head")
    export = StudentExport(
        towers=refit_towers, head=head.outputs["model"], transform_graph=transform_graph
    ).with_id("StudentExport")
    evaluator = StudentEvaluator(
        examples=video_folds,
        l1_predictions=l1_predictions,
        tower_predictions=tower_predictions,
        served_towers=refit_towers,
        stack_scores=stack_scores,
        model=export.outputs["model"],
        num_classes=num_classes,
        gap_floor=settings.gap_floor,
        stack_fraction=settings.stack_fraction,
    ).with_id("StudentEvaluator")
    nodes += [head_examples, head, export, evaluator]
    # A placeholder without a preset key: each conditional node's compiler names the blessing by that node's
    # own input key (Pusher: model_blessing). `.future()` presets `_StudentEvaluator.blessing`, which the
    # Kubeflow V2 compiler writes into the Pusher's condition although the Pusher does not declare it.
    blessing = ChannelWrappedPlaceholder(evaluator.outputs["blessing"])
    with Cond(blessing[0].custom_property("blessed") == 1):
        pusher = SizeLimitedPusher(
            model=export.outputs["model"],
            model_blessing=evaluator.outputs["blessing"],
            base_directory=config.push_directory,
            max_model_bytes=settings.max_model_bytes,
        ).with_id("Pusher")
        inference = BatchInference(pushed_model=pusher.outputs["pushed_model"], examples=video_folds)
    return [*nodes, pusher, inference.with_id("BatchInference")]


def create_components(config: PipelineConfig) -> list:
    """All nodes of the pipeline, in dependency order."""
    data, folds = config.data, config.folds
    input_config = split_input_config(data.split_patterns)
    video_examples = YT8MExampleGen(
        input_base=data.video_dir,
        input_config=input_config,
        num_classes=data.num_classes,
        unlabelled_splits=data.unlabelled_splits,
    ).with_id("VideoExampleGen")
    statistics = StatisticsGen(examples=video_examples.outputs["examples"])
    schema = SchemaGen(statistics=statistics.outputs["statistics"], infer_feature_shape=True)
    video_folds = FoldSplit(
        examples=video_examples.outputs["examples"],
        num_classes=data.num_classes,
        num_folds=folds.num_folds,
        holdout_fraction=folds.holdout_fraction,
        seed=folds.seed,
        unlabelled_splits=data.unlabelled_splits,
    ).with_id("VideoFoldSplit")
    transform = transform_nodes(video_folds.outputs["split_examples"], folds.num_folds)
    transform_graph = transform[-1].outputs["transform_graph"]
    nodes = [video_examples, statistics, schema, video_folds, *transform]
    if data.frame_dir:
        frame_examples = YT8MExampleGen(
            input_base=data.frame_dir,
            input_config=input_config,
            num_classes=data.num_classes,
            unlabelled_splits=data.unlabelled_splits,
            payload_format=example_gen_pb2.FORMAT_TF_SEQUENCE_EXAMPLE,
        ).with_id("FrameExampleGen")
        frame_folds = FoldSplit(
            examples=frame_examples.outputs["examples"],
            num_classes=data.num_classes,
            unlabelled_splits=data.unlabelled_splits,
            fold_reference=video_folds.outputs["split_examples"],
        ).with_id("FrameFoldSplit")
        nodes += [frame_examples, frame_folds]
    split_examples = {
        "video": video_folds.outputs["split_examples"],
        "frame": frame_folds.outputs["split_examples"] if data.frame_dir else None,
    }
    l1_predictions, l1_names = [], []
    for config_path in config.l1.configs:
        model_nodes = l1_nodes(
            config_path,
            split_examples,
            folds.num_folds,
            data.num_classes,
            config.join_shard_mb,
            transform_graph,
        )
        nodes += model_nodes
        l1_predictions.append(model_nodes[-1].outputs["predictions"])
        l1_names.append(model_nodes[-1].exec_properties["config_name"])
    named_configs = list(zip(l1_names, config.l1.configs, strict=True))
    suite = load_student_suite(config.students.configs) if config.students.configs else None
    if suite is not None:
        named_configs += [(student.name, student.source) for student in (*suite.towers, suite.head)]
    check_unique_model_names(named_configs)
    if l1_predictions:
        try:  # names clashing with feature columns (model "mean": score_mean) fail here, not in L2Features
            model_columns(l1_names)
        except ValueError as error:
            raise ConfigError(f"l1.configs: {error}") from None
        stage = l2_nodes(config.l2, split_examples["video"], l1_predictions, config.join_shard_mb)
        nodes += stage
        if suite is not None:
            stacker, soft_labels = stage[-2], stage[-1]
            nodes += student_nodes(
                config,
                suite,
                soft_labels,
                split_examples["video"],
                l1_predictions,
                stacker.outputs["scores"],
                transform_graph,
            )
    elif config.students.configs:
        raise ConfigError("students.configs: the student needs L1 models (l1.configs) to distil")
    return nodes


def l2_nodes(settings: L2Settings, video_folds, l1_predictions: list, shard_mb: float) -> list:
    """Merge by video id -> candidate features -> per-fold LightGBM -> soft-label index (the joins by video id
    in shards of `shard_mb`)."""
    merge = L2Merge(
        examples=video_folds, predictions=l1_predictions, top_k=settings.top_k, shard_mb=shard_mb
    ).with_id("L2Merge")
    features = L2Features(merged=merge.outputs["merged"]).with_id("L2Features")
    stacker = L2LightGBM(features=features.outputs["features"], config_path=settings.lightgbm_config)
    soft_labels = SoftLabels(scores=stacker.outputs["scores"], examples=video_folds, shard_mb=shard_mb)
    return [merge, features, stacker.with_id("L2LightGBM"), soft_labels.with_id("SoftLabels")]


def create_pipeline(config: PipelineConfig, metadata_connection_config=None) -> Pipeline:
    """The TFX pipeline for `config` (sqlite ML Metadata under the config's home unless given); every node's
    cache key covers the project code it runs (pipeline/code_fingerprint.py)."""
    if metadata_connection_config is None:
        metadata_connection_config = metadata.sqlite_metadata_connection_config(config.metadata_path)
    return Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=stamp_code_fingerprints(create_components(config)),
        enable_cache=config.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(config.beam_pipeline_args),
    )
