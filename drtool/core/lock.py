"""The lock record kept next to the snapshots, and the rule that decides whether a lock is stale.

One lock per destination, stored as an object, so two hosts running the same cron job never overlap. A stale lock
(its process is gone, or it is older than the configured limit) is reported, never taken over silently: the
operator removes it with `drtool snapshots unlock` once sure nothing runs.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime


@dataclass(frozen=True)
class LockInfo:
    holder: str  # the operation: "snapshot create", "snapshots prune", ...
    host: str
    pid: int
    started_at: str  # ISO 8601, UTC
    token: str  # proves ownership when releasing

    @classmethod
    def new(cls, holder: str, host: str, pid: int, now: datetime | None = None) -> LockInfo:
        now = now or datetime.now(UTC)
        return cls(holder=holder, host=host, pid=pid, started_at=now.astimezone(UTC).isoformat(),
                   token=secrets.token_hex(16))

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), indent=1).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> LockInfo:
        try:
            raw = json.loads(data)
            return cls(holder=str(raw["holder"]), host=str(raw["host"]), pid=int(raw["pid"]),
                       started_at=str(raw["started_at"]), token=str(raw["token"]))
        except (ValueError, KeyError, TypeError):
            return cls(holder="unknown (unreadable lock)", host="unknown", pid=0,
                       started_at=datetime.fromtimestamp(0, UTC).isoformat(), token="")

    def started(self) -> datetime:
        try:
            return datetime.fromisoformat(self.started_at)
        except ValueError:
            return datetime.fromtimestamp(0, UTC)

    def describe(self) -> str:
        return f"'{self.holder}' on host {self.host}, pid {self.pid}, since {self.started_at}"


def stale_reason(lock: LockInfo, *, now: datetime, this_host: str, pid_alive: Callable[[int], bool],
                 stale_after_s: int) -> str | None:
    """Why the lock is stale, or None when its holder may still be running."""
    if lock.host == this_host and lock.pid > 0 and not pid_alive(lock.pid):
        return f"process {lock.pid} no longer runs on this host"
    age = (now - lock.started()).total_seconds()
    if age > stale_after_s:
        return f"it is {int(age)} s old, more than snapshot.lock_stale_after ({stale_after_s} s)"
    return None
