"""S3 Object Lock retention of snapshot artifacts: what `--retain-until` means and when a snapshot is deletable.

Pure logic (no SDK): the adapter turns a `Retention` into request headers, ops decide with `locked_until`.
Why a retention at all: a snapshot bucket whose writer credential leaks (ransomware, a careless script) can be
emptied by that credential; a locked object version cannot be deleted or overwritten by anyone until its date.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

MODES = ("compliance", "governance")
MAX_DAYS = 36500  # a typo like 30000d in compliance mode would lock storage for a lifetime: refuse it

_DURATION = re.compile(r"^(?P<n>[0-9]+)\s*(?P<unit>[hdw])$")
_UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}


@dataclass(frozen=True)
class Retention:
    """One retention for every artifact of a snapshot: mode as S3 spells it, and an aware UTC date."""

    mode: str  # "COMPLIANCE" or "GOVERNANCE"
    until: datetime

    @classmethod
    def of(cls, mode: str, until: datetime) -> Retention:
        if mode.lower() not in MODES:
            raise ValueError(f"object lock mode must be one of {', '.join(MODES)}, not {mode!r}")
        return cls(mode=mode.upper(), until=until.astimezone(UTC).replace(microsecond=0))

    def to_meta(self) -> dict[str, Any]:
        """What meta.json records, so `snapshots list` and `prune` know without asking the server."""
        return {"mode": self.mode, "retain_until": self.until.isoformat()}


def parse_retain_until(text: str, now: datetime) -> datetime:
    """`30d`, `12h`, `2w` from now, or a date (`2027-01-31`, midnight UTC) or ISO date-time; must be in the future.

    Raises ValueError with a message meant for the operator.
    """
    value = text.strip()
    match = _DURATION.match(value.lower())
    if match:
        until = now + int(match["n"]) * _UNITS[match["unit"]]
    else:
        try:
            until = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"--retain-until {text!r}: expected a duration (30d, 12h, 2w) or a date "
                             "(2027-01-31, 2027-01-31T12:00:00Z)") from None
        if until.tzinfo is None:
            until = until.replace(tzinfo=UTC)
    if until <= now:
        raise ValueError(f"--retain-until {text!r} is not in the future")
    if until - now > timedelta(days=MAX_DAYS):
        raise ValueError(f"--retain-until {text!r} is more than {MAX_DAYS} days away")
    return until.astimezone(UTC)


def retention_for(mode: str, *, retain_until: str | None, days: int, now: datetime) -> Retention | None:
    """The retention a `snapshot create` asks for: the flag wins over snapshot.object_lock_days; None when off."""
    if retain_until:
        return Retention.of(mode, parse_retain_until(retain_until, now))
    if days > 0:
        if days > MAX_DAYS:
            raise ValueError(f"snapshot.object_lock_days {days} is more than {MAX_DAYS}")
        return Retention.of(mode, now + timedelta(days=days))
    return None


def recorded_until(meta: dict[str, Any]) -> datetime | None:
    """The retain-until date meta.json recorded (None when absent or unreadable)."""
    record = meta.get("retention")
    if not isinstance(record, dict) or not isinstance(record.get("retain_until"), str):
        return None
    try:
        until = datetime.fromisoformat(record["retain_until"])
    except ValueError:
        return None
    return until if until.tzinfo else until.replace(tzinfo=UTC)


def locked_until(dates: Iterable[datetime | None], *, legal_hold: bool, now: datetime) -> datetime | None:
    """The latest retention still in force among a folder's versions; `datetime.max` (UTC) under a legal hold.

    None means nothing in the folder is locked and it may be deleted.
    """
    if legal_hold:
        return datetime.max.replace(tzinfo=UTC)
    live = [d for d in dates if d is not None and d > now]
    return max(live) if live else None
