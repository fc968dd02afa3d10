"""The restore drill's numbers and record: duration parsing, RTO/RPO arithmetic, SLO verdicts, the per-app
annotation rows, and the drill record itself (built, and checked when read back from history).

Pure on purpose: the drill record is a plain dict (the same dict is stored as the drill's history object), so a
report can be rendered again from history (drtool/core/drill_report.py) and these functions are tested without any
server.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

RECORD_VERSION = 1

PHASES: tuple[tuple[str, str], ...] = (
    ("snapshot_check", "check the snapshot: checksums, pinned object versions, dump readable"),
    ("restore_database", "restore the dump into the scratch database"),
    ("rebuild_index", "re-embed the chunks and the annotation replies into scratch collections, with rebuild's "
                      "verification gate (Dify's annotation query for annotations)"),
    ("verify", "drtool verify: files at pinned versions, vectors <-> segments and annotations, on the scratch "
               "targets"),
)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")


def parse_duration(text: str) -> float:
    """Seconds from `90s`, `15m`, `2h`, `1d`, `1h30m` or a bare number of seconds; ValueError otherwise."""
    s = text.strip().lower().replace(" ", "")
    if not s:
        raise ValueError("empty duration")
    pos, total, units_seen = 0, 0.0, []
    while pos < len(s):
        m = _PART.match(s, pos)
        if not m or m.end() == pos:
            raise ValueError(f"{text!r} is not a duration (use e.g. 90s, 15m, 2h, 1d, 1h30m)")
        unit = m.group(2) or "s"
        if unit in units_seen or (not m.group(2) and (pos > 0 or m.end() != len(s))):
            raise ValueError(f"{text!r} is not a duration (use e.g. 90s, 15m, 2h, 1d, 1h30m)")
        units_seen.append(unit)
        total += float(m.group(1)) * _UNITS[unit]
        pos = m.end()
    if total <= 0 or math.isinf(total):
        raise ValueError(f"{text!r}: a duration must be positive")
    return total


def format_duration(seconds: float | None) -> str:
    """`unknown`, `850ms`, `12.3s`, `4m 05s`, `2h 03m`, `3d 04h`: short enough for a table cell."""
    if seconds is None:
        return "unknown"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h {whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d {whole % 86400 // 3600:02d}h"


def verdict(value: float | None, slo: float | None) -> str:
    """`met`, `breached`, `unknown` (an SLO but no value: a phase failed) or `no slo`."""
    if slo is None:
        return "no slo"
    if value is None:
        return "unknown"
    return "met" if value <= slo else "breached"


def rto_seconds(phases: Sequence[Mapping[str, Any]]) -> float | None:
    """The sum of the phases' wall times; None unless every phase finished: a recovery that did not finish has
    no recovery time."""
    if not phases or any(p.get("status") != "ok" for p in phases):
        return None
    return round(sum(float(p.get("seconds") or 0.0) for p in phases), 3)


def rpo_seconds(now: datetime, fence: datetime, lag: float | None) -> tuple[float, float | None]:
    """(now - fence, plus the replication lag when known) and the lag itself.

    The snapshot's fence is the newest moment it holds; a disaster now loses everything after it. When the DR
    copy is itself replicated, the lag of that replication adds to the loss.
    """
    age = max(0.0, (now - fence).total_seconds())
    return round(age + (lag or 0.0), 3), lag


def _detail(phases: Sequence[Mapping[str, Any]], name: str) -> Mapping[str, Any]:
    for p in phases:
        if isinstance(p, Mapping) and p.get("name") == name and isinstance(p.get("detail"), Mapping):
            return p["detail"]
    return {}


def annotation_rows(phases: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per app with annotation reply (issue #13), joined from the rebuild and verify phases' details.

    Annotation collections are not datasets: an operator reading the report must see per app whether Dify would
    answer its annotations again, which is the gate's Dify-query figure and verify's presence check. Empty when
    the snapshot's database has no app with annotation reply (and for records written before issue #13)."""
    rows: dict[str, dict[str, Any]] = {}

    def row(app_id: str) -> dict[str, Any]:
        return rows.setdefault(app_id, {"app_id": app_id, "collection": None, "annotations": None, "rebuild": None,
                                        "dify_query": None, "vectors": None, "verify": None, "error": None})

    for item in _detail(phases, "rebuild_index").get("per_app") or []:
        if not isinstance(item, Mapping) or not item.get("app_id"):
            continue
        r = row(str(item["app_id"]))
        gate = item.get("gate") if isinstance(item.get("gate"), Mapping) else {}
        r.update(collection=item.get("collection") or None, annotations=item.get("annotations"),
                 rebuild=item.get("status"), error=item.get("error"))
        if gate.get("sample") is not None:
            r["dify_query"] = f"{gate.get('dify_query_ok')}/{gate.get('sample')}"
    for item in _detail(phases, "verify").get("annotations") or []:
        if not isinstance(item, Mapping) or not item.get("app_id"):
            continue
        r = row(str(item["app_id"]))
        breaks = item.get("breaks") if isinstance(item.get("breaks"), Mapping) else {}
        r["collection"] = r["collection"] or item.get("collection")
        r["vectors"] = item.get("vectors")
        if r["annotations"] is None:
            r["annotations"] = item.get("annotations")
        r["verify"] = "ok" if item.get("ok") else ", ".join(f"{k} {n}" for k, n in breaks.items()) or "failed"
        if item.get("note") and not r["error"]:
            r["error"] = item.get("note")
    return list(rows.values())


def build_record(*, drill_id: str, started_at: datetime, finished_at: datetime, snapshot: Mapping[str, Any],
                 fence: datetime, phases: Sequence[Mapping[str, Any]], rto_slo: float | None,
                 rpo_slo: float | None, lag: float | None, lag_source: str, scratch: Mapping[str, Any],
                 cleanup: Mapping[str, Any], kept: bool, problems: Sequence[str], version: str) -> dict[str, Any]:
    """The drill's record: what the reports render and what history keeps. Exit code 4 on any failed phase,
    failed cleanup or breached SLO, else 0."""
    rto = rto_seconds(phases)
    rpo, lag_value = rpo_seconds(started_at, fence, lag)
    rto_verdict, rpo_verdict = verdict(rto, rto_slo), verdict(rpo, rpo_slo)
    failed = [p["name"] for p in phases if p.get("status") == "failed"]
    breached = [name for name, v in (("RTO", rto_verdict), ("RPO", rpo_verdict)) if v == "breached"]
    all_problems = list(problems)
    if failed or all_problems or not phases or any(p.get("status") != "ok" for p in phases):
        outcome = "failed"
    elif breached:
        outcome = "slo breached"
    else:
        outcome = "passed"
    for name in breached:
        value, slo = (rto, rto_slo) if name == "RTO" else (rpo, rpo_slo)
        all_problems.append(f"{name} {format_duration(value)} is above its SLO {format_duration(slo)}")
    return {
        "version": RECORD_VERSION,
        "drill_id": drill_id,
        "drtool_version": version,
        "started_at": started_at.isoformat(),
        "finished_at": finished_at.isoformat(),
        "snapshot": dict(snapshot),
        "phases": [dict(p) for p in phases],
        "rto": {"seconds": rto, "slo_seconds": rto_slo, "verdict": rto_verdict},
        "rpo": {"seconds": rpo, "snapshot_age_seconds": round(rpo - (lag_value or 0.0), 3),
                "replication_lag_seconds": lag_value, "lag_source": lag_source, "slo_seconds": rpo_slo,
                "verdict": rpo_verdict},
        "outcome": outcome,
        "exit_code": 0 if outcome == "passed" else 4,
        "failed_phases": failed,
        "problems": all_problems,
        "scratch": dict(scratch),
        "kept": kept,
        "cleanup": dict(cleanup),
        "annotations": annotation_rows(phases),
    }


def is_record(obj: Any) -> bool:
    """Whether a history object has the shape the renderers rely on: another writer's or a damaged object is
    skipped rather than breaking every later report."""
    if not isinstance(obj, dict) or obj.get("version") != RECORD_VERSION:
        return False
    if not isinstance(obj.get("drill_id"), str) or not isinstance(obj.get("started_at"), str):
        return False
    for part in ("rto", "rpo"):
        section = obj.get(part)
        if not isinstance(section, dict):
            return False
        for key in ("seconds", "slo_seconds"):
            value = section.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                return False
    return isinstance(obj.get("snapshot"), dict) and isinstance(obj.get("phases"), list)
