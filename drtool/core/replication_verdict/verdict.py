"""Turn MinIO's site-replication answers into one verdict with every reason listed.

`mc admin replicate status` prints tables and exits 0 whatever they show; cron and alerting need a decision.
This module is pure: it takes the parsed JSON each site returned (or the fact that it did not answer) and
returns reasons, each with a level, the site that reported it and a sentence an operator can act on.

Why each rule (see docs/replication.md):
- CRITICAL means data written now may not reach the other site: replication off, a site missing from the
  configuration, a site unreachable or reported offline by a peer, a bucket absent on a site, a bucket without
  versioning or without its replication rule to a peer.
- WARNING means replication works but something drifts: config mismatches per entity, a queue above a threshold,
  failures in the last hour, a lifecycle rule that expires noncurrent versions (it erases the history a restore
  of an older snapshot needs).
- `StatsSummary` is deliberately ignored: MinIO counts a bucket as replicated even where it is missing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from enum import IntEnum
from typing import Any

__all__ = ["Level", "Reason", "Verdict", "decide", "exit_code"]


class Level(IntEnum):
    OK = 0
    WARNING = 1
    CRITICAL = 2

    @property
    def label(self) -> str:
        return self.name


_EXIT = {Level.OK: 0, Level.WARNING: 3, Level.CRITICAL: 4}


def exit_code(level: Level) -> int:
    """drtool's exit code table: OK 0, WARNING 3 (degraded), CRITICAL 4."""
    return _EXIT[level]


@dataclass(frozen=True)
class Reason:
    level: Level
    code: str  # stable identifier for alert routing, e.g. "peer_offline"
    site: str  # the alias of the site that reported it
    message: str
    entity: str | None = None  # bucket, user, group, policy or rule name when the reason is about one

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["level"] = self.level.label
        return data


@dataclass(frozen=True)
class Verdict:
    level: Level
    reasons: tuple[Reason, ...]

    @property
    def exit_code(self) -> int:
        return exit_code(self.level)

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.level.label, "exit_code": self.exit_code,
                "reasons": [r.to_dict() for r in self.reasons]}


def decide(reasons: Iterable[Reason]) -> Verdict:
    """The worst level wins; reasons are kept in order, CRITICAL first, so the top line is the one to read."""
    ordered = sorted(reasons, key=lambda r: -int(r.level))
    level = max((r.level for r in ordered), default=Level.OK)
    return Verdict(level=level, reasons=tuple(ordered))
