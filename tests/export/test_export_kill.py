"""A real `drtool export-chunks` process killed with SIGKILL in the middle of a multipart upload."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from typing import Any

import psycopg

from tests.export.helpers import RunCli, apply_env, drtool_env, new_bucket_on, spawn_json


def test_sigkill_mid_upload_leaves_the_old_file_whole_and_a_rerun_finishes(
        pg: Any, dify_db_factory: Callable[..., Any], minio_pair: Any, monkeypatch: Any, run_cli: RunCli) -> None:
    # ~12 MiB of chunks: three 5 MiB parts, so the kill lands between parts of a multipart upload.
    db = dify_db_factory(datasets=1, documents_per_dataset=6, segments_per_document=6000, seed=7)
    bucket = new_bucket_on(minio_pair.a)
    env = drtool_env(pg, db.dbname, bucket)
    apply_env(monkeypatch, env)
    dataset = db.seed.datasets[0]
    key = f"datasets/{dataset.id}/processed/chunks.jsonl"

    assert run_cli("export-chunks", "--all", "--part-size-mb", "5")[0] == 0
    old = bucket.get(key)
    assert len(old) > 10 << 20

    node_id = next(iter(dataset.index_nodes))
    with psycopg.connect(db.dsn) as conn:
        conn.execute("UPDATE document_segments SET content = 'Edited: ' || content WHERE index_node_id = %s",
                     (node_id,))

    proc = spawn_json(["export-chunks", "--all", "--part-size-mb", "5"], env)
    assert proc.stdout is not None
    seen: list[dict[str, Any]] = []
    for line in proc.stdout:
        event = json.loads(line)
        seen.append(event)
        if event.get("event") == "export.part_uploaded":
            os.kill(proc.pid, signal.SIGKILL)  # after part 1 of 3: the upload is open, not completed
            break
    proc.wait(timeout=60)
    proc.stdout.close()
    assert proc.stderr is not None
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, seen
    assert seen[-1]["dataset_id"] == dataset.id and seen[-1]["part"] == 1 and seen[-1]["parts"] >= 3

    # Readers see the complete old file, never a part of the new one.
    assert bucket.keys("datasets/") == [key]
    assert bucket.get(key) == old

    code, events = run_cli("export-chunks", "--all", "--part-size-mb", "5")
    assert code == 0
    assert [e["status"] for e in events if e.get("event") == "export.dataset_exported"] == ["written"]
    chunks = {c.id: c.text for c in bucket.chunks(key)}
    assert len(chunks) == len(dataset.index_nodes)
    assert chunks[node_id] == "Edited: " + dataset.index_nodes[node_id]
