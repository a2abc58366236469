# yt8m-tfx component image: the pinned TFX stack (same install as scripts/bootstrap.sh) with GPU TensorFlow
# (requirements/gpu.txt: tensorflow[and-cuda] at base.txt's version; the NVIDIA driver comes from the node)
# plus the project, non-root. The image of every node of the compiled Kubeflow pipeline (`yt8m compile`;
# kubeflow.image); the Dataflow workers run Dockerfile.beam. Build: README "Kubeflow run".
# Debian 12 (glibc 2.36), the platform requirements/ is verified on (README "Install caveats").
FROM python:3.11.7-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH

# pyfarmhash has no wheel for this platform: it is compiled here. Debian packages are left unpinned (the
# base image pins the release; point versions vanish from the mirror with security updates).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements/ requirements/
RUN python -m venv /opt/venv \
    && pip install "pip==25.3" \
    && pip install -r requirements/base.txt -r requirements/gpu.txt -c requirements/constraints.txt \
    && pip install --no-deps -r requirements/nodeps.txt

COPY pyproject.toml ./
COPY pipeline/ pipeline/
COPY components/ components/
COPY trainer/ trainer/
RUN pip install --no-deps .


FROM python:3.11.7-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    PATH=/opt/venv/bin:$PATH

# libgomp1: LightGBM's OpenMP runtime.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 1000 yt8m \
    && useradd --uid 1000 --gid yt8m --create-home yt8m

COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --chown=yt8m:yt8m configs/ configs/

USER 1000:1000
# The compiled pipeline spec also names this command for every node; the container args are TFX's
# (--executor_class_path ... --json_serialized_invocation_args ...).
ENTRYPOINT ["python", "-m", "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"]
