"""export-chunks reports its progress off a terminal: with DRTOOL_PROGRESS_SECONDS=0 a `progress` record on stderr
per report, counting datasets of the run and segments written, the last one equal to the work done; nothing of it
on stdout. Real Postgres (seeded Dify tables) and MinIO."""

from __future__ import annotations

from typing import Any

import pytest

from tests.export.helpers import Bucket
from tests.foundation.cli_runner import run_json


def test_export_progress_counts_datasets_and_segments(env: dict[str, str], dify_db: Any, bucket: Bucket,
                                                      capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRTOOL_PROGRESS_SECONDS", "0")
    code, events, records = run_json(capsys, "export-chunks", "--all")
    assert code == 0, records[-5:]
    assert not [e for e in events if e["event"] == "progress"], "progress never reaches stdout"
    progress = [r for r in records if r.get("event") == "progress" and r.get("task") == "export-chunks"]
    assert progress, records
    datasets = len(dify_db.seed.datasets)
    done = [r["done"] for r in progress]
    assert done == sorted(done) and set(done) == set(range(1, datasets + 1)), done  # one report per dataset
    assert {r["total"] for r in progress} == {datasets} and {r["unit"] for r in progress} == {"datasets"}
    last = progress[-1]
    assert last["final"] and last["done"] == datasets
    result = events[-1]
    assert last["also"]["segments"] == result["chunks"] == dify_db.seed.expected_vectors
    assert all(r["command"] == "export-chunks" and r["level"] == "info" for r in progress)
