# yt8m-tfx image: the pinned TFX stack (same install as scripts/bootstrap.sh) plus the project, non-root.
# Used as the image of every node of the compiled Kubeflow pipeline (TFX's container entrypoint).
FROM python:3.11.7-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    VENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN groupadd --gid 1000 yt8m && useradd --uid 1000 --gid yt8m --create-home yt8m
WORKDIR /app

COPY requirements/ requirements/
COPY pyproject.toml ./
RUN python -m venv /opt/venv \
    && pip install --no-cache-dir "pip==25.3" \
    && pip install --no-cache-dir -r requirements/base.txt -c requirements/constraints.txt \
    && pip install --no-cache-dir --no-deps -r requirements/nodeps.txt

COPY pipeline/ pipeline/
COPY components/ components/
COPY trainer/ trainer/
COPY configs/ configs/
RUN pip install --no-cache-dir --no-deps . && chown -R yt8m:yt8m /app

USER yt8m
ENTRYPOINT ["python", "-m", "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"]
