"""Code fingerprints: a node's cache key covers the project code it runs, not only its specs and inputs.

TFX (and Kubeflow) reuse a node's earlier outputs when its executor class name, parameters and inputs are
unchanged, so an edited executor or run_fn would be served from the cache. Each node gets the parameter
`code_fingerprint`: a hash of the source of every project module it runs, found by following the imports
from its component's module (and a Trainer's run_fn, a Transform's preprocessing_fn) through the
project's packages. A changed line reruns exactly the nodes whose modules import it, directly or not;
files that no module imports (README, docs, tests) change nothing.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterable
from pathlib import Path

CODE_FINGERPRINT = "code_fingerprint"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
PROJECT_PACKAGES = ("components", "pipeline", "trainer")


def module_file(module: str, root: Path = PROJECT_ROOT) -> Path | None:
    """The source file of a project module (`a.b` -> a/b.py or a/b/__init__.py); None outside the project."""
    if module.split(".")[0] not in PROJECT_PACKAGES:
        return None
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_modules(path: Path) -> set[str]:
    """Every module an import statement of `path` may load: `from a import b` names a.b as well as a."""
    names = set()
    for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def module_closure(modules: Iterable[str], root: Path = PROJECT_ROOT) -> set[Path]:
    """Source files of `modules`, their parent packages and every project module they import, transitively."""
    files, pending = set(), list(modules)
    while pending:
        parts = pending.pop().split(".")
        for depth in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ first
            path = module_file(".".join(parts[:depth]), root)
            if path is not None and path not in files:
                files.add(path)
                pending.extend(_imported_modules(path))
    return files


def code_fingerprint(modules: Iterable[str], root: Path = PROJECT_ROOT) -> str:
    """sha256 over the relative path and bytes of each file in `module_closure(modules)`; "" for none."""
    files = sorted(module_closure(modules, root))
    if not files:
        return ""
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


# Parameters of TFX's components that name a user function by its module path.
USER_FUNCTIONS = ("run_fn", "preprocessing_fn")


def node_modules(node) -> list[str]:
    """The project modules a pipeline node runs: its component's module (which imports its executor and
    driver) and the modules of the user functions it names (a Trainer's run_fn, a Transform's
    preprocessing_fn)."""
    modules = [type(node).__module__]
    for key in USER_FUNCTIONS:
        function = node.exec_properties.get(key)
        if isinstance(function, str):
            modules.append(function.rpartition(".")[0])
    return modules


def stamp_code_fingerprints(nodes: list) -> list:
    """Give each node that runs project code the parameter `code_fingerprint`, part of its cache key."""
    for node in nodes:
        fingerprint = code_fingerprint(node_modules(node))
        if fingerprint:
            node.exec_properties[CODE_FINGERPRINT] = fingerprint
    return nodes
