"""MinIO's replication diff of one bucket, counted as it streams by, and the reasons it gives.

The backlog is the direct evidence of what has not arrived yet: MinIO's failed-last-hour counter both lags an
outage and outlives its repair, so an old failed version is CRITICAL whatever the counter says.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from drtool.core.replication_verdict.verdict import Level, Reason

__all__ = ["Backlog", "backlog_reasons", "drop_healed_hourly_failures"]


@dataclass
class Backlog:
    """One site's unreplicated versions of one bucket, counted as they stream by (memory does not grow)."""

    site: str
    bucket: str
    failed: int = 0
    pending: int = 0
    oldest_failed: datetime | None = None
    oldest_pending: datetime | None = None
    examples: list[str] = field(default_factory=list)  # a few keys, for the operator

    def add(self, item: Mapping[str, Any], keep: int = 5) -> None:
        """Count one line of MinIO's replication diff; FAILED on any target counts as failed."""
        states = {str(item.get(k) or "").upper() for k in ("rStatus", "dStatus")}
        for target in (item.get("targets") or {}).values() if isinstance(item.get("targets"), Mapping) else ():
            if isinstance(target, Mapping):
                states |= {str(target.get(k) or "").upper() for k in ("rStatus", "dStatus")}
        when = _parse_time(item.get("lastModified"))
        if "FAILED" in states:
            self.failed += 1
            if when is not None and (self.oldest_failed is None or when < self.oldest_failed):
                self.oldest_failed = when
        elif states & {"PENDING", "QUEUED"}:
            self.pending += 1
            if when is not None and (self.oldest_pending is None or when < self.oldest_pending):
                self.oldest_pending = when
        else:
            return
        if len(self.examples) < keep:
            self.examples.append(str(item.get("object") or "")[:200])

    @property
    def empty(self) -> bool:
        return self.failed == 0 and self.pending == 0

    def to_dict(self, now: datetime) -> dict[str, Any]:
        def age(t: datetime | None) -> float | None:
            return None if t is None else max(0.0, (now - t).total_seconds())

        return {"site": self.site, "bucket": self.bucket, "failed": self.failed, "pending": self.pending,
                "oldest_failed_age_seconds": age(self.oldest_failed),
                "oldest_pending_age_seconds": age(self.oldest_pending), "examples": list(self.examples)}


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().replace("Z", "+00:00")
    head, dot, frac = text.partition(".")
    if dot:  # Go writes nanoseconds; Python reads at most microseconds
        digits = "".join(ch for ch in frac if ch.isdigit())
        text = f"{head}.{digits[:6]}{frac[len(digits):]}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def backlog_reasons(backlogs: Iterable[Backlog], now: datetime, max_failed_age: float) -> list[Reason]:
    """CRITICAL when a failed version is older than `max_failed_age` s, whatever MinIO's hourly counter says;
    WARNING while anything else waits. An empty backlog gives no reason at all."""
    reasons: list[Reason] = []
    for b in backlogs:
        if b.empty:
            continue
        failed_age = (now - b.oldest_failed).total_seconds() if b.oldest_failed else None
        pending_age = (now - b.oldest_pending).total_seconds() if b.oldest_pending else None
        if b.failed and (failed_age is None or failed_age > max_failed_age):
            reasons.append(Reason(
                Level.CRITICAL, "backlog_failed_old", b.site,
                f"site {b.site}: {b.failed} version(s) in bucket {b.bucket} failed to replicate, the oldest "
                f"written {_age(failed_age)} ago (threshold {max_failed_age:g} s)", b.bucket))
        else:
            oldest = max(a for a in (failed_age, pending_age, 0.0) if a is not None)
            reasons.append(Reason(
                Level.WARNING, "replication_backlog", b.site,
                f"site {b.site}: bucket {b.bucket} has {b.failed} failed and {b.pending} pending version(s) "
                f"not yet replicated, the oldest written {_age(oldest)} ago", b.bucket))
    return reasons


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "at an unknown time"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def drop_healed_hourly_failures(reasons: Iterable[Reason], healed_sites: set[str]) -> list[Reason]:
    """MinIO's failed-last-hour counter stays up for an hour after an outage healed; when a site's backlog is
    known to be empty, its failures were retried successfully and the counter alone is no reason to warn."""
    return [r for r in reasons if not (r.code == "failures_last_hour" and r.site in healed_sites)]
