"""verify --deep reports its progress off a terminal: with DRTOOL_PROGRESS_SECONDS=0 `progress` records on stderr
counting the file rows checked, then the datasets (and their indexed chunks), the last ones equal to the work
done; nothing of it on stdout. Real Postgres, MinIO and Milvus Lite."""

from __future__ import annotations

import pytest

from tests.foundation.cli_runner import run_json
from tests.verify.conftest import VerifyWorld


def test_verify_deep_progress_counts_files_then_datasets(milvus_world: VerifyWorld, capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRTOOL_PROGRESS_SECONDS", "0")
    code, events, records = run_json(capsys, "verify", "--deep")
    assert code == 0, records[-5:]
    assert not [e for e in events if e["event"] == "progress"], "progress never reaches stdout"
    result = events[-1]
    progress = [r for r in records if r.get("event") == "progress" and r.get("task")]
    assert [r["task"] for r in progress] == sorted((r["task"] for r in progress), reverse=True), \
        "files first, then datasets"
    files = [r for r in progress if r["task"] == "verify files"]
    assert [r["done"] for r in files] == sorted(r["done"] for r in files)
    assert files[-1]["final"] and files[-1]["done"] == result["files"]["checked"] == len(milvus_world.seed.files)
    assert {r["total"] for r in files} == {None} and {r["eta_seconds"] for r in files} == {None}
    datasets = [r for r in progress if r["task"] == "verify datasets"]
    last = datasets[-1]
    assert last["final"] and last["done"] == last["total"] == len(milvus_world.seed.datasets)
    assert last["also"]["chunks"] == sum(d["indexed_chunks"] for d in result["datasets"])
