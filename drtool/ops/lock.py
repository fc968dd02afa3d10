"""One lock per snapshot destination, kept as an object next to the snapshots.

It lives in object storage (not on a local disk) because the cron job may run on any of several hosts or pods; a
conditional PUT (If-None-Match: *) makes taking it atomic on servers that support it.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from drtool.adapters import s3 as s3a
from drtool.core.lock import LockInfo, stale_reason
from drtool.errors import LockedError

log = logging.getLogger("drtool.lock")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_lock(client: Any, bucket: str, key: str) -> LockInfo | None:
    if s3a.head_or_none(client, bucket, key) is None:
        return None
    try:
        return LockInfo.from_bytes(s3a.get_bytes(client, bucket, key))
    except Exception as exc:
        if "NoSuchKey" in str(exc):
            return None
        raise


def describe_stale(lock: LockInfo, stale_after_s: int) -> str | None:
    return stale_reason(lock, now=datetime.now(UTC), this_host=socket.gethostname(), pid_alive=_pid_alive,
                        stale_after_s=stale_after_s)


@contextmanager
def destination_lock(client: Any, bucket: str, key: str, *, holder: str, stale_after_s: int,
                     break_stale: bool = False) -> Iterator[LockInfo]:
    """Hold the destination's lock for the block; raise LockedError (exit 11) naming the holder when taken.

    With `break_stale` (the operator's explicit --break-stale-lock) a lock judged stale is replaced, with a
    warning naming the previous holder; a live one never is.
    """
    mine = LockInfo.new(holder, socket.gethostname(), os.getpid())
    _acquire(client, bucket, key, mine, stale_after_s=stale_after_s, break_stale=break_stale)
    try:
        yield mine
    finally:
        try:
            current = read_lock(client, bucket, key)
            if current is not None and current.token == mine.token:
                client.delete_object(Bucket=bucket, Key=key)
            else:
                log.warning("the lock %s was removed or replaced while this run held it", key)
        except Exception as exc:  # never hide the run's own outcome behind a release problem
            log.warning("could not release the lock %s: %s", key, exc)


def _acquire(client: Any, bucket: str, key: str, mine: LockInfo, *, stale_after_s: int, break_stale: bool) -> None:
    for _attempt in range(3):
        if s3a.put_if_absent(client, bucket, key, mine.to_bytes()):
            return
        other = read_lock(client, bucket, key)
        if other is None:  # released between our PUT and our read
            continue
        stale = describe_stale(other, stale_after_s)
        if stale and break_stale:
            log.warning("breaking the stale lock held by %s: %s", other.describe(), stale)
            client.delete_object(Bucket=bucket, Key=key)
            continue
        if stale:
            raise LockedError(
                f"a stale lock blocks this run: held by {other.describe()}; {stale}",
                hint="make sure no drtool runs against this destination, then `drtool snapshots unlock` or "
                     f"pass --break-stale-lock (lock object s3://{bucket}/{key})")
        raise LockedError(f"another run holds the lock: {other.describe()}",
                          hint="wait for it to finish; cron runs must not overlap")
    raise LockedError(f"could not take the lock s3://{bucket}/{key}: it keeps changing hands",
                      hint="another run is starting at the same moment; try again")
