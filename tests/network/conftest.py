"""Fixtures of the network-fault tests: real servers behind toxiproxy, drtool run as a real subprocess.

Every path drtool uses goes through its own toxiproxy proxy (object store, Weaviate REST, Weaviate gRPC,
embedding endpoint), so a test can add latency, resets, stalls, bandwidth caps or cut connections mid-transfer
on exactly one of them, and remove the fault from a timer thread while the command is still running.

Timeouts and retry budgets are set short through drtool's own settings (s3.read_timeout, s3.max_attempts,
weaviate.timeout, embedding.timeout, embedding.max_attempts) so a "server stops answering" test takes seconds,
not minutes, and the folder stays well under its time budget.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.foundation.json_contract import check_json_run
from tests.helpers.cli import ProcessRun
from tests.reliability.harness import _Reader, _spawn
from tests.snapshot.conftest import fill_source, make_env, new_bucket
from tests.stack.dify_db import DifyDatabase
from tests.stack.minio_sites import MinioSites
from tests.stack.pg_server import PostgresServer
from tests.stack.toxiproxy import Proxy, Toxiproxy

REPO = Path(__file__).resolve().parents[2]

# Short budgets so a permanent fault ends a command in seconds. botocore's standard retry mode sleeps
# random(0, 2**attempt) s between tries, so 4 tries span up to ~7 s of backoff plus the timeouts.
FAST_S3 = {"DRTOOL_S3_CONNECT_TIMEOUT": "2", "DRTOOL_S3_READ_TIMEOUT": "2", "DRTOOL_S3_MAX_ATTEMPTS": "4"}
# The test endpoint computes vectors on a CPU shared with other test sessions: 10 s per request is generous for
# a batch of 8, and a stalled endpoint (blackhole) still fails within 4 x 10 s plus backoff.
FAST_EMBEDDING = {"DRTOOL_EMBEDDING_TIMEOUT": "10", "DRTOOL_EMBEDDING_MAX_ATTEMPTS": "4"}
FAST_WEAVIATE = {"DRTOOL_WEAVIATE_TIMEOUT": "3"}
COMMAND_TIMEOUT_S = 180.0  # a run that takes longer than this is a hang: the test fails instead of waiting


def run_drtool(env: dict[str, str], *args: str, timeout: float = COMMAND_TIMEOUT_S) -> ProcessRun:
    """`python -m drtool ARGS` as cron would run it; a hang beyond `timeout` fails the test with what it said."""
    started = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, "-m", "drtool", *args], env=env, capture_output=True, text=True,
                              timeout=timeout, cwd=REPO, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"drtool {' '.join(args)} hung for {timeout:.0f} s; stderr: {exc.stderr!r}")
    check_json_run(args, proc.stdout, proc.returncode)  # every --json run obeys docs/json.md
    run = ProcessRun(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)
    _report_figures(args, run)
    return run


def run_drtool_reacting(env: dict[str, str], *args: str, marker: str, action: Callable[[], Any],
                        timeout: float = COMMAND_TIMEOUT_S) -> tuple[ProcessRun, bool]:
    """`drtool --json ARGS`, calling `action` (e.g. clear a fault) as soon as `marker` appears on stderr: a fault
    that must still be there when drtool first meets it, however slowly the interpreter starts. Returns whether the
    marker was seen."""
    seen = threading.Event()

    def react(line: str) -> None:
        if not seen.is_set() and marker in line:
            seen.set()
            action()

    proc = _spawn(list(args), env)
    reader = _Reader(proc, on_stderr=react)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"drtool {' '.join(args)} hung for {timeout:.0f} s; stderr: {reader.stderr()[-3000:]!r}")
    reader.join()
    if not seen.is_set():
        action()  # never leave the fault behind for the next run
    run = ProcessRun(proc.returncode, "".join(line for _, line in reader.lines), reader.stderr(),
              time.monotonic() - reader.started)
    _report_figures(("--json", *args), run)
    return run, seen.is_set()


def _report_figures(args: tuple[str, ...], run: ProcessRun) -> None:
    """With DRTOOL_TEST_NETWORK_REPORT=path, append one JSON line per command run: the figures of
    docs/network-faults.md (test, command, exit code, seconds)."""
    import os

    path = os.environ.get("DRTOOL_TEST_NETWORK_REPORT")
    if not path:
        return
    test = os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]
    words = [a for a in args if a != "--json"]
    command = " ".join([words[0], *(w for w in words[1:2] if w in ("create", "status")),
                        *(w for w in words if w == "--resume")])
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"test": test, "command": command, "exit_code": run.code,
                             "seconds": round(run.seconds, 1), "traceback": not run.no_traceback,
                             "error": _error_text(run)}) + "\n")


def _error_text(run: ProcessRun) -> str | None:
    """The operator-facing error of a failed run: the result's error message + hint, or a dataset_failed error."""
    lines = [line for line in (run.stderr + "\n" + run.stdout).splitlines() if line.startswith("{")]
    for line in lines:
        event = json.loads(line)
        if event.get("event") in ("result", "error") and event.get("error") and event.get("message"):
            return f"{event.get('system')}: {event.get('message')} (hint: {event.get('hint')})"
        if event.get("event") == "rebuild.dataset_failed":
            return str(event.get("error"))
    return None


def host_port(url: str) -> str:
    parts = urlsplit(url if "://" in url else "http://" + url)
    return f"{parts.hostname}:{parts.port}"


@dataclass
class SnapshotNet:
    """One source bucket, one snapshot bucket and one Dify database on MinIO site A, reached through `proxy`."""

    env: dict[str, str]
    client: Any  # direct boto3 client (no proxy): how the test checks the stores
    source_bucket: str
    dest_bucket: str
    db: DifyDatabase
    pg: PostgresServer
    proxy: Proxy
    files: dict[str, bytes] = field(default_factory=dict)

    def run(self, *args: str, extra: dict[str, str] | None = None, timeout: float = COMMAND_TIMEOUT_S) -> ProcessRun:
        return run_drtool(dict(self.env, **(extra or {})), *args, timeout=timeout)

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        out: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            out += [o["Key"] for o in page.get("Contents", ())]
        return out

    def committed(self) -> list[str]:
        """Snapshot ids whose COMMITTED marker exists: the only snapshots any command sees."""
        return sorted(k.split("/")[2] for k in self.keys(self.dest_bucket, "drtool/snapshots/")
                      if k.endswith("/COMMITTED"))


@pytest.fixture
def s3_proxy(toxiproxy: Toxiproxy, minio_pair: MinioSites) -> Proxy:
    return toxiproxy.proxy("minio_a", host_port(minio_pair.a.endpoint))


@pytest.fixture
def snap(minio_pair: MinioSites, dify_db: DifyDatabase, pg: PostgresServer, s3_proxy: Proxy) -> SnapshotNet:
    site = minio_pair.a
    client = site.s3_client()
    source, dest = new_bucket(client), new_bucket(client)
    files = fill_source(client, source, dify_db)
    env = make_env(endpoint=s3_proxy.url(), access_key=site.access_key, secret_key=site.secret_key,
                   source_bucket=source, dest_bucket=dest, db=dify_db, pg=pg)
    env.update(FAST_S3)
    return SnapshotNet(env=env, client=client, source_bucket=source, dest_bucket=dest, db=dify_db, pg=pg,
                       proxy=s3_proxy, files=files)
