"""kill -9 in the middle of a rebuild, then --resume: exactly the right vectors, no duplicates, no gaps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from typing import Any

from drtool.core.naming import dify_collection_name
from tests.rebuild.conftest import BOTH_MILVUS, ChunkBucket, RunCli, make_chunks, summary
from tests.stack.milvus_store import MilvusTestTarget


@BOTH_MILVUS
def test_sigkill_mid_run_then_resume(rebuild_env: dict[str, str], chunk_bucket: ChunkBucket, run_cli: RunCli,
                                     embedding_server: Any, milvus_target: MilvusTestTarget) -> None:
    """On a server the resumed run is a new process: what the killed one stored is visible to it only at Strong
    consistency, so a weaker read there would re-insert rows (duplicates) or miss them."""
    ds = str(uuid.uuid4())
    name = dify_collection_name(ds)
    milvus_target.track(name)
    chunks = make_chunks(ds, 200)
    chunk_bucket.put_chunks(ds, chunks, "gzip")
    ledger_key = f"drtool/rebuild/milvus/{name}.json"
    embedding_server.slow_next(0.15, count=1000)  # slow enough to be caught mid-run
    env = {**os.environ, **rebuild_env, "DRTOOL_REBUILD_BATCH_SIZE": "16", "DRTOOL_EMBEDDING_BATCH_SIZE": "16"}
    proc = subprocess.Popen([sys.executable, "-m", "drtool", "--json", "rebuild-index", "--dataset", ds],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    lines_done = 0
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                body = chunk_bucket.client.get_object(Bucket=chunk_bucket.name, Key=ledger_key)["Body"].read()
                lines_done = json.loads(body).get("lines_done", 0)
            except chunk_bucket.client.exceptions.NoSuchKey:
                lines_done = 0
            if lines_done >= 48:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        if proc.stderr:
            proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert 48 <= lines_done < 200

    # Without --resume the checkpoint is not silently ignored.
    embedding_server.reset()
    code, events = run_cli("rebuild-index", "--dataset", ds)
    assert code == 2 and "--resume" in next(e for e in events if e["event"] == "rebuild.dataset_failed")["error"]

    code, events = run_cli("rebuild-index", "--dataset", ds, "--resume")
    result = summary(events)["datasets"][0]
    assert code == 0, result
    assert result["resumed_from_line"] >= lines_done
    assert result["verification"]["count"] == 200 and result["verification"]["passed"]
    client = milvus_target.client()
    client.load_collection(name)
    rows = client.query(name, filter="id >= 0", output_fields=["metadata"], limit=16384)
    client.close()
    counts = Counter(r["metadata"]["doc_id"] for r in rows)
    assert set(counts) == {c["id"] for c in chunks}, "gaps"
    assert max(counts.values()) == 1, "duplicates"
    assert chunk_bucket.keys("drtool/rebuild/") == [], "the ledger is removed when the rebuild completes"
