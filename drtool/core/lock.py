"""The lock record kept next to the data a run writes, and the rules that decide what may happen to a held lock.

One lock per destination, stored as an object, so two hosts running the same cron job never overlap. Two kinds of
"stale" are told apart because only one of them can be proven:

- the holder is a process on THIS host that no longer runs (pid gone, or the pid now belongs to a process that
  started later): the run that wrote the lock is certainly dead, so the next run takes the lock over by itself,
  loudly (a warning and a JSON event naming the dead holder);
- the holder is on another host, or the lock is merely older than `snapshot.lock_stale_after`: drtool cannot know
  whether it still runs, so it only reports it; the operator passes `--break-stale-lock` or runs
  `drtool snapshots unlock` once sure.
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
    proc_start: str = ""  # the holder's start time in clock ticks since boot (Linux), to tell a reused pid

    @classmethod
    def new(cls, holder: str, host: str, pid: int, now: datetime | None = None, proc_start: str = "") -> LockInfo:
        now = now or datetime.now(UTC)
        return cls(holder=holder, host=host, pid=pid, started_at=now.astimezone(UTC).isoformat(),
                   token=secrets.token_hex(16), proc_start=proc_start)

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), indent=1).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> LockInfo:
        try:
            raw = json.loads(data)
            return cls(holder=str(raw["holder"]), host=str(raw["host"]), pid=int(raw["pid"]),
                       started_at=str(raw["started_at"]), token=str(raw["token"]),
                       proc_start=str(raw.get("proc_start") or ""))
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            return cls(holder="unknown (unreadable lock)", host="unknown", pid=0,
                       started_at=datetime.fromtimestamp(0, UTC).isoformat(), token="")

    def started(self) -> datetime:
        try:
            return datetime.fromisoformat(self.started_at)
        except ValueError:
            return datetime.fromtimestamp(0, UTC)

    def describe(self) -> str:
        return f"'{self.holder}' on host {self.host}, pid {self.pid}, since {self.started_at}"


def holder_gone(lock: LockInfo, *, this_host: str, holder_alive: Callable[[LockInfo], bool]) -> str | None:
    """Why the lock's holder is certainly dead, or None when that cannot be proven from this host.

    Only a holder on this very host can be checked; an unreadable lock (pid 0) never counts as provably dead.
    """
    if lock.host == this_host and lock.pid > 0 and not holder_alive(lock):
        return f"process {lock.pid} no longer runs on this host"
    return None


def stale_reason(lock: LockInfo, *, now: datetime, this_host: str, pid_alive: Callable[[int], bool],
                 stale_after_s: int, holder_alive: Callable[[LockInfo], bool] | None = None) -> str | None:
    """Why the lock is stale (dead holder on this host, or older than the limit), or None when it may be live."""
    gone = holder_gone(lock, this_host=this_host, holder_alive=holder_alive or (lambda lk: pid_alive(lk.pid)))
    if gone:
        return gone
    age = (now - lock.started()).total_seconds()
    if age > stale_after_s:
        return f"it is {int(age)} s old, more than snapshot.lock_stale_after ({stale_after_s} s)"
    return None
