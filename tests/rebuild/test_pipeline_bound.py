"""rebuild.max_chunks_in_flight: the pipeline never holds more chunks (with their vectors) than it allows.

With 16 HTTP workers the pipeline keeps 17 units in flight; at the default 512 chunks a unit that was 8,704 chunks'
vectors at once. The units now shrink so that all of them together fit the bound, and the build reports the most it
held (`peak_chunks_in_flight`), counted from a unit's making to its insert and checkpoint.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from drtool.core.concurrency import pipeline_unit
from tests.rebuild.conftest import ChunkBucket, RunCli, make_chunks, summary


@pytest.mark.parametrize(("batch", "workers", "budget", "per_request"), [
    (512, 1, 4096, 1 << 16), (512, 16, 4096, 64), (16, 16, 64, 32), (512, 64, 4096, 64), (7, 3, 1000, 4)])
def test_units_in_flight_fit_the_budget(batch: int, workers: int, budget: int, per_request: int) -> None:
    unit = pipeline_unit(batch, workers, budget, per_request)
    assert 1 <= unit <= batch
    assert unit * (workers + 1) <= max(budget, workers + 1)
    if unit < batch and unit >= per_request:
        assert unit % per_request == 0, "a shrunk unit is whole requests"


def test_local_model_units_are_unchanged_by_the_default() -> None:
    assert pipeline_unit(512, 1, 4096, 1 << 16) == 512  # the local model's sort window stays 512 texts
    assert pipeline_unit(512, 16, 4096, 64) == 192


def test_a_rebuild_holds_at_most_max_chunks_in_flight(rebuild_env: dict[str, str], chunk_bucket: ChunkBucket,
                                                      run_cli: RunCli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRTOOL_EMBEDDING_CONCURRENCY", "16")
    monkeypatch.setenv("DRTOOL_EMBEDDING_ADAPTIVE", "false")
    monkeypatch.setenv("DRTOOL_REBUILD_BATCH_SIZE", "16")  # 17 units of 16 = 272 chunks without the bound
    monkeypatch.setenv("DRTOOL_REBUILD_MAX_CHUNKS_IN_FLIGHT", "64")
    ds = str(uuid.uuid4())
    chunks = [{**c, "text": c["text"][:120]} for c in make_chunks(ds, 120)]  # > 64: the first fill would hold all
    chunk_bucket.put_chunks(ds, chunks)

    code, events = run_cli("rebuild-index", "--dataset", ds)
    report = summary(events)["datasets"][0]
    assert 0 < report["peak_chunks_in_flight"] <= 64, report["peak_chunks_in_flight"]
    assert code == 0 and report["inserted"] == 120 and report["verification"]["passed"], report


def test_milvus_lite_is_flushed_while_it_fills(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Milvus Lite indexes at a flush every row not yet flushed, in drtool's process: one flush at the end of a big
    build was the rebuild's peak (bench/results/rebuild-memory.md). The adapter flushes every LITE_FLUSH_ROWS."""
    from drtool.adapters import milvus
    from drtool.config import MilvusSettings

    monkeypatch.setattr(milvus, "LITE_FLUSH_ROWS", 16)
    target = milvus.MilvusTarget(MilvusSettings(uri=str(tmp_path / "lite.db")))
    try:
        target.create("flush_while_filling", 8)
        for i in range(5):
            target.insert("flush_while_filling", [
                (f"text {i}-{j}", {"doc_id": f"{i}-{j}", "document_id": "d", "dataset_id": "x"},
                 [1.0 if k == (i + j) % 8 else 0.0 for k in range(8)]) for j in range(10)])
        assert target.flushes == 2  # after rows 20 and 40
        target.finish("flush_while_filling")
        assert target.count("flush_while_filling") == 50
    finally:
        target.close()
