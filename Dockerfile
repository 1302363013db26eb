# syntax=docker/dockerfile:1
# One image for every component of serving: ENTRYPOINT ["serving"], the component chosen by the arguments
# (`controller --kubernetes`, `autoscaler`, `activator`, `router`, `queue-proxy`; charts/serving sets them).
# With no arguments it runs the queue-proxy, so the image also stands in for Knative's `queue-sidecar-image`
# (Knative starts that container with neither command nor args).
#
#   docker build -t ghcr.io/serving/serving:0.1.0 .
#   docker build --build-arg SERVING_PURE_PYTHON=1 -t ...   # skip the mypyc compilation
ARG PYTHON_IMAGE=python:3.11-slim

# --- build: compile and install into a virtual environment -------------------------------------------------
FROM ${PYTHON_IMAGE} AS build
# gcc lets `pip install .` compile the per-request modules with mypyc (setup.py); the official Python images
# already carry Python.h. Without a compiler the build falls back to plain Python by itself.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/serving
ENV PATH=/opt/serving/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY serving ./serving
COPY queueproxy ./queueproxy
COPY activator ./activator
COPY autoscaler ./autoscaler
COPY controller ./controller
COPY bench ./bench
# 1 keeps every module interpreted (same behaviour, more CPU per request).
ARG SERVING_PURE_PYTHON=""
RUN SERVING_PURE_PYTHON="$SERVING_PURE_PYTHON" pip install . \
 && python -m compileall -q /opt/serving/lib \
 && serving --help >/dev/null

# --- runtime: the virtual environment on a slim base, as a non-root user -----------------------------------
FROM ${PYTHON_IMAGE}
RUN groupadd --gid 65532 serving \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin serving
COPY --from=build /opt/serving /opt/serving
# Bytecode is compiled at build time: the root filesystem is read-only in the chart's pods.
ENV PATH=/opt/serving/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Numeric, so that Kubernetes' runAsNonRoot can check it.
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["serving"]
CMD ["queue-proxy"]
