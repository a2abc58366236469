"""Code fingerprints: which source files a node's cache key covers, and that the pipeline stamps them."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.code_fingerprint import (
    CODE_FINGERPRINT,
    PROJECT_ROOT,
    code_fingerprint,
    module_closure,
    node_modules,
)
from tests.conftest import tiny_pipeline_nodes

SOURCES = {
    "components/__init__.py": "",
    "components/stage/__init__.py": "",
    "components/stage/component.py": "from tfx.types import channel\nfrom components.stage import executor\n",
    "components/stage/executor.py": "import numpy\nfrom trainer import metrics\n",
    "components/other.py": "VALUE = 1\n",
    "trainer/__init__.py": "",
    "trainer/metrics.py": "def lazy():\n    import trainer.losses\n",
    "trainer/losses.py": "SCALE = 2.0\n",
    "trainer/unused.py": "UNUSED = 0\n",
    "README.md": "# project\n",
}


@pytest.fixture
def project(tmp_path) -> Path:
    for name, text in SOURCES.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def test_closure_follows_project_imports_transitively_and_nothing_else(project):
    files = module_closure(["components.stage.component"], project)
    assert {path.relative_to(project).as_posix() for path in files} == {
        "components/__init__.py",
        "components/stage/__init__.py",
        "components/stage/component.py",
        "components/stage/executor.py",
        "trainer/__init__.py",
        "trainer/metrics.py",  # `from trainer import metrics` names a module
        "trainer/losses.py",  # imported inside a function, still run by the node
    }


@pytest.mark.parametrize(
    ("edited", "reruns"),
    [
        ("trainer/losses.py", True),  # two imports away
        ("components/stage/executor.py", True),
        ("components/__init__.py", True),  # a parent package runs on import
        ("trainer/unused.py", False),
        ("components/other.py", False),
        ("README.md", False),
    ],
)
def test_a_changed_line_changes_the_fingerprint_only_of_code_the_node_runs(project, edited, reruns):
    before = code_fingerprint(["components.stage.component"], project)
    path = project / edited
    path.write_text(path.read_text() + "# edited\n")
    assert (code_fingerprint(["components.stage.component"], project) != before) == reruns


def test_modules_outside_the_project_have_no_fingerprint(project):
    assert code_fingerprint(["tfx.components.trainer.component", "numpy"], project) == ""


def test_every_node_running_project_code_carries_its_fingerprint(tmp_path):
    nodes = {node.id: node for node in tiny_pipeline_nodes(tmp_path, num_folds=2)}
    fingerprints = {node_id: node.exec_properties.get(CODE_FINGERPRINT) for node_id, node in nodes.items()}
    assert fingerprints["StatisticsGen"] is None and fingerprints["SchemaGen"] is None  # TFX's code only
    stamped = {node_id for node_id, fingerprint in fingerprints.items() if fingerprint}
    assert stamped == set(nodes) - {"StatisticsGen", "SchemaGen"}
    for node_id in stamped:
        assert fingerprints[node_id] == code_fingerprint(node_modules(nodes[node_id])), node_id

    def runs(node_id: str, source: str) -> bool:
        return PROJECT_ROOT / source in module_closure(node_modules(nodes[node_id]))

    # A Trainer runs its run_fn's modules; nodes share a fingerprint only when they run the same code.
    assert runs("L1Trainer_tiny_gated_mlp_fold0", "trainer/models.py")
    assert runs("Transform", "trainer/transform.py")  # its preprocessing_fn
    assert runs("StudentTrainer_head", "trainer/student_run.py")
    assert not runs("L1Trainer_tiny_gated_mlp_fold0", "trainer/student_run.py")
    assert runs("SoftLabels", "components/soft_labels/executor.py")
    assert not runs("L2LightGBM", "components/soft_labels/executor.py")
    assert not any(runs(node_id, "pipeline/pipeline.py") for node_id in stamped)  # the builder is not run
    assert fingerprints["L1Trainer_tiny_gated_mlp_fold0"] != fingerprints["StudentTrainer_head"]
