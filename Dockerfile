# syntax=docker/dockerfile:1
# drtool in a container: for Kubernetes CronJobs (playbooks/scheduling/drtool-cronjobs.yaml) and incident shells next
# to a Dify deployment. Build: `docker build -t drtool .` (BuildKit, the default builder since Docker 23).
# CI does not build this image (no Docker engine there); tests/foundation/test_dockerfile.py runs the same steps
# (the builder's COPY set and `pip wheel` line, then the final stage's `pip install` from those wheels alone) in
# fresh virtual environments and checks the result runs.

# The base image, pinned by digest so a rebuild gets the same bytes: python:3.11-slim-trixie (Debian 13) as
# published on Docker Hub. The digest was copied from public Dockerfiles that pin this tag; it was NOT pulled or
# checked here (no registry access where this file was written). Check and refresh it with
#   docker buildx imagetools inspect python:3.11-slim-trixie
# and update both stages at once through this argument.
ARG PYTHON_IMAGE=python:3.11-slim-trixie@sha256:9534e5a8e315485d4061ed659af0fd78a284c015f9b73661b41d6bab25604534

# Stage 1: wheels of drtool and of every dependency, at the versions CI tests (constraints.txt).
FROM ${PYTHON_IMAGE} AS builder
WORKDIR /src
COPY pyproject.toml README.md LICENSE constraints.txt ./
COPY drtool ./drtool
# The default install: no torch, no Milvus Lite. Local embeddings need the `local` extra; in a container prefer an
# OpenAI-compatible endpoint (embedding.provider=openai) and a Milvus server.
RUN pip wheel --no-cache-dir --wheel-dir /wheels -c constraints.txt .

# Stage 2: the runtime. No source tree, no compiler, no build tools: the wheels are mounted for one RUN and installed.
FROM ${PYTHON_IMAGE}

# pg_dump must not be older than the server it dumps, and drtool supports servers up to PostgreSQL 18: its client
# tools dump and restore servers from 9.2 to 18 (Dify ships 15). Debian trixie only has 17, so the client comes from
# the PostgreSQL project's own apt repository (apt.postgresql.org, "PGDG"), set up the way postgresql.org documents
# for Debian: Debian's postgresql-common ships the repository's signing key (fingerprint
# B97B 0AFC AA1A 47F0 44F2 44A0 7FCC 7D46 ACCC 4CF8, in /usr/share/postgresql-common/pgdg/) and the script that writes
# /etc/apt/sources.list.d/pgdg.sources signed-by that key, so the key arrives through Debian's signed archive.
# tini: PID 1, forwards SIGTERM to drtool and reaps children (a Python PID 1 would ignore SIGTERM).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates postgresql-common tini \
    && /usr/share/postgresql-common/pgdg/apt.postgresql.org.sh -y \
    && apt-get install -y --no-install-recommends postgresql-client-18 \
    && rm -rf /var/lib/apt/lists/*

RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels drtool

RUN groupadd --gid 10001 drtool && useradd --create-home --uid 10001 --gid drtool --shell /usr/sbin/nologin drtool
USER 10001:10001
WORKDIR /home/drtool
ENTRYPOINT ["/usr/bin/tini", "--", "drtool"]
CMD ["--help"]
