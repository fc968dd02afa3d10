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

from drtool.adapters import s3 as s3a
from drtool.core.events import Emit
from drtool.core.lock import Judgement, LockInfo, Origin, judge
from drtool.errors import AuthError, LockedError

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


def read_lock(client: Any, bucket: str, key: str) -> LockInfo | None:
    found = _read_with_etag(client, bucket, key)
    return found[0] if found else None


def _read_with_etag(client: Any, bucket: str, key: str) -> tuple[LockInfo, str] | None:
    import botocore.exceptions as bex

    try:
        response = client.get_object(Bucket=bucket, Key=key)
    except bex.ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("NoSuchKey", "404", "NotFound") or exc.response.get("ResponseMetadata", {}).get(
                "HTTPStatusCode") == 404:
            return None
        raise
    data = response["Body"].read(MAX_LOCK_BYTES + 1)
    response["Body"].close()
    return LockInfo.from_bytes(data if len(data) <= MAX_LOCK_BYTES else b""), str(response.get("ETag", ""))


def judge_lock(lock: LockInfo, stale_after_s: int, origin: Origin | None = None) -> Judgement:
    """The verdict on a held lock from this run's place (dead, unverifiable, stale or held)."""
    return judge(lock, now=datetime.now(UTC), here=origin or here(), stale_after_s=stale_after_s,
                 holder_alive=_holder_alive)


def describe_stale(lock: LockInfo, stale_after_s: int) -> str | None:
    """Why the operator may remove the lock (dead, unverifiable or too old holder), None when it looks live."""
    judged = judge_lock(lock, stale_after_s)
    return judged.reason if judged.replaceable else None


def _replace_if_match(client: Any, bucket: str, key: str, etag: str, body: bytes) -> bool:
    """Overwrite the lock only if it is still the version judged dead; False when someone else changed it first."""
    import botocore.exceptions as bex

    try:
        client.put_object(Bucket=bucket, Key=key, Body=body, IfMatch=etag)
        return True
    except bex.ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey") or status in (404, 409, 412):
            return False
        if code not in ("NotImplemented", "501") and status != 501:
            raise
    head = s3a.head_or_none(client, bucket, key)  # no conditional writes: check, then write (narrow race)
    if head is None or str(head.get("ETag", "")) != etag:
        return False
    client.put_object(Bucket=bucket, Key=key, Body=body)
    return True


@contextmanager
def destination_lock(client: Any, bucket: str, key: str, *, holder: str, stale_after_s: int,
                     break_stale: bool = False, emit: Emit | None = None) -> Iterator[LockInfo]:
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
    import botocore.exceptions as bex

    try:
        _acquire(client, bucket, key, mine, origin, stale_after_s=stale_after_s, break_stale=break_stale, emit=emit)
    except bex.ClientError as exc:  # e.g. a policy without s3:PutObject on the lock: exit 12 naming it
        raise s3a.translate_error(exc, what=f"taking the lock s3://{bucket}/{key}",
                                  endpoint=client.meta.endpoint_url) from None
    try:
        yield mine
    except BaseException:
        _release(client, bucket, key, mine, strict=False)
        raise
    _release(client, bucket, key, mine, strict=True)


def _release(client: Any, bucket: str, key: str, mine: LockInfo, *, strict: bool) -> None:
    """Delete our lock. After a successful run a refused release is an error (exit 12): the lock would block
    every later run, so cron must hear about it now; after a failed run it never hides the run's own error."""
    import botocore.exceptions as bex

    try:
        current = read_lock(client, bucket, key)
        if current is not None and current.token == mine.token:
            client.delete_object(Bucket=bucket, Key=key)
        else:
            log.warning("the lock %s was removed or replaced while this run held it", key)
    except bex.ClientError as exc:
        error = s3a.translate_error(exc, what=f"the run finished, but releasing its lock s3://{bucket}/{key}",
                                    endpoint=client.meta.endpoint_url)
        if strict and isinstance(error, AuthError):
            error.hint = f"{error.hint}; until then the lock blocks the next run (remove it by hand)"
            raise error from None
        log.warning("could not release the lock %s: %s", key, exc)
    except Exception as exc:  # never hide the run's own outcome behind a release problem
        log.warning("could not release the lock %s: %s", key, exc)


def _acquire(client: Any, bucket: str, key: str, mine: LockInfo, origin: Origin, *, stale_after_s: int,
             break_stale: bool, emit: Emit | None) -> None:
    url = f"s3://{bucket}/{key}"
    for _attempt in range(4):
        if s3a.put_if_absent(client, bucket, key, mine.to_bytes()):
            return
        found = _read_with_etag(client, bucket, key)
        if found is None:  # released between our PUT and our read
            continue
        other, etag = found
        judged = judge_lock(other, stale_after_s, origin)
        gone = judged.verdict == "dead"
        stale = judged.reason
        if gone or (judged.replaceable and break_stale):
            if not _replace_if_match(client, bucket, key, etag, mine.to_bytes()):
                continue  # another run took it (or it was released) first: look again
            check = read_lock(client, bucket, key)
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
    export-chunks, kept in the bucket they write."""
    return destination_lock(store.client, store.bucket, store.prefix + key, holder=holder,
                            stale_after_s=stale_after_s, break_stale=break_stale, emit=emit)
