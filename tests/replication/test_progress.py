"""replication verify reports its progress off a terminal: with DRTOOL_PROGRESS_SECONDS=0 `progress` records on
stderr counting the source entries compared and the buckets done, the last one equal to the work done; nothing of
it on stdout. The MinIO pair (site replication)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.replication.conftest import CliRun, unique
from tests.replication.test_verify_probe import _in_sync


def test_verify_progress_counts_the_objects_compared(drtool: Callable[..., CliRun], minio_replication_env: Any,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = unique("progress")
    a = minio_replication_env.a.s3_client()
    a.create_bucket(Bucket=bucket)
    for i in range(12):
        a.put_object(Bucket=bucket, Key=f"datasets/d{i % 3}/raw/f{i}", Body=f"file {i}".encode())
    monkeypatch.setenv("DRTOOL_PROGRESS_SECONDS", "0")
    res = _in_sync(drtool, "--log-format", "json", "--bucket", bucket)
    assert '"progress"' not in res.out
    [summary] = res.event("result")["buckets"]
    records = [json.loads(line) for line in res.err.splitlines() if line.startswith("{")]
    progress = [r for r in records if r.get("event") == "progress" and r.get("task") == "replication verify"]
    assert progress, res.err[-2000:]
    last = progress[-1]
    assert last["final"] and last["unit"] == "objects compared"
    assert last["done"] == summary["source_entries"] == 12 and last["also"] == {"buckets": 1}
    assert last["total"] is None and last["eta_seconds"] is None
    assert all(r["command"] == "replication verify" for r in progress)
