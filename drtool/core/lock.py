"""The lock record kept next to the data a run writes, and the rules that decide what may happen to a held lock.

One lock per destination, stored as an object, so two hosts running the same cron job never overlap. A pid means
something only inside one PID namespace of one boot of one kernel, and a host name does not pin down any of them:
containers with host networking, Kubernetes `hostNetwork` pods and compose `hostname:` give several PID namespaces
the same host name. So the lock records the holder's host, boot id and PID namespace, and a held lock is judged
one of four ways (`judge`):

- **dead**: host, boot id and PID namespace all equal this run's, and the pid no longer runs (or now belongs to a
  process that started later). Only then is the holder certainly gone, and the next run takes the lock over by
  itself, loudly (a warning and a JSON event naming the dead holder);
- **unverifiable**: the lock names this host but another boot or another PID namespace (or is an older record
  without those fields): its pid cannot be checked from here, so drtool never assumes it is dead. It reports why;
  the operator passes `--break-stale-lock` or removes the lock once sure;
- **stale**: the lock is older than `snapshot.lock_stale_after`: replaced only with `--break-stale-lock`;
- **held**: anything else (a live holder here, or a young lock of another host): never replaced.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Literal

from drtool.core.terminal import one_line

CANNOT_TELL = "drtool cannot tell whether it still runs"


@dataclass(frozen=True)
class Origin:
    """Where a run executes: a pid is only meaningful for the same host name, kernel boot and PID namespace.

    An empty field means it could not be read (no Linux /proc): then no holder can be proven dead from here.
    """

    host: str
    boot_id: str = ""  # /proc/sys/kernel/random/boot_id
    pid_ns: str = ""  # readlink /proc/self/ns/pid, e.g. "pid:[4026531836]"


@dataclass(frozen=True)
class LockInfo:
    holder: str  # the operation: "snapshot create", "snapshots prune", ...
    host: str
    pid: int
    started_at: str  # ISO 8601, UTC
    token: str  # proves ownership when releasing
    proc_start: str = ""  # the holder's start time in clock ticks since boot (Linux), to tell a reused pid
    boot_id: str = ""  # the holder's kernel boot; "" in records of older drtool versions
    pid_ns: str = ""  # the holder's PID namespace; "" in records of older drtool versions

    @classmethod
    def new(cls, holder: str, host: str, pid: int, now: datetime | None = None, proc_start: str = "",
            boot_id: str = "", pid_ns: str = "") -> LockInfo:
        now = now or datetime.now(UTC)
        return cls(holder=holder, host=host, pid=pid, started_at=now.astimezone(UTC).isoformat(),
                   token=secrets.token_hex(16), proc_start=proc_start, boot_id=boot_id, pid_ns=pid_ns)

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), indent=1).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> LockInfo:
        try:
            raw = json.loads(data)
            return cls(holder=str(raw["holder"]), host=str(raw["host"]), pid=int(raw["pid"]),
                       started_at=str(raw["started_at"]), token=str(raw["token"]),
                       proc_start=str(raw.get("proc_start") or ""), boot_id=str(raw.get("boot_id") or ""),
                       pid_ns=str(raw.get("pid_ns") or ""))
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            return cls(holder="unknown (unreadable lock)", host="unknown", pid=0,
                       started_at=datetime.fromtimestamp(0, UTC).isoformat(), token="")

    def started(self) -> datetime:
        try:
            return datetime.fromisoformat(self.started_at)
        except ValueError:
            return datetime.fromtimestamp(0, UTC)

    def describe(self) -> str:
        """For messages: the fields come from an object anyone with write access could craft, so each is one line."""
        return (f"'{one_line(self.holder)}' on host {one_line(self.host)}, pid {self.pid}, "
                f"since {one_line(self.started_at)}")


def unverifiable_reason(lock: LockInfo, *, here: Origin) -> str | None:
    """Why the holder's pid cannot be checked although the lock names this very host; None when it can be, or
    when the lock names another host (which only its age can make stale, as before)."""
    if lock.host != here.host or lock.pid <= 0:
        return None
    if not here.boot_id or not here.pid_ns:
        return (f"held on host {lock.host}, but this run cannot read its own boot id and PID namespace "
                f"(no Linux /proc): {CANNOT_TELL}")
    if not lock.boot_id or not lock.pid_ns:
        return (f"held on host {lock.host} by a drtool version that did not record its boot id and PID "
                f"namespace: {CANNOT_TELL}")
    if lock.boot_id != here.boot_id:
        return (f"held during another boot (boot id {lock.boot_id}) of host {lock.host}, or on another machine of "
                f"that name: {CANNOT_TELL}")
    if lock.pid_ns != here.pid_ns:
        return f"held from another PID namespace ({lock.pid_ns}) on host {lock.host}: {CANNOT_TELL}"
    return None


def holder_gone(lock: LockInfo, *, here: Origin, holder_alive: Callable[[LockInfo], bool]) -> str | None:
    """Why the lock's holder is certainly dead, or None when that cannot be proven from here.

    Only a holder in this very host, boot and PID namespace can be checked; an unreadable lock (pid 0) never
    counts as provably dead.
    """
    if (lock.host == here.host and lock.pid > 0 and unverifiable_reason(lock, here=here) is None
            and not holder_alive(lock)):
        return f"process {lock.pid} no longer runs on this host"
    return None


Verdict = Literal["dead", "unverifiable", "stale", "held"]


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict  # dead: taken over automatically; unverifiable, stale: only with --break-stale-lock
    reason: str  # "" when held

    @property
    def replaceable(self) -> bool:
        """The operator may replace it (--break-stale-lock, `snapshots unlock` without --force)."""
        return self.verdict != "held"


def judge(lock: LockInfo, *, now: datetime, here: Origin, stale_after_s: int,
          holder_alive: Callable[[LockInfo], bool]) -> Judgement:
    """What may happen to a held lock: see the module docstring for the four verdicts."""
    gone = holder_gone(lock, here=here, holder_alive=holder_alive)
    if gone:
        return Judgement("dead", gone)
    age = (now - lock.started()).total_seconds()
    old = (f"it is {int(age)} s old, more than snapshot.lock_stale_after ({stale_after_s} s)"
           if age > stale_after_s else "")
    unverifiable = unverifiable_reason(lock, here=here)
    if unverifiable:
        return Judgement("unverifiable", f"{unverifiable}; {old}" if old else unverifiable)
    if old:
        return Judgement("stale", old)
    return Judgement("held", "")


def stale_reason(lock: LockInfo, *, now: datetime, here: Origin, stale_after_s: int,
                 holder_alive: Callable[[LockInfo], bool]) -> str | None:
    """Why the lock may be replaced (dead, unverifiable or too old), or None when it must be left alone."""
    judged = judge(lock, now=now, here=here, stale_after_s=stale_after_s, holder_alive=holder_alive)
    return judged.reason if judged.replaceable else None
