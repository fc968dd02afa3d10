"""Grandfather-father-son retention, as restic and borg apply it, with one extra rule: the newest committed
snapshot is never deleted, whatever the policy says, so a mistyped `--keep-last 0` cannot leave nothing to restore.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class Policy:
    keep_last: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0

    def __post_init__(self) -> None:
        for name in ("keep_last", "keep_daily", "keep_weekly", "keep_monthly"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")

    @property
    def horizon_days(self) -> int:
        """How far back (in days) the policy can keep a snapshot; lifecycle rules must not expire sooner."""
        return max(self.keep_daily, self.keep_weekly * 7, self.keep_monthly * 31, 1)


@dataclass
class Decision:
    keep: dict[str, list[str]] = field(default_factory=dict)  # id -> reasons
    remove: list[str] = field(default_factory=list)  # newest first


def decide(snapshots: Iterable[tuple[str, datetime]], policy: Policy) -> Decision:
    """Split committed snapshots (id, time) into kept (with reasons) and removed."""
    ordered = sorted(snapshots, key=lambda s: (s[1], s[0]), reverse=True)
    decision = Decision()
    buckets: dict[str, set[str]] = {"daily": set(), "weekly": set(), "monthly": set()}
    limits = {"daily": policy.keep_daily, "weekly": policy.keep_weekly, "monthly": policy.keep_monthly}
    for index, (sid, when) in enumerate(ordered):
        reasons: list[str] = []
        if index == 0:
            reasons.append("newest")
        if index < policy.keep_last:
            reasons.append("last")
        periods = {
            "daily": when.strftime("%Y-%m-%d"),
            "weekly": "{:04d}-W{:02d}".format(*when.isocalendar()[:2]),
            "monthly": when.strftime("%Y-%m"),
        }
        for kind, period in periods.items():
            seen = buckets[kind]
            if period not in seen and len(seen) < limits[kind]:
                seen.add(period)
                reasons.append(f"{kind} {period}")
        if reasons:
            decision.keep[sid] = reasons
        else:
            decision.remove.append(sid)
    return decision
