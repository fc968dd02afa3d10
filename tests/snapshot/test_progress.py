"""snapshot create and restore report their progress off a terminal: with DRTOOL_PROGRESS_SECONDS=0 `progress`
records on stderr, counting versions listed and objects pinned (snapshot create), objects restored of the
snapshot's pinned count (restore), the last ones equal to the work done; nothing of it on stdout. Real Postgres
and MinIO, the real CLI in a subprocess as cron runs it."""

from __future__ import annotations

import json
from typing import Any

from tests.snapshot.conftest import SnapshotEnv, new_bucket

FAST = {"DRTOOL_PROGRESS_SECONDS": "0"}


def progress_of(stderr: str, task: str) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    return [r for r in records if r.get("event") == "progress" and r.get("task") == task]


def test_snapshot_and_restore_progress_count_the_objects(minio_env: SnapshotEnv) -> None:
    e = minio_env
    created = e.run("--log-format", "json", "snapshot", "create", "--json", extra_env=FAST)
    assert created.code == 0, created.stderr[-2000:]
    assert '"progress"' not in created.stdout
    result = created.result()
    counts = result["counts"]
    listed = progress_of(created.stderr, "snapshot objects")
    assert listed and listed[-1]["final"], created.stderr[-2000:]
    assert listed[-1]["done"] == counts["listed_versions"] and listed[-1]["unit"] == "versions listed"
    assert listed[-1]["also"]["pinned"] == counts["pinned"] > 0
    assert listed[-1]["total"] is None and listed[-1]["eta_seconds"] is None  # a listing's size is not known

    target = new_bucket(e.client)
    restored = e.run("--log-format", "json", "restore", result["snapshot"], "--objects-to", target, "--json",
                     extra_env=FAST)
    assert restored.code == 0, restored.stderr[-2000:]
    assert '"progress"' not in restored.stdout
    objects = restored.result()["objects"]
    progress = progress_of(restored.stderr, "restore objects")
    done = [r["done"] for r in progress]
    assert done == sorted(done) and set(done) == set(range(1, counts["pinned"] + 1)), done  # one per object
    last = progress[-1]
    assert last["final"] and last["done"] == last["total"] == objects["pinned"] == counts["pinned"]
    assert last["also"]["copied"] == objects["copied"] == counts["pinned"]
    assert all(r["eta_seconds"] is not None for r in progress if r["rate_per_second"] > 0)
