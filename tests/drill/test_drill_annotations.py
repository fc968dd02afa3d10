"""Issue 13: a drill rehearses the annotation-reply collections too. For every app the restored database has
annotation reply enabled for, it rebuilds the app's collection into scratch from the annotation file at the
version the snapshot pinned (Dify's annotation query is rebuild's gate), verifies it, reports it per app and
drops it with the other scratch targets. Real Postgres, MinIO, Milvus Lite and the offline model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.drill.conftest import DrillWorld, summary
from tests.export.helpers import RunCli
from tests.foundation.cli_runner import run_json


def _scratch_left(w: DrillWorld, token: str) -> list[str]:
    target = w.milvus()
    try:
        return [n for n in target.client.list_collections() if n.startswith(f"Drill_{token}_")]
    finally:
        target.close()


def test_a_drill_rebuilds_verifies_and_reports_the_annotation_collections(
        annotated_drill_world: DrillWorld, run_cli: RunCli, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    w = annotated_drill_world
    enabled = {a.id: a for a in w.annotations.enabled}
    assert len(enabled) == 2
    # After the snapshot the current annotation files are damaged: the drill must read the pinned versions.
    for app_id in enabled:
        w.client.put_object(Bucket=w.bucket.name, Key=f"annotations/{app_id}/processed/chunks.jsonl",
                            Body=b"{not json\n")
    databases = w.databases()

    monkeypatch.setenv("DRTOOL_PROGRESS_SECONDS", "0")
    code, events, records = run_json(capsys, "drill", "--report-dir", str(tmp_path))
    result = summary(events)
    assert code == 0, result["problems"]
    # Off a terminal the drill logs its progress (issue #14): phases of 4, then the chunks each rebuild stored and
    # the files verify checked, each last line equal to the work the result reports.
    progress = [r for r in records if r.get("event") == "progress" and r.get("task")]
    last = {r["task"]: r for r in progress}
    phases = [r["done"] for r in progress if r["task"] == "drill"]
    assert phases == sorted(phases) and set(phases) == {1, 2, 3, 4} and last["drill"]["total"] == 4
    apps = [t for t in last if t.startswith("drill annotations [")]
    assert sorted(last[t]["done"] for t in apps) == sorted(len(a.annotations) for a in enabled.values())
    assert last["verify files"]["done"] == result["phases"][3]["detail"]["files"]["checked"]
    token = result["drill_id"][-6:]
    restored = result["phases"][1]["detail"]
    assert restored["annotation_collections"] == {a.id: f"Drill_{token}_{a.collection_name}"
                                                  for a in enabled.values()}
    assert set(restored["annotation_collections"].values()) <= set(result["scratch"]["collections"].split(", "))

    rebuild = result["phases"][2]["detail"]
    assert rebuild["datasets"] == 1 and rebuild["annotation_apps"] == 2
    assert rebuild["annotation_files_at_snapshot_version"] == 2 and rebuild["annotation_files_current"] == 0
    per_app = {r["app_id"]: r for r in rebuild["per_app"]}
    assert set(per_app) == set(enabled)
    for app in enabled.values():
        r = per_app[app.id]
        assert r["status"] == "rebuilt" and r["collection"] == restored["annotation_collections"][app.id], r
        assert r["annotations"] == r["inserted"] == len(app.annotations)
        # The gate ran Dify's annotation query (top 1, score above the app's threshold) on every annotation.
        assert r["gate"]["passed"] and r["gate"]["dify_query_ok"] == r["gate"]["sample"] == len(app.annotations)
    assert rebuild["annotations"] == sum(len(a.annotations) for a in enabled.values())

    verify = result["phases"][3]["detail"]
    assert verify["breaks"] == 0 and verify["annotation_apps"] == 2
    assert {a["app_id"]: (a["ok"], a["vectors"], a["collection"]) for a in verify["annotations"]} == {
        a.id: (True, len(a.annotations), restored["annotation_collections"][a.id]) for a in enabled.values()}

    # The record and both human reports carry one row per app.
    assert {r["app_id"]: (r["rebuild"], r["dify_query"], r["vectors"], r["verify"]) for r in result["annotations"]} \
        == {a.id: ("rebuilt", f"{len(a.annotations)}/{len(a.annotations)}", len(a.annotations), "ok")
            for a in enabled.values()}
    assert json.loads(Path(result["reports"]["json"]).read_text())["annotations"] == result["annotations"]
    markdown = Path(result["reports"]["md"]).read_text()
    assert "## Annotation replies" in markdown and all(app_id in markdown for app_id in enabled)
    assert "Annotation replies" in Path(result["reports"]["html"]).read_text()

    # Scratch annotation collections go with the rest; the live side is as it was.
    assert _scratch_left(w, token) == []
    assert w.databases() == databases


def test_an_annotation_binding_on_another_model_fails_the_drill(annotated_drill_world: DrillWorld, run_cli: RunCli,
                                                                tmp_path: Path) -> None:
    """Dify would query these collections with the binding's model: a drill that cannot rebuild them with it
    fails rebuild_index with the reason, skips verify, says so per app, and still removes its scratch targets."""
    w = annotated_drill_world
    with w.db.connect() as conn:
        conn.execute("UPDATE dataset_collection_bindings SET model_name = 'text-embedding-3-large' "
                     "WHERE type = 'annotation'")
        conn.commit()
    code, events = run_cli("snapshot", "create")
    assert code == 0, events
    databases = w.databases()
    code, events = run_cli("drill", "--report-dir", str(tmp_path))
    result = summary(events)
    assert code == 4, result
    phase = result["phases"][2]
    assert phase["name"] == "rebuild_index" and phase["status"] == "failed"
    assert "2 of 2 annotation collection(s) could not be rebuilt" in phase["error"]
    assert "text-embedding-3-large" in phase["error"] and "dataset(s)" not in phase["error"]
    assert result["phases"][3]["status"] == "skipped"
    assert {r["rebuild"] for r in result["annotations"]} == {"failed"}
    assert {r["verify"] for r in result["annotations"]} == {None}
    assert "not run" in Path(result["reports"]["md"]).read_text()
    assert _scratch_left(w, result["drill_id"][-6:]) == []
    assert w.databases() == databases
