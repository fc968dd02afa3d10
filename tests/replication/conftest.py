"""Helpers of the replication tests: run the real CLI in-process, point drtool at the MinIO or SeaweedFS pair,
wait for a condition, and list a bucket's versions directly (to check what drtool says against the servers)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.helpers.cli import invoke, json_events, run_process
from tests.helpers.replication import wait_peers_online


@dataclass
class CliRun:
    code: int
    out: str
    err: str
    events: list[dict[str, Any]] = field(default_factory=list)

    def event(self, name: str) -> dict[str, Any]:
        found = [e for e in self.events if e.get("event") == name]
        assert found, f"no {name} event in {self.out!r} / {self.err!r}"
        return found[-1]


@pytest.fixture
def drtool(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliRun]:
    """Run `drtool ARGS` in-process; returns the exit code, stdout, stderr and parsed JSON lines."""

    def call(*args: str) -> CliRun:
        code, out, err = invoke(capsys, args)  # every --json run obeys docs/json.md
        return CliRun(code, out, err, json_events(out))

    return call


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 1.0) -> Any:
    """Poll until `predicate()` is truthy and return its value; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})")


def point_at_minio_pair(pair: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Any:
    """drtool's settings for a MinIO pair, by environment (as cron would set them); returns the pair. One function
    for the shared pair (minio_replication_env) and a module's own (test_blind_spots)."""
    for name in ("DRTOOL_S3_ACCESS_KEY", "DRTOOL_S3_SECRET_KEY", "DRTOOL_S3_BUCKET", "DRTOOL_S3_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DRTOOL_REPLICATION_SITES", f"A={pair.a.endpoint},B={pair.b.endpoint}")
    monkeypatch.setenv("DRTOOL_REPLICATION_ACCESS_KEY", pair.a.access_key)
    monkeypatch.setenv("DRTOOL_REPLICATION_SECRET_KEY", pair.a.secret_key)
    monkeypatch.setenv("DRTOOL_REPLICATION_SETTLE_SECONDS", "0")
    monkeypatch.chdir(tmp_path)  # no drtool.toml of the repository can leak in
    return pair


@pytest.fixture
def minio_replication_env(minio_pair: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Any:
    """The shared MinIO pair, with drtool's replication settings for it in the environment.

    Tests elsewhere stop and start site B of this pair; MinIO marks the peer online again only some seconds after
    it answers, so a test that expects a healthy pair waits for that first.
    """
    wait_peers_online(minio_pair)
    return point_at_minio_pair(minio_pair, monkeypatch, tmp_path)


@pytest.fixture
def seaweed_replication_env(seaweed_pair: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Any:
    """The SeaweedFS pair, with drtool's replication settings for it in the environment."""
    for name in ("DRTOOL_S3_BUCKET", "DRTOOL_S3_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DRTOOL_REPLICATION_SITES", f"A={seaweed_pair.a.endpoint},B={seaweed_pair.b.endpoint}")
    monkeypatch.setenv("DRTOOL_REPLICATION_ACCESS_KEY", seaweed_pair.a.access_key)
    monkeypatch.setenv("DRTOOL_REPLICATION_SECRET_KEY", seaweed_pair.a.secret_key)
    monkeypatch.setenv("DRTOOL_REPLICATION_SETTLE_SECONDS", "0")
    monkeypatch.chdir(tmp_path)  # no drtool.toml of the repository can leak in
    return seaweed_pair


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def all_versions(client: Any, bucket: str, prefix: str = "") -> list[tuple[str, str, bool]]:
    """(key, version id, is delete marker) of everything in a bucket, straight from the server."""
    out: list[tuple[str, str, bool]] = []
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        out += [(v["Key"], v["VersionId"], False) for v in page.get("Versions", [])]
        out += [(m["Key"], m["VersionId"], True) for m in page.get("DeleteMarkers", [])]
    return sorted(out)


def keys(client: Any, bucket: str, prefix: str = "") -> list[str]:
    out: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out += [o["Key"] for o in page.get("Contents", [])]
    return out


def drtool_process(args: list[str], env: dict[str, str], timeout: float = 120) -> CliRun:
    """Run drtool as cron would: a separate process with settings in its environment."""
    done = run_process(args, env, cwd=None, timeout=timeout)  # every --json run obeys docs/json.md
    return CliRun(done.code, done.stdout, done.stderr, json_events(done.stdout))


def minio_settings_env(pair: Any, **extra: str) -> dict[str, str]:
    return {
        "DRTOOL_REPLICATION_SITES": f"A={pair.a.endpoint},B={pair.b.endpoint}",
        "DRTOOL_REPLICATION_ACCESS_KEY": pair.a.access_key,
        "DRTOOL_REPLICATION_SECRET_KEY": pair.a.secret_key,
        "DRTOOL_REPLICATION_SETTLE_SECONDS": "0",
        **extra,
    }
