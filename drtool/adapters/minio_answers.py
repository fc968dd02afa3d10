"""The shape MinIO's site-replication answers must have before drtool reads them.

Everything downstream (verdict, table, metrics) reads these fields with plain dict access; checking their types
once, as an answer arrives, means a damaged or foreign answer is reported naming the field instead of crashing
halfway through. `MinioAdmin` (minio_admin.py) refuses an answer these functions find a problem in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _where(path: tuple[str, ...]) -> str:
    """`Metrics.replMetrics.'6e7f…'.failed`: names as MinIO spells them, odd keys quoted, list items as [i]."""
    out = ""
    for p in path:
        out += p if p.startswith("[") else ("." if out else "") + (p if p.isidentifier() else repr(p[:40]))
    return out


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number"}.get(type(value), type(value).__name__)


class _Shape:
    def __init__(self) -> None:
        self.problem: str | None = None

    def fail(self, path: tuple[str, ...], value: Any, expected: str) -> None:
        if self.problem is None:
            self.problem = f"field {_where(path)} is {_kind(value)}, expected {expected}"

    def obj(self, value: Any, path: tuple[str, ...]) -> Mapping[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.fail(path, value, "an object")
            return {}
        return value

    def text(self, value: Any, path: tuple[str, ...]) -> None:
        if value is not None and not isinstance(value, str):
            self.fail(path, value, "a string")

    def number(self, value: Any, path: tuple[str, ...]) -> None:
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value \
                or value in (float("inf"), float("-inf")):
            self.fail(path, value, "a finite number")


def info_problem(data: Mapping[str, Any]) -> str | None:
    """The first field of a site-replication/info answer with a type drtool cannot use, or None."""
    shape = _Shape()
    shape.text(data.get("name"), ("name",))
    sites = data.get("sites")
    if sites is not None and not isinstance(sites, list):
        shape.fail(("sites",), sites, "a list")
    for i, peer in enumerate(sites if isinstance(sites, list) else []):
        if not isinstance(peer, Mapping):
            shape.fail(("sites", f"[{i}]"), peer, "an object")
            continue
        for name in ("deploymentID", "name", "endpoint"):
            shape.text(peer.get(name), ("sites", f"[{i}]", name))
    return shape.problem


_ENTITY_SECTIONS = ("BucketStats", "PolicyStats", "UserStats", "GroupStats", "ILMExpiryStats")


def status_problem(data: Mapping[str, Any]) -> str | None:
    """The first field of a site-replication/status answer with a type drtool cannot use, or None."""
    shape = _Shape()
    for dep, peer in shape.obj(data.get("Sites"), ("Sites",)).items():
        if not isinstance(peer, Mapping):
            shape.fail(("Sites", dep), peer, "an object")
            continue
        for name in ("name", "endpoint"):
            if name in peer and not isinstance(peer[name], str):  # the table sorts by name: None would not sort
                shape.fail(("Sites", dep, name), peer[name], "a string")
    shape.obj(data.get("StatsSummary"), ("StatsSummary",))
    for section in _ENTITY_SECTIONS:
        for entity, per_site in shape.obj(data.get(section), (section,)).items():
            for dep, stats in shape.obj(per_site, (section, entity)).items():
                if not isinstance(stats, Mapping):
                    shape.fail((section, entity, dep), stats, "an object")
    metrics = shape.obj(data.get("Metrics"), ("Metrics",))
    curr = shape.obj(shape.obj(metrics.get("queued"), ("Metrics", "queued")).get("curr"),
                     ("Metrics", "queued", "curr"))
    for name in ("count", "bytes"):
        shape.number(curr.get(name), ("Metrics", "queued", "curr", name))
    for dep, metric in shape.obj(metrics.get("replMetrics"), ("Metrics", "replMetrics")).items():
        path = ("Metrics", "replMetrics", dep)
        if not isinstance(metric, Mapping):
            shape.fail(path, metric, "an object")
            continue
        shape.text(metric.get("endpoint"), (*path, "endpoint"))
        shape.number(metric.get("replicatedCount"), (*path, "replicatedCount"))
        last_hour = shape.obj(shape.obj(metric.get("failed"), (*path, "failed")).get("lastHour"),
                              (*path, "failed", "lastHour"))
        shape.number(last_hour.get("count"), (*path, "failed", "lastHour", "count"))
        shape.number(shape.obj(metric.get("latency"), (*path, "latency")).get("avg"), (*path, "latency", "avg"))
    return shape.problem
