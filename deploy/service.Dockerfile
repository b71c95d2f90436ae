# syntax=docker/dockerfile:1
# The inference service (`python -m service`). Build context: the repository root.
#   CPU (default):  docker build -f deploy/service.Dockerfile -t nlp-uncertainty-service:cpu .
#   CUDA:           docker build -f deploy/service.Dockerfile -t nlp-uncertainty-service:cuda \
#                     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .
# The CUDA build of torch ships its CUDA runtime libraries as wheels, so both variants share the slim
# Python base; the NVIDIA container toolkit injects the host's driver at run time (GPU reservation in
# docker-compose.gpu.yml, `nvidia.com/gpu` in deploy/k8s). An empty TORCH_INDEX_URL installs torch from
# the configured package index (PIP_INDEX_URL, e.g. a mirror that serves the CPU wheel).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# A mirror, when PyPI itself is out of reach: --build-arg PIP_INDEX_URL=https://mirror.example/simple
ARG PIP_INDEX_URL=https://pypi.org/simple
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
# torch first, from its own index, so the project install below finds it already satisfied.
RUN pip install "torch==${TORCH_VERSION}" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
COPY pyproject.toml README.md /src/
COPY models /src/models
COPY service /src/service
# A regular (non-editable) install: the packages land in the venv and /src is not needed at run time.
RUN pip install /src && rm -rf /src && find /opt/venv -name '__pycache__' -prune -exec rm -rf {} +

FROM ${PYTHON_IMAGE} AS runtime
ARG UID=10001
# Non-root; /app/artifacts is owned by it so a fresh named volume mounted there inherits the ownership.
RUN useradd --uid "${UID}" --user-group --home-dir /app --no-create-home --shell /usr/sbin/nologin app \
    && mkdir -p /app/artifacts && chown -R app:app /app
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 HF_HOME=/tmp/huggingface \
    NLP_HOST=0.0.0.0 NLP_PORT=8000 NLP_ARTIFACTS_DIR=/app/artifacts
WORKDIR /app
USER app
EXPOSE 8000
# Ready = every configured model loaded and warmed (503 while loading and while draining).
HEALTHCHECK --interval=15s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/ready' % os.environ.get('NLP_PORT', '8000'), timeout=4)"]
# SIGTERM starts the drain (readiness 503, in-flight requests finish, bounded by NLP_DRAIN_TIMEOUT_S).
STOPSIGNAL SIGTERM
CMD ["python", "-m", "service"]
