"""Never silent in cron: every command the shipped crontab runs, run with `-q` as a separate process (stderr
not a terminal, as under cron), leaves its reason on stderr in each of its failure modes, with the exit code of
the table, and says it once; its `--metrics-file` records the same failure (exit code, a new last run, the last
success of the previous file kept) and parses with prometheus_client. And `--log-format` / DRTOOL_LOG_FORMAT
choose the format of stderr whatever it is.

Real servers throughout (Postgres, the MinIO pair, the SeaweedFS pair as a second S3 endpoint); nothing mocked.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from drtool.core.metrics import metric_prefix
from drtool.ops.lock import here
from tests.foundation.metrics_check import common_metrics
from tests.replication.conftest import minio_settings_env
from tests.security.conftest import ProcessRun, run_module
from tests.snapshot.conftest import SnapshotEnv, minio_env, new_bucket  # noqa: F401 - minio_env: fixture
from tests.stack.minio_sites import MinioSites
from tests.stack.ports import free_port

# Retries are not under test: one try keeps the unreachable cases quick.
FAST = {"DRTOOL_S3_MAX_ATTEMPTS": "1", "DRTOOL_POSTGRES_CONNECT_TIMEOUT": "5"}
# The last success an earlier run left in the metrics file: a failed run must keep it as it is.
EARLIER_SUCCESS = 1_700_000_000.0


@dataclass
class World:
    """A seeded Dify database, its objects in a versioned bucket on MinIO site A, and a snapshot bucket."""

    env: dict[str, str]
    client: Any
    source: str
    dest: str
    files: dict[str, bytes]
    cwd: Path


@pytest.fixture
def one_try_world(minio_env: SnapshotEnv, tmp_path: Path) -> World:  # noqa: F811 - the imported fixture
    """The snapshot tests' set-up (tests/snapshot/conftest.py), with one try per request."""
    return World({**minio_env.env, **FAST}, minio_env.client, minio_env.source_bucket, minio_env.dest_bucket,
                 minio_env.files, tmp_path)


def records(stderr: str) -> list[dict[str, Any]]:
    """stderr as log records: JSON lines off a terminal (the auto format), every line must be one."""
    return [json.loads(line) for line in stderr.splitlines() if line.strip()]


def quiet(w: World, *args: str, expect: int, says: str = "", **env: str) -> ProcessRun:
    """`drtool -q ARGS --metrics-file F` as cron runs it: the exit code is `expect`, stderr holds a reason
    (containing `says`) at the level of that code (warning for 3, error otherwise), and says it once: no exit line
    after a logged error. F, left by an earlier successful run, now records this failure."""
    command = " ".join(args[:2]) if args[0] in ("snapshot", "snapshots", "replication") else args[0]
    prefix = metric_prefix(command)
    metrics = w.cwd / f"{prefix}.prom"
    metrics.write_text(f"# TYPE {prefix}_last_success_timestamp_seconds gauge\n"
                       f"{prefix}_last_success_timestamp_seconds {EARLIER_SUCCESS}\n")
    started = time.time()
    run = run_module("-q", *args, "--metrics-file", str(metrics), env=dict(w.env, **env), cwd=w.cwd,
                 label=" ".join(args[:2]))
    assert run.code == expect, f"{args}: exit {run.code}, expected {expect}\n{run.stderr[-2000:]}{run.stdout[-500:]}"
    logged = records(run.stderr)
    levels = {"warning", "error"} if expect == 3 else {"error"}
    reasons = [r for r in logged if r["level"] in levels]
    assert reasons, f"{args}: exit {run.code} and nothing on stderr said why: {run.stderr!r} {run.stdout!r}"
    assert says in "\n".join(r["message"] for r in reasons), (says, logged)
    exits = [r for r in logged if r.get("event") == "exit"]
    errors = [r for r in logged if r["level"] == "error" and r.get("event") != "exit"]
    assert len(exits) <= 1 and not (exits and errors), f"{args}: the reason was printed twice: {logged}"
    for r in exits:
        assert r["exit_code"] == expect and "\n" not in r["message"]
    assert run.stdout == "", f"{args}: -q without --json writes nothing on stdout: {run.stdout!r}"
    recorded = common_metrics(metrics, prefix)  # parsed by prometheus_client
    assert recorded["last_exit_code"] == expect, (args, recorded)
    assert started <= recorded["last_run_timestamp_seconds"] <= time.time(), (args, recorded)
    assert recorded["last_success_timestamp_seconds"] == EARLIER_SUCCESS, (args, recorded)
    return run


def test_snapshot_create_every_failure_mode(one_try_world: World) -> None:
    w = one_try_world
    quiet(w, "snapshot", "create", expect=1, says="cannot connect", DRTOOL_POSTGRES_PORT=str(free_port()))
    quiet(w, "snapshot", "create", expect=10, says="does not exist",
          DRTOOL_SNAPSHOT_BUCKET=f"no-such-{uuid.uuid4().hex[:8]}")
    quiet(w, "snapshot", "create", expect=12, DRTOOL_S3_SECRET_KEY="wrong-secret-key")
    key = next(k for k in w.files if k.startswith("upload_files/"))
    w.client.delete_object(Bucket=w.source, Key=key)  # a delete marker: a row now points at nothing
    run = quiet(w, "snapshot", "create", expect=3, says="had no object version at the fence")
    [line] = [r for r in records(run.stderr) if r.get("event") == "exit"]
    assert line["message"].startswith("snapshot create: snapshot ") and "committed with 1 warning(s)" in \
        line["message"]
    loud = run_module("snapshot", "create", env=w.env, cwd=w.cwd)  # without -q the warning itself says why: once
    assert loud.code == 3 and "had no object version at the fence" in loud.stderr, loud.stderr
    assert not [r for r in records(loud.stderr) if r.get("event") == "exit"], loud.stderr


def test_replication_status_with_a_site_down(minio_pair: MinioSites, tmp_path: Path) -> None:
    w = World({**minio_settings_env(minio_pair), **FAST}, None, "", "", {}, tmp_path)
    minio_pair.b.stop()
    try:
        run = quiet(w, "replication", "status", "--deadline", "90s", expect=4, says="replication status: CRITICAL")
        text = run_module("-q", "replication", "status", "--deadline", "90s", "--log-format", "text",
                      env=w.env, cwd=tmp_path)
    finally:
        minio_pair.b.start()
    [line] = [r for r in records(run.stderr) if r.get("event") == "exit"]
    assert "site B" in line["message"] and line["verdict"] == "CRITICAL" and line["exit_code"] == 4
    assert text.code == 4 and text.stderr.startswith("error: replication status: CRITICAL: "), text.stderr
    assert len(text.stderr.splitlines()) == 1, text.stderr


def test_replication_verify_differences(minio_pair: MinioSites, seaweed_pair: Any, tmp_path: Path) -> None:
    """A bucket on MinIO site A that the other S3 endpoint (SeaweedFS) does not hold: missing there, exit 4."""
    bucket = f"quiet-{uuid.uuid4().hex[:8]}"
    client = minio_pair.a.s3_client()
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="datasets/d1/raw/a.txt", Body=b"a")
    w = World({**minio_settings_env(minio_pair), **FAST}, None, "", "", {}, tmp_path)
    quiet(w, "replication", "verify", "--source", f"M={minio_pair.a.endpoint}",
          "--target", f"S={seaweed_pair.a.endpoint}", "--bucket", bucket, expect=4,
          says=f"replication verify: CRITICAL: M -> S: bucket {bucket}")


def test_export_chunks_refused_credentials(one_try_world: World) -> None:
    quiet(one_try_world, "export-chunks", "--all", expect=12, DRTOOL_S3_SECRET_KEY="wrong-secret-key")
    quiet(one_try_world, "export-chunks", "--all", expect=12, DRTOOL_POSTGRES_PASSWORD="wrong-password")


def test_verify_break(one_try_world: World) -> None:
    key = next(k for k in one_try_world.files if k.startswith("upload_files/"))
    one_try_world.client.delete_object(Bucket=one_try_world.source, Key=key)
    quiet(one_try_world, "verify", "--skip-vectors", expect=4, says="verify: 1 break(s): missing_object 1")


def test_drill_with_a_failing_phase(one_try_world: World, milvus_uri: str, tmp_path: Path) -> None:
    """The cheapest failing phase: a pinned version deleted after the snapshot fails snapshot_check, before any
    scratch target exists."""
    w = one_try_world
    assert run_module("-q", "snapshot", "create", env=w.env, cwd=w.cwd).code == 0
    key = next(k for k in w.files if k.startswith("upload_files/"))
    version = w.client.head_object(Bucket=w.source, Key=key)["VersionId"]
    w.client.delete_object(Bucket=w.source, Key=key, VersionId=version)  # the pinned bytes are gone for good
    quiet(w, "drill", "--report-dir", str(tmp_path / "drills"), expect=4, says="snapshot_check: snapshot ",
          DRTOOL_VECTOR_STORE="milvus", DRTOOL_MILVUS_URI=milvus_uri)


def test_snapshots_prune_locked(one_try_world: World) -> None:
    place = here()  # a live holder in this host, boot and PID namespace: believed, never judged stale
    held = {"holder": "snapshot create", "host": socket.gethostname(), "pid": os.getpid(),
            "started_at": datetime.now(UTC).isoformat(), "token": "t", "boot_id": place.boot_id,
            "pid_ns": place.pid_ns}
    one_try_world.client.put_object(Bucket=one_try_world.dest, Key="drtool/locks/snapshots.lock",
                                    Body=json.dumps(held).encode())
    quiet(one_try_world, "snapshots", "prune", expect=11, says=f"pid {os.getpid()}")


def test_log_format_overrides_the_terminal_detection(tmp_path: Path) -> None:
    """stderr is not a terminal here: JSON by default, text when asked by flag (before or after the command) or by
    DRTOOL_LOG_FORMAT, and the flag wins over the variable. An unknown format is a usage error."""
    env = {"DRTOOL_S3_ENDPOINT": f"http://127.0.0.1:{free_port()}", "DRTOOL_S3_BUCKET": "b",
           "DRTOOL_S3_ACCESS_KEY": "k", "DRTOOL_S3_SECRET_KEY": "s", **FAST}
    args = ("snapshots", "list")
    auto = run_module("-q", *args, env=env, cwd=tmp_path)
    assert auto.code == 1 and records(auto.stderr)[0]["level"] == "error"
    for run in (run_module("--log-format", "text", "-q", *args, env=env, cwd=tmp_path),
                run_module("-q", *args, "--log-format", "text", env=env, cwd=tmp_path),
                run_module("-q", *args, env={**env, "DRTOOL_LOG_FORMAT": "text"}, cwd=tmp_path)):
        assert run.code == 1 and run.stderr.startswith("error: ") and "{" not in run.stderr, run.stderr
    forced = run_module("-q", *args, "--log-format", "json", env={**env, "DRTOOL_LOG_FORMAT": "text"}, cwd=tmp_path)
    assert forced.code == 1 and records(forced.stderr)[0]["level"] == "error"
    bad = run_module("-q", *args, env={**env, "DRTOOL_LOG_FORMAT": "yaml"}, cwd=tmp_path)
    assert bad.code == 2 and "yaml" in bad.stderr
