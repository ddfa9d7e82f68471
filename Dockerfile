# damon-exporter container image, built from this repository alone:
#   docker build -t REGISTRY/damon-exporter:0.1.0 \
#     --build-arg REVISION=$(git rev-parse HEAD) --build-arg BRANCH=$(git rev-parse --abbrev-ref HEAD) \
#     --build-arg SOURCE_DATE_EPOCH=$(git log -1 --format=%ct) .
# Its inputs are fixed: the base image (pin it by digest with --build-arg PYTHON_IMAGE=...@sha256:...),
# the Python packages by version and hash (requirements-image.txt), this source tree, and a build
# date taken from SOURCE_DATE_EPOCH rather than the clock. docs/deploying.md has the steps.
# Runs as an unprivileged uid by default: enough for the clear_refs backend on processes of the
# same uid (the sidecar pattern). The DaemonSet and the page_idle backend set runAsUser: 0 plus
# capabilities in the pod spec (see docs/deploying.md).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Build facts for damon_exporter_build_info and --version (the image has no .git to read them
# from). SOURCE_DATE_EPOCH also makes pip compile hash-checked .pyc files, not timestamped ones.
ARG REVISION=unknown
ARG BRANCH=unknown
ARG BUILD_USER=unknown
ARG SOURCE_DATE_EPOCH=0

WORKDIR /src
COPY requirements-image.txt ./
RUN pip install --no-deps --require-hashes -r requirements-image.txt
COPY pyproject.toml README.md ./
COPY exporter ./exporter
RUN printf '{"revision": "%s", "branch": "%s", "build_user": "%s", "build_date": "%s"}\n' \
        "$REVISION" "$BRANCH" "$BUILD_USER" "$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y%m%d-%H:%M:%S)" > exporter/_build.json \
    && pip install --no-deps --no-build-isolation . \
    && rm -rf /src

WORKDIR /
# a numeric uid with no passwd entry: nothing in the image needs a user name
USER 10001:10001
EXPOSE 10170
ENTRYPOINT ["damon-exporter"]
CMD ["--config.file=/etc/damon-exporter/config.yaml"]
