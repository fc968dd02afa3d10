# drtool in a container: for Kubernetes CronJobs and incident shells next to a Dify deployment.
# CI does not build this image (no Docker engine there); tests/foundation/test_dockerfile.py runs the same
# install steps (COPY set + pip line) in a fresh virtual environment and checks the result runs.
FROM python:3.11-slim-trixie

# pg_dump must not be older than the server it dumps. Debian trixie's client tools are PostgreSQL 17, which dump
# and restore servers from 9.2 up to 17 (Dify ships 15).
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-client-17 ca-certificates \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY pyproject.toml README.md ./
COPY drtool ./drtool
# The default install: no torch. Local embeddings need the `local` extra; in a container prefer an
# OpenAI-compatible endpoint (embedding.provider=openai).
RUN pip install --no-cache-dir .

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin drtool
USER drtool
WORKDIR /home/drtool
ENTRYPOINT ["drtool"]
CMD ["--help"]
