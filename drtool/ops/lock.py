"""Run locks kept as objects in object storage: one per snapshot destination, rebuild collection, export bucket or
restore target.

They live in object storage (not on a local disk) because the cron job may run on any of several hosts or pods.
Taking a free lock is a conditional PUT (If-None-Match: *); taking over the lock of a dead run is a PUT with
If-Match on the ETag that was judged dead, so when two runs find the same dead lock exactly one of them gets it
and the other sees the winner's live lock (exit 11). Servers without conditional writes fall back to
check-then-write, which leaves a narrow race (documented in docs/snapshots.md).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from drtool import wiring
from drtool.core.events import Emit
from drtool.core.lock import Judgement, LockInfo, Origin, judge
from drtool.core.ports import ObjectStore
from drtool.errors import AuthError, DrtoolError, LockedError

log = logging.getLogger("drtool.lock")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# A lock record is a few hundred bytes; a bigger object under the lock key is not ours and is never read whole.
MAX_LOCK_BYTES = 64 * 1024


def _proc_start(pid: int | str) -> str:
    """Start time of a process in clock ticks since boot (field 22 of /proc/PID/stat); "" when unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = stat.rsplit(") ", 1)[-1].split()
    return fields[19] if len(fields) > 19 else ""


def _boot_id() -> str:
    """This kernel's boot id: a pid and a process start time only mean something within one boot."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _pid_ns() -> str:
    """This process's PID namespace ("pid:[4026531836]"), or "" when it cannot be trusted.

    The pid checks read /proc/PID/stat, which only describes our pids if /proc was mounted for our own PID
    namespace (`unshare --pid` without --mount-proc keeps the parent's): then /proc/self does not name our pid,
    and no holder is judged dead from here.
    """
    try:
        if os.readlink("/proc/self") != str(os.getpid()):
            return ""
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def here() -> Origin:
    """Where this run executes: host name, boot id and PID namespace, recorded in its locks and compared with
    a holder's before its pid is believed."""
    return Origin(socket.gethostname(), _boot_id(), _pid_ns())


def _holder_alive(lock: LockInfo) -> bool:
    """The lock's process still runs: its pid exists and, when recorded, it is the same process (not a reuse)."""
    if not _pid_alive(lock.pid):
        return False
    if lock.proc_start:
        now = _proc_start(lock.pid)
        if now and now != lock.proc_start:
            return False
    return True


def read_lock(store: ObjectStore, key: str) -> LockInfo | None:
    """The lock record at `key`, None when no run holds it."""
    found = _read_with_etag(store, key)
    return found[0] if found else None


def _read_with_etag(store: ObjectStore, key: str) -> tuple[LockInfo, str] | None:
    """The record and the ETag of the same GET: a takeover replaces exactly the version that was judged."""
    found = store.peek(key, MAX_LOCK_BYTES)
    if found is None:
        return None
    data, etag = found
    return LockInfo.from_bytes(data if len(data) <= MAX_LOCK_BYTES else b""), etag


def judge_lock(lock: LockInfo, stale_after_s: int, origin: Origin | None = None) -> Judgement:
    """The verdict on a held lock from this run's place (dead, unverifiable, stale or held)."""
    return judge(lock, now=datetime.now(UTC), here=origin or here(), stale_after_s=stale_after_s,
                 holder_alive=_holder_alive)


def describe_stale(lock: LockInfo, stale_after_s: int) -> str | None:
    """Why the operator may remove the lock (dead, unverifiable or too old holder), None when it looks live."""
    judged = judge_lock(lock, stale_after_s)
    return judged.reason if judged.replaceable else None


def destination_lock(client: Any, bucket: str, key: str, *, holder: str, stale_after_s: int,
                     break_stale: bool = False, emit: Emit | None = None) -> Any:
    """`object_lock` on a whole key of a snapshot destination's bucket (the client its Destination made)."""
    return object_lock(wiring.bucket_over(client, bucket), key, holder=holder, stale_after_s=stale_after_s,
                       break_stale=break_stale, emit=emit)


@contextmanager
def object_lock(store: ObjectStore, key: str, *, holder: str, stale_after_s: int, break_stale: bool = False,
                emit: Emit | None = None) -> Iterator[LockInfo]:
    """Hold the lock object for the block; raise LockedError (exit 11) naming the holder when it is taken.

    A lock whose holder is provably dead (same host, boot and PID namespace, pid gone) is taken over
    automatically, with a warning and a `lock_taken_over` event naming it. One whose holder cannot be checked
    (same host name but another boot or PID namespace, e.g. a hostNetwork pod) or that is older than
    `stale_after_s` is replaced only with `break_stale` (the operator's explicit --break-stale-lock); a live one,
    or a young one of another host, never is.
    """
    origin = here()
    mine = LockInfo.new(holder, origin.host, os.getpid(), proc_start=_proc_start("self"), boot_id=origin.boot_id,
                        pid_ns=origin.pid_ns)
    try:
        _acquire(store, key, mine, origin, stale_after_s=stale_after_s, break_stale=break_stale, emit=emit)
    except LockedError:
        raise
    except DrtoolError as error:  # e.g. a policy without s3:PutObject on the lock: exit 12 naming it
        error.message = f"taking the lock: {error.message}"
        raise
    try:
        yield mine
    except BaseException:
        _release(store, key, mine, strict=False)
        raise
    _release(store, key, mine, strict=True)


def _release(store: ObjectStore, key: str, mine: LockInfo, *, strict: bool) -> None:
    """Delete our lock. After a successful run a refused release is an error (exit 12): the lock would block
    every later run, so cron must hear about it now; after a failed run it never hides the run's own error."""
    try:
        current = read_lock(store, key)
        if current is not None and current.token == mine.token:
            store.delete(key)
        else:
            log.warning("the lock %s was removed or replaced while this run held it", key)
    except AuthError as error:
        if strict:
            error.message = f"the run finished, but releasing its lock: {error.message}"
            error.hint = f"{error.hint}; until then the lock blocks the next run (remove it by hand)"
            raise
        log.warning("could not release the lock %s: %s", key, error)
    except Exception as exc:  # never hide the run's own outcome behind a release problem
        log.warning("could not release the lock %s: %s", key, exc)


def _acquire(store: ObjectStore, key: str, mine: LockInfo, origin: Origin, *, stale_after_s: int,
             break_stale: bool, emit: Emit | None) -> None:
    url = store.url(key)
    for _attempt in range(4):
        if store.put_if_absent(key, mine.to_bytes()):
            return
        found = _read_with_etag(store, key)
        if found is None:  # released between our PUT and our read
            continue
        other, etag = found
        judged = judge_lock(other, stale_after_s, origin)
        gone = judged.verdict == "dead"
        stale = judged.reason
        if gone or (judged.replaceable and break_stale):
            if not store.replace_if_match(key, etag, mine.to_bytes()):
                continue  # another run took it (or it was released) first: look again
            check = read_lock(store, key)
            if check is None or check.token != mine.token:  # a server that ignored If-Match: we lost
                continue
            how = "taking over" if gone else "breaking"
            log.warning("%s the stale lock %s held by %s: %s", how, url, other.describe(), stale,
                        extra={"fields": {"event": "lock.taken_over", "lock": url}})
            if emit is not None:
                previous = {k: v for k, v in asdict(other).items() if k != "token"}
                emit({"event": "lock.taken_over", "lock": url, "previous_holder": previous, "reason": stale,
                      "automatic": bool(gone)})
            return
        if judged.verdict == "unverifiable":
            raise LockedError(
                f"the lock {url} is held by {other.describe()}, a holder drtool cannot check (unverifiable): "
                f"{stale}",
                hint=f"that run may still go on in another container, pod or boot that uses the host name "
                     f"{other.host}; once sure it is gone, pass --break-stale-lock or remove the lock object {url} "
                     "(`drtool snapshots unlock` for the snapshot lock)")
        if stale:
            raise LockedError(
                f"a stale lock blocks this run: held by {other.describe()}; {stale}",
                hint="make sure no drtool runs against this destination (on that host), then pass "
                     f"--break-stale-lock or remove the lock object {url} (`drtool snapshots unlock` for the "
                     "snapshot lock)")
        raise LockedError(f"another run holds the lock {url}: {other.describe()}",
                          hint="wait for it to finish; runs of the same command against the same target must "
                               "not overlap")
    raise LockedError(f"could not take the lock {url}: it keeps changing hands",
                      hint="another run is starting at the same moment; try again")


def store_lock(store: Any, key: str, *, holder: str, stale_after_s: int, break_stale: bool = False,
               emit: Emit | None = None) -> Any:
    """`destination_lock` on a BucketStore key (below its s3.key_prefix): the run lock of rebuild-index and
    export-chunks, kept in the bucket they write. Routed through destination_lock so every run lock has one
    entry point (tests/reliability/test_lock_namespaces.py holds any command's lock by wrapping it)."""
    return destination_lock(store.client, store.bucket, store.prefix + key, holder=holder,
                            stale_after_s=stale_after_s, break_stale=break_stale, emit=emit)
