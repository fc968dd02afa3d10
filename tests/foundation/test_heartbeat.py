"""Long commands show life off a terminal: a `progress` record on stderr every DRTOOL_PROGRESS_SECONDS with the
time run so far and the progress events seen, none with -q, nothing of it on stdout. Real Postgres and MinIO."""

from __future__ import annotations

import json
from pathlib import Path

from tests.security.conftest import run_module
from tests.snapshot.conftest import SnapshotEnv, minio_env  # noqa: F401 - minio_env: fixture


def test_snapshot_create_logs_life_signs_and_q_silences_them(minio_env: SnapshotEnv,  # noqa: F811
                                                              tmp_path: Path) -> None:
    env = {**minio_env.env, "DRTOOL_PROGRESS_SECONDS": "0.05"}
    run = run_module("snapshot", "create", env=env, cwd=tmp_path)
    assert run.code == 0, run.stderr[-2000:]
    records = [json.loads(line) for line in run.stderr.splitlines() if line.startswith("{")]
    beats = [r for r in records if r.get("event") == "progress"]
    assert beats, records
    assert all(r["command"] == "snapshot create" and r["message"].startswith("snapshot create: running")
               for r in beats)
    elapsed = [r["elapsed_seconds"] for r in beats]
    assert elapsed == sorted(elapsed)
    assert "progress" not in run.stdout
    quiet = run_module("-q", "snapshot", "create", env=env, cwd=tmp_path)
    assert quiet.code == 0 and quiet.stderr == "", quiet.stderr
