# damon-exporter container image. Not built in CI (no container engine there); build with
#   docker build -t REGISTRY/damon-exporter:0.1.0 .
# Runs as an unprivileged user by default: enough for the clear_refs backend on processes of
# the same uid (the sidecar pattern). The DaemonSet and the page_idle backend set
# runAsUser: 0 plus capabilities in the pod spec (see docs/deploying.md).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Build facts for damon_exporter_build_info and --version (the image has no .git to read them
# from; build user and date are stamped here, as promu stamps a Go exporter):
#   docker build --build-arg REVISION=$(git rev-parse HEAD) --build-arg BRANCH=$(git rev-parse --abbrev-ref HEAD) ...
ARG REVISION=unknown
ARG BRANCH=unknown

WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
RUN printf '{"revision": "%s", "branch": "%s", "build_user": "%s", "build_date": "%s"}\n' \
        "$REVISION" "$BRANCH" "$(id -un)@$(hostname)" "$(date -u +%Y%m%d-%H:%M:%S)" > exporter/_build.json \
    && pip install . && rm -rf /src \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin damon

WORKDIR /
USER 10001
EXPOSE 10170
ENTRYPOINT ["damon-exporter"]
CMD ["--config.file=/etc/damon-exporter/config.yaml"]
