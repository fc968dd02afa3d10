"""The pure half of the drill: durations, RTO/RPO arithmetic, verdicts, and the three renderings."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from drtool.core import drill_report as dr
from drtool.core.drill_record import build_record, format_duration, is_record, parse_duration

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("15m", 900), ("2h", 7200), ("1d", 86400), ("1h30m", 5400), ("45", 45), ("0.5s", 0.5),
    (" 2H ", 7200), ("1d 2h", 93600),
])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "10x", "-5m", "0s", "1h1h", "1h30", "m", "5m3"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(("seconds", "text"), [
    (None, "unknown"), (0.25, "250ms"), (12.34, "12.3s"), (245, "4m 05s"), (7380, "2h 03m"), (273600, "3d 04h"),
])
def test_format_duration(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


def _phases(*spec: tuple[str, str, float]) -> list[dict[str, Any]]:
    return [{"name": n, "status": s, "seconds": t, "detail": {}, "error": None if s == "ok" else "boom"}
            for n, s, t in spec]


def _drill_record(phases: list[dict[str, Any]], *, rto_slo: float | None = None, rpo_slo: float | None = None,
                  lag: float | None = None, problems: tuple[str, ...] = (), age: float = 3600) -> dict[str, Any]:
    return build_record(
        drill_id="20261129T120000Z-abc123", started_at=T0, finished_at=T0 + timedelta(seconds=30),
        snapshot={"id": "20261129T110000Z-def456", "fence": (T0 - timedelta(seconds=age)).isoformat()},
        fence=T0 - timedelta(seconds=age), phases=phases, rto_slo=rto_slo, rpo_slo=rpo_slo, lag=lag,
        lag_source="unknown: not configured" if lag is None else "probe", scratch={"database": "h:5432/x"},
        cleanup={"database_dropped": True}, kept=False, problems=problems, version="test")


OK4 = _phases(("snapshot_check", "ok", 1.5), ("restore_database", "ok", 2.25), ("rebuild_index", "ok", 10.0),
              ("verify", "ok", 0.75))


def test_rto_is_the_sum_of_phases_and_rpo_the_age_plus_lag() -> None:
    record = _drill_record(OK4, rto_slo=60, rpo_slo=7200, lag=12.5)
    assert record["rto"] == {"seconds": 14.5, "slo_seconds": 60, "verdict": "met"}
    assert record["rpo"]["seconds"] == 3612.5 and record["rpo"]["snapshot_age_seconds"] == 3600
    assert record["rpo"]["replication_lag_seconds"] == 12.5 and record["rpo"]["verdict"] == "met"
    assert record["outcome"] == "passed" and record["exit_code"] == 0 and record["problems"] == []


def test_breaches_exit_4_and_say_by_how_much() -> None:
    record = _drill_record(OK4, rto_slo=10, rpo_slo=1800)
    assert record["rto"]["verdict"] == "breached" and record["rpo"]["verdict"] == "breached"
    assert record["outcome"] == "slo breached" and record["exit_code"] == 4
    assert record["problems"] == ["RTO 14.5s is above its SLO 10.0s", "RPO 1h 00m is above its SLO 30m 00s"]
    assert record["rpo"]["replication_lag_seconds"] is None  # unknown, not zero


def test_a_failed_phase_has_no_rto_and_fails_the_drill() -> None:
    phases = _phases(("snapshot_check", "failed", 1.0), ("restore_database", "skipped", 0.0))
    record = _drill_record(phases, rto_slo=60)
    assert record["rto"]["seconds"] is None and record["rto"]["verdict"] == "unknown"
    assert record["outcome"] == "failed" and record["exit_code"] == 4 and record["failed_phases"] == ["snapshot_check"]


def test_a_cleanup_problem_fails_an_otherwise_good_drill() -> None:
    record = _drill_record(OK4, problems=("cleanup: scratch database x: refused",))
    assert record["outcome"] == "failed" and record["exit_code"] == 4


def test_no_slo_is_neither_met_nor_breached() -> None:
    record = _drill_record(OK4)
    assert record["rto"]["verdict"] == "no slo" and record["rpo"]["verdict"] == "no slo"
    assert record["exit_code"] == 0


def _history(n: int) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        r = _drill_record(OK4 if i % 2 else _phases(("snapshot_check", "failed", 1.0)), rto_slo=60)
        r["drill_id"] = f"2026112{i}T120000Z-00000{i}"
        r["started_at"] = (T0 - timedelta(days=n - i)).isoformat()
        out.append(r)
    return out[::-1]  # newest first, as history returns it


def test_json_round_trips() -> None:
    record = _drill_record(OK4, rto_slo=60)
    assert json.loads(dr.render_json(record)) == json.loads(json.dumps(record))


def test_markdown_has_verdicts_phases_and_history() -> None:
    record = _drill_record(OK4, rto_slo=10)
    text = dr.render_markdown(record, _history(3))
    assert text.startswith("# Restore drill 20261129T120000Z-abc123: SLO BREACHED")
    assert "| RTO | 14.5s: breached (SLO 10.0s) |" in text
    assert "+ unknown replication lag" in text
    assert "| rebuild_index | ok | 10.0s |" in text
    assert "## Earlier drills" in text and text.count("| failed |") == 2


def test_html_is_self_contained_and_escapes() -> None:
    record = _drill_record(OK4, rto_slo=60)
    record["problems"] = ['<script>alert("x")</script>']
    page = dr.render_html(record, _history(4))
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<script" not in page.lower().replace("&lt;script", "")
    assert not re.search(r"""(src|href)\s*=|@import|url\(|<link""", page, re.I)
    assert page.count("<svg") == 2  # timeline and trend
    trend = page[page.index("Trend"):]
    assert trend.count("<rect") == 5  # four earlier drills and this one
    assert "RTO SLO" in page and "&lt;script&gt;" in page


def test_timeline_bars_follow_each_other() -> None:
    svg = dr.timeline_svg(OK4, rto_slo=None, width=500)
    xs = [float(x) for x in re.findall(r'<rect x="([0-9.]+)"', svg)]
    widths = [float(w) for w in re.findall(r'width="([0-9.]+)" height="18"', svg)]
    assert len(xs) == 4 and xs == sorted(xs)
    for i in range(3):
        assert xs[i + 1] == pytest.approx(xs[i] + widths[i], abs=0.2)


def test_history_table() -> None:
    table = dr.render_history_table(_history(2))
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["date", "(UTC)", "snapshot"]
    assert len(lines) == 3 and "failed" in lines[2] and "14.5s" in lines[1] and "met" in lines[1]


def test_is_record_accepts_records_and_refuses_damaged_ones() -> None:
    record = _drill_record(OK4, rto_slo=60)
    assert is_record(json.loads(dr.render_json(record)))
    for damage in ({"version": 2}, {"rto": "fast"}, {"rpo": {"seconds": "1h"}}, {"drill_id": None},
                   {"phases": {}}, {"rto": {"seconds": True}}):
        assert not is_record({**record, **damage}), damage
    assert not is_record(["not", "a", "dict"])


def _annotated_phases(app_id: str = "app-1") -> list[dict[str, Any]]:
    phases = _phases(("snapshot_check", "ok", 1.0), ("restore_database", "ok", 1.0), ("rebuild_index", "ok", 5.0),
                     ("verify", "ok", 1.0))
    phases[2]["detail"] = {"per_app": [
        {"app_id": app_id, "collection": "Drill_abc123_Vector_index_app_1_Node", "status": "rebuilt",
         "annotations": 4, "gate": {"passed": True, "sample": 4, "dify_query_ok": 4}, "error": None},
        {"app_id": "app-2", "collection": "Drill_abc123_Vector_index_app_2_Node", "status": "failed",
         "annotations": 0, "gate": None, "error": "no annotation file for app app-2"}]}
    phases[3]["detail"] = {"annotations": [
        {"app_id": app_id, "collection": "Drill_abc123_Vector_index_app_1_Node", "annotations": 4, "vectors": 4,
         "ok": True, "breaks": {}, "note": ""},
        {"app_id": "app-3", "collection": "Drill_abc123_Vector_index_app_3_Node", "annotations": 2, "vectors": 1,
         "ok": False, "breaks": {"missing_annotation_vector": 1}, "note": ""}]}
    return phases


def test_annotation_rows_join_rebuild_and_verify_per_app() -> None:
    record = _drill_record(_annotated_phases())
    assert record["annotations"] == [
        {"app_id": "app-1", "collection": "Drill_abc123_Vector_index_app_1_Node", "annotations": 4,
         "rebuild": "rebuilt", "dify_query": "4/4", "vectors": 4, "verify": "ok", "error": None},
        {"app_id": "app-2", "collection": "Drill_abc123_Vector_index_app_2_Node", "annotations": 0,
         "rebuild": "failed", "dify_query": None, "vectors": None, "verify": None,
         "error": "no annotation file for app app-2"},
        {"app_id": "app-3", "collection": "Drill_abc123_Vector_index_app_3_Node", "annotations": 2,
         "rebuild": None, "dify_query": None, "vectors": 1, "verify": "missing_annotation_vector 1", "error": None}]
    markdown = dr.render_markdown(record)
    assert "## Annotation replies" in markdown and "| rebuilt | 4/4 | 4 | ok |" in markdown
    assert "| failed | - | - | not run |" in markdown and "no annotation file for app app-2" in markdown
    assert "Annotation replies" in dr.render_html(record)
    # A record without annotation apps (and one written before issue 13) renders no such section.
    assert "Annotation replies" not in dr.render_markdown(_drill_record(OK4))
    old = _drill_record(OK4)
    old.pop("annotations")
    assert "Annotation replies" not in dr.render_html(old)


def test_annotation_rows_are_escaped_in_both_reports() -> None:
    """App ids come from the restored database: untrusted, never raw markup or a table-breaking pipe."""
    record = _drill_record(_annotated_phases(app_id="<img src=x onerror=alert(1)>|\x1b[2J"))
    page = dr.render_html(record)
    assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    markdown = dr.render_markdown(record)
    assert "\x1b" not in markdown and "\\|" in markdown
