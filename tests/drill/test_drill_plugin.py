"""Issue 13: a drill restores the plugin daemon's database next to the main one, checks every table's row count
against the counts taken in the dump's own snapshot, and removes it afterwards."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.drill.conftest import DrillWorld, summary
from tests.export.helpers import RunCli
from tests.snapshot.test_plugin_database import reseal_meta, seed_plugin_database


def test_a_drill_restores_and_checks_the_plugin_database_then_drops_it(drill_world: DrillWorld, run_cli: RunCli,
                                                                        monkeypatch: pytest.MonkeyPatch,
                                                                        tmp_path: Path) -> None:
    w = drill_world
    name = f"dify_plugin_{uuid.uuid4().hex[:8]}"
    seed_plugin_database(w.pg.create_database(name), str(w.db.tenant_id))
    try:
        monkeypatch.setenv("DRTOOL_POSTGRES_PLUGIN_DATABASE", name)
        code, events = run_cli("snapshot", "create")
        assert code == 0, events
        databases = w.databases()
        code, events = run_cli("drill", "--report-dir", str(tmp_path), "--scratch-db", "drtool_drill_plug")
        result = summary(events)
        assert code == 0, result["problems"]
        restored = result["phases"][1]["detail"]
        assert restored["plugin_database"]["action"] == "create and restore"
        assert restored["plugin_database"]["target"].endswith("/drtool_drill_plug_plugin")
        assert restored["plugin_tables"] == 13 and restored["plugin_rows"] == 3 + 3 + 3 + 1 + 1 + 1 + 1 + 1
        assert result["cleanup"]["plugin_database_dropped"] is True
        assert result["scratch"]["plugin_database"].endswith("/drtool_drill_plug_plugin")
        assert w.databases() == databases  # both scratch databases gone, the live ones untouched
    finally:
        w.pg.drop_database(name)
        w.pg.drop_database("drtool_drill_plug_plugin")


def test_a_plugin_table_that_lost_rows_fails_the_drill(drill_world: DrillWorld, run_cli: RunCli,
                                                       monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The row-count check has teeth: a snapshot whose recorded counts disagree with its plugin dump (here the
    record is edited; in life a dump that lost rows) fails restore_database, and the scratch targets still go."""
    w = drill_world
    name = f"dify_plugin_{uuid.uuid4().hex[:8]}"
    seed_plugin_database(w.pg.create_database(name), str(w.db.tenant_id))
    try:
        monkeypatch.setenv("DRTOOL_POSTGRES_PLUGIN_DATABASE", name)
        code, events = run_cli("snapshot", "create", "--json")
        assert code == 0, events
        sid = summary(events)["snapshot"]

        def edit(meta: dict[str, Any]) -> None:
            meta["plugin_database"]["row_counts"]["ai_model_installations"] = 2

        reseal_meta(w.client, w.dest_bucket, f"drtool/snapshots/{sid}/", edit)
        databases = w.databases()
        code, events = run_cli("drill", "--report-dir", str(tmp_path), "--snapshot", sid)
        result = summary(events)
        assert code == 4, result
        phase = result["phases"][1]
        assert phase["name"] == "restore_database" and phase["status"] == "failed"
        assert "ai_model_installations: 2 row(s) at the snapshot, 1 restored" in phase["error"]
        assert w.databases() == databases
    finally:
        w.pg.drop_database(name)
