"""The offline default: local sentence-transformers, and the explicit over-limit policy."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.rebuild.conftest import ChunkBucket, RunCli, make_chunks, summary


def test_local_model_and_over_limit_policy(rebuild_env: dict[str, str], chunk_bucket: ChunkBucket,
                                           run_cli: RunCli, local_model_path: Path, embedding_server: Any,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("DRTOOL_EMBEDDING_BASE_URL", "DRTOOL_EMBEDDING_API_KEY", "DRTOOL_EMBEDDING_MODEL"):
        monkeypatch.delenv(key)
    monkeypatch.setenv("DRTOOL_EMBEDDING_PROVIDER", "local")
    ds = str(uuid.uuid4())
    chunks = make_chunks(ds, 30)
    long_text = " ".join(c["text"] for c in make_chunks(ds, 40, offset=30))  # far over 256 tokens
    chunks[5] = {**chunks[5], "text": long_text}
    chunk_bucket.put_chunks(ds, chunks)
    before = embedding_server.requests

    code, events = run_cli("rebuild-index", "--dataset", ds, "--over-limit", "reject")
    assert code == 2
    error = next(e for e in events if e["event"] == "rebuild.dataset_failed")["error"]
    assert "chunks.jsonl:6: text is longer than the model accepts" in error

    code, events = run_cli("rebuild-index", "--dataset", ds, "--force")  # default policy: truncate
    result = summary(events)["datasets"][0]
    assert code == 0, result
    assert result["truncated"] == 1 and result["inserted"] == 30 and result["verification"]["passed"]
    assert summary(events)["model"] == "local:model"
    assert embedding_server.requests == before  # the HTTP endpoint was not involved
