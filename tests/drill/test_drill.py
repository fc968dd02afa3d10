"""`drtool drill` end to end against real Postgres, MinIO, Milvus Lite and the offline model: a passing drill,
--keep, the two drills that must fail (a pinned object version deleted, an RTO SLO below what it measures), and
the refusals that protect live data."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.drill.conftest import DrillWorld, summary
from tests.export.helpers import RunCli
from tests.foundation.metrics_check import parse_metrics


def _html_is_self_contained(page: str) -> None:
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and "<style>" in page
    assert not re.search(r"""<script|<link|@import|url\(|\s(src|href)\s*=""", page, re.I), "external resource"


@pytest.mark.parametrize("milvus_target", ["lite", "server"], indirect=True)
def test_a_drill_passes_leaves_nothing_behind_and_grows_the_history(drill_world: DrillWorld, run_cli: RunCli,
                                                                      tmp_path: Path) -> None:
    live_index, live_structs = drill_world.live_index(), drill_world.index_structs()
    databases = drill_world.databases()
    assert live_index and all(count for count, _ids in live_index.values())
    reports, metrics = tmp_path / "reports", tmp_path / "drill.prom"

    code, events = run_cli("drill", "--rto-slo", "1h", "--rpo-slo", "1d", "--report-dir", str(reports),
                           "--metrics-file", str(metrics))
    result = summary(events)
    assert code == 0, result["problems"]
    assert result["outcome"] == "passed"
    assert [(p["name"], p["status"]) for p in result["phases"]] == [
        ("snapshot_check", "ok"), ("restore_database", "ok"), ("rebuild_index", "ok"), ("verify", "ok")]
    assert result["rto"]["seconds"] == round(sum(p["seconds"] for p in result["phases"]), 3)
    assert result["rto"]["verdict"] == "met" and result["rpo"]["verdict"] == "met"
    assert result["rpo"]["replication_lag_seconds"] is None and result["rpo"]["lag_source"].startswith("unknown")
    rebuild = result["phases"][2]["detail"]
    # Every chunk file came from the version the snapshot pinned, and every dataset passed rebuild's gate.
    assert rebuild["chunk_files_at_snapshot_version"] == rebuild["datasets"] == len(live_index)
    assert all(d["gate"]["passed"] for d in rebuild["per_dataset"])
    verify = result["phases"][3]["detail"]
    assert verify["breaks"] == 0 and verify["files"]["checked"] == len(drill_world.db.seed.files)
    scratch_names = set(result["phases"][1]["detail"]["collections"].values())
    assert {n.removeprefix(f"Drill_{result['drill_id'][-6:]}_") for n in scratch_names} == set(live_index)

    # Reports: JSON equal to the summary's record, Markdown, and a self-contained HTML page.
    paths = {k: Path(v) for k, v in result["reports"].items()}
    assert set(paths) == {"json", "md", "html"} and all(p.parent == reports for p in paths.values())
    assert json.loads(paths["json"].read_text())["drill_id"] == result["drill_id"]
    assert "PASSED" in paths["md"].read_text()
    _html_is_self_contained(paths["html"].read_text())
    secrets = [drill_world.env["DRTOOL_POSTGRES_PASSWORD"], drill_world.env["DRTOOL_S3_SECRET_KEY"],
               drill_world.env["DRTOOL_EMBEDDING_API_KEY"]]
    history_object = drill_world.client.get_object(Bucket=drill_world.dest_bucket,
                                                   Key=f"drtool/drills/{result['drill_id']}.json")["Body"].read()
    for text in [p.read_text() for p in paths.values()] + [history_object.decode()]:
        assert not any(secret in text for secret in secrets)
    prom = parse_metrics(metrics)  # prometheus_client's parser
    assert prom["drtool_drill_last_exit_code"][()] == 0
    assert prom["drtool_drill_phase_duration_seconds"][(("phase", "rebuild_index"), ("status", "ok"))] >= 0

    # Nothing left behind; the live database and index are exactly as before.
    assert drill_world.databases() == databases
    assert drill_world.live_index() == live_index
    assert drill_world.index_structs() == live_structs
    assert not drill_world.bucket.keys(f"drtool/rebuild/drill-{result['drill_id']}/")
    assert drill_world.history_keys() == [f"drtool/drills/{result['drill_id']}.json"]

    # Damaged or foreign objects in the history prefix are skipped, never fatal.
    for junk_key, junk in (("drtool/drills/zz-not-json.json", b"{oops"), ("drtool/drills/zz-other.json", b"{}")):
        drill_world.client.put_object(Bucket=drill_world.dest_bucket, Key=junk_key, Body=junk)

    # A second drill with --keep: its scratch database and collections stay; history lists both, newest first.
    code, events = run_cli("drill", "--keep", "--scratch-db", "drtool_drill_kept", "--report-dir", str(reports))
    kept = summary(events)
    assert code == 0, kept["problems"]
    assert kept["kept"] is True and kept["cleanup"] == {}
    assert "drtool_drill_kept" in drill_world.databases()
    kept_names = set(kept["phases"][1]["detail"]["collections"].values())
    index = drill_world.live_index()
    assert kept_names <= set(index) and {k: v for k, v in index.items() if k in live_index} == live_index
    with psycopg.connect(drill_world.pg.dsn("drtool_drill_kept")) as conn:
        structs = conn.execute("SELECT index_struct FROM datasets WHERE indexing_technique = 'high_quality'")
        assert all(json.loads(s[0])["vector_store"]["class_prefix"] in kept_names for s in structs)
    target = drill_world.milvus()
    try:
        for name in kept_names:
            target.drop(name)
    finally:
        target.close()
    drill_world.pg.drop_database("drtool_drill_kept")
    trend = Path(kept["reports"]["html"]).read_text()
    assert trend[trend.index("Trend"):].count("<rect") == 2  # the first drill and this one

    code, events = run_cli("drill", "history")
    assert code == 0
    listed = events[-1]["drills"]
    assert [d["drill"] for d in listed] == [kept["drill_id"], result["drill_id"]]
    assert listed[1]["outcome"] == "passed" and listed[1]["rto_slo"] == "met"


def test_a_deleted_pinned_version_fails_the_drill_and_names_the_key(drill_world: DrillWorld, run_cli: RunCli,
                                                                     tmp_path: Path) -> None:
    client, source = drill_world.client, drill_world.bucket.name
    key = next(k for k in drill_world.db.seed.files if k.startswith("upload_files/"))
    version = client.head_object(Bucket=source, Key=key)["VersionId"]
    client.delete_object(Bucket=source, Key=key, VersionId=version)  # the pinned bytes are gone for good
    databases = drill_world.databases()

    code, events = run_cli("drill", "--report-dir", str(tmp_path))
    result = summary(events)
    assert code == 4
    assert result["outcome"] == "failed" and result["failed_phases"] == ["snapshot_check"]
    assert [p["status"] for p in result["phases"]] == ["failed", "skipped", "skipped", "skipped"]
    error = result["phases"][0]["error"]
    assert key in error and version in error and "missing" in error
    assert result["rto"]["seconds"] is None
    assert drill_world.databases() == databases
    assert "FAILED" in Path(result["reports"]["md"]).read_text() and key in Path(result["reports"]["html"]).read_text()
    assert drill_world.history_keys() == [f"drtool/drills/{result['drill_id']}.json"]


def test_an_rto_slo_below_the_measured_rto_fails_with_exit_4(drill_world: DrillWorld, run_cli: RunCli,
                                                              tmp_path: Path, minio_pair: Any,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    live = drill_world.db.dbname
    # Refusals first: nothing is created for them.
    assert run_cli("drill", "--scratch-db", live)[0] == 2
    assert run_cli("drill", "--rto-slo", "fast")[0] == 2
    assert run_cli("drill", "--snapshot", "20200101T000000Z-abcdef")[0] == 10
    assert not drill_world.history_keys()
    databases = drill_world.databases()

    # With the MinIO sites configured, a replication probe measures the lag that adds to the RPO.
    monkeypatch.setenv("DRTOOL_REPLICATION_SITES", f"A={minio_pair.a.endpoint},B={minio_pair.b.endpoint}")
    code, events = run_cli("drill", "--rto-slo", "0.05s", "--report-dir", str(tmp_path))
    result = summary(events)
    assert code == 4
    rpo = result["rpo"]
    assert rpo["lag_source"] == "measured now by a replication probe", rpo
    assert rpo["replication_lag_seconds"] > 0
    assert rpo["seconds"] == pytest.approx(rpo["snapshot_age_seconds"] + rpo["replication_lag_seconds"], abs=0.01)
    assert all(p["status"] == "ok" for p in result["phases"])
    assert result["outcome"] == "slo breached" and result["rto"]["verdict"] == "breached"
    assert result["rto"]["seconds"] > 0.05
    assert any(p.startswith("RTO ") and "above its SLO 50ms" in p for p in result["problems"])
    assert drill_world.databases() == databases  # cleaned up after a breach too
    page = Path(result["reports"]["html"]).read_text()
    _html_is_self_contained(page)
    assert "SLO BREACHED" in page


def _events_of(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e.get("event") == kind]


def test_ctrl_c_and_sigterm_mid_rebuild_still_remove_every_scratch_target(drill_world: DrillWorld) -> None:
    """As cron or Kubernetes stops it: a real process, interrupted while it writes the scratch collections."""
    import signal

    from tests.export.helpers import spawn_json

    live_index, databases = drill_world.live_index(), drill_world.databases()
    drill_world.release_milvus_lite()
    for sig in (signal.SIGINT, signal.SIGTERM):
        proc = spawn_json(["drill"], drill_world.env)
        assert proc.stdout is not None
        seen: list[dict[str, Any]] = []
        for line in proc.stdout:
            if line.startswith("{"):
                seen.append(json.loads(line))
                if seen[-1].get("event") == "drill.phase_started" and seen[-1].get("phase") == "rebuild_index":
                    break
        started = _events_of(seen, "drill.started")
        assert started, seen
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 1, (sig, out[-2000:], err[-2000:])
        assert "Traceback" not in err
        cleanup = _events_of([json.loads(x) for x in out.splitlines() if x.startswith("{")], "drill.cleanup")
        assert cleanup and cleanup[0]["database_dropped"] is True and "errors" not in cleanup[0]
        assert drill_world.databases() == databases
        drill_id = started[0]["drill_id"]
        assert not drill_world.bucket.keys(f"drtool/rebuild/drill-{drill_id}/")
    assert drill_world.live_index() == live_index  # scratch collections dropped, live ones as they were
    assert not drill_world.history_keys()  # an interrupted drill measured nothing: no record
