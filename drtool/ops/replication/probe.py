"""`drtool replication probe`: measure replication lag end to end with a canary object.

The status API says whether links are up; only a real write says how long data takes to arrive. The canary is
written on the source site, the target is polled until it shows the same version (the put lag), the canary is
deleted on the source and the target is polled until the object is gone (the delete lag). Whatever happens,
including a timeout or Ctrl-C, every version of the canary is removed from both sites, so cron can run this every
few minutes without leaving garbage behind.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from drtool.config import Settings
from drtool.core.metrics import Metric
from drtool.core.ports import ObjectStore
from drtool.core.replication_verdict.verdict import Level
from drtool.errors import Unreachable, Unsupported
from drtool.ops.replication.deadline import Progress
from drtool.ops.replication.sites import Site, site_error, site_store

log = logging.getLogger("drtool.replication")

PROBE_PREFIX = ".drtool/replication-probe/"


@dataclass
class ProbeResult:
    source: str
    target: str
    bucket: str
    key: str
    started_at: str
    put_lag: float | None = None
    delete_lag: float | None = None
    timeout: float = 0.0
    error: str | None = None
    cleaned_up: bool = False
    leftovers: list[str] | None = None  # where the canary could not be checked or removed (site down, refused)

    @property
    def ok(self) -> bool:
        return self.error is None and self.put_lag is not None and self.delete_lag is not None

    def to_dict(self) -> dict[str, Any]:
        return {"event": "result", "ok": self.ok, "source": self.source, "target": self.target,
                "bucket": self.bucket, "key": self.key, "started_at": self.started_at,
                "put_lag_seconds": self.put_lag, "delete_lag_seconds": self.delete_lag,
                "timeout_seconds": self.timeout, "error": self.error, "cleaned_up": self.cleaned_up,
                "leftovers": self.leftovers or []}


def _visible(store: ObjectStore, key: str, etag: str, unreachable: list[str]) -> bool | None:
    """True when the target serves the canary with the same content (ETag); None while it cannot be reached.

    An unreachable target is what a lag probe exists to catch, so it is polled like a slow one until the
    timeout (and named in the result) instead of aborting the probe.
    """
    try:
        head = store.head(key)
    except Unreachable as exc:
        unreachable[:] = [exc.code or type(exc).__name__]
        return None
    unreachable.clear()
    if head is None:
        return False
    return str(head.get("ETag", "")).strip('"') == etag.strip('"')


def _wait(predicate: Any, deadline: float) -> float | None:
    """Poll `predicate` until it holds or the deadline passes; seconds waited, or None on timeout."""
    start = time.monotonic()
    delay = 0.05
    while True:
        if predicate():
            return time.monotonic() - start
        if time.monotonic() >= deadline:
            return None
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 1.5, 1.0)


def _purge(store: ObjectStore, key: str) -> None:
    """Delete every version and delete marker of `key` (or the object itself in an unversioned bucket)."""
    try:
        versions = [v for v in store.list_versions(key) if v.key == key]
    except Unsupported:  # a server without version listings: the object itself is all there is
        versions = []
    for v in versions:
        store.delete(key, version_id=v.version_id if v.version_id and v.version_id != "null" else None)
    if not versions:
        store.delete(key)


def run_probe(settings: Settings, source: Site, target: Site, *, bucket: str, timeout: float,
              prefix: str = PROBE_PREFIX, progress: Progress | None = None) -> ProbeResult:
    """Write, wait, delete, wait, clean up. Errors other than timeouts are raised after the cleanup."""
    progress = progress or Progress()
    steps = [f"canary written on site {source.alias}", f"canary seen on site {target.alias}",
             f"canary deleted on site {source.alias}", f"delete seen on site {target.alias}",
             "canary removed from both sites"]
    progress.plan(steps)
    src = site_store(settings, source, bucket)
    dst = site_store(settings, target, bucket)
    key = f"{prefix}{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:12]}"
    result = ProbeResult(source.alias, target.alias, bucket, key, datetime.now(UTC).isoformat(), timeout=timeout)
    body = f"drtool replication probe {key}\n".encode()
    try:
        try:
            etag = src.put(key, body, content_type="text/plain")
        except Exception as exc:
            raise site_error(exc, source, "writing the canary") from None
        progress.done(steps[0])
        started = time.monotonic()
        deadline = started + timeout
        unreachable: list[str] = []
        why = f" (site {target.alias} could not be reached: {{}})"
        try:
            result.put_lag = _wait(lambda: _visible(dst, key, etag, unreachable) is True, deadline)
        except Exception as exc:
            raise site_error(exc, target, "reading the canary") from None
        if result.put_lag is None:
            result.error = (f"the canary written on site {source.alias} did not appear on site {target.alias} "
                            f"within {timeout:g} s" + (why.format(unreachable[0]) if unreachable else ""))
            return result
        progress.done(steps[1])
        try:
            src.delete(key)
            progress.done(steps[2])
            result.delete_lag = _wait(lambda: _visible(dst, key, etag, unreachable) is False,
                                      time.monotonic() + timeout)
        except Exception as exc:
            raise site_error(exc, source, "deleting the canary") from None
        if result.delete_lag is not None:
            progress.done(steps[3])
        else:
            result.error = (f"the canary deleted on site {source.alias} was still visible on site {target.alias} "
                            f"after {timeout:g} s" + (why.format(unreachable[0]) if unreachable else ""))
        return result
    finally:
        result.cleaned_up, result.leftovers = _cleanup(src, dst, source, target, key)
        if result.cleaned_up:
            progress.done(steps[4])


def _cleanup(src: ObjectStore, dst: ObjectStore, source: Site, target: Site, key: str) -> tuple[bool, list[str]]:
    leftovers: list[str] = []
    for store, site in ((src, source), (dst, target)):
        try:
            _purge(store, key)
        except Exception as exc:  # the target may be the thing that is down; report, never mask the real error
            log.warning("cleanup of canary %s on site %s failed: %s", key, site.alias, exc)
            leftovers.append(f"{site.alias}:{store.url(key)}")
    return not leftovers, leftovers


def probe_verdict(result: ProbeResult, max_lag: float | None) -> tuple[Level, str]:
    """CRITICAL when the canary or its delete did not arrive in time, WARNING when the lag is above `max_lag`
    (a replication-lag SLO), else OK; with why ("" when nothing is wrong)."""
    if not result.ok:
        level = Level.CRITICAL
    elif max_lag is not None and max(result.put_lag or 0, result.delete_lag or 0) > max_lag:
        level = Level.WARNING
    else:
        level = Level.OK
    why = result.error or (f"lag {max(result.put_lag or 0, result.delete_lag or 0):.2f} s above --max-lag {max_lag}"
                           if level == Level.WARNING else "")
    return level, why


def probe_metrics(result: ProbeResult) -> list[Metric]:
    """Prometheus gauges beyond the common four (drtool.cli.app): the put and delete lag (NaN: not seen)."""
    labels = {"source": result.source, "target": result.target}
    return [
        Metric("drtool_replication_probe_put_lag_seconds", "Seconds until the canary appeared on the target "
               "(NaN: not seen before the timeout)", result.put_lag if result.put_lag is not None else float("nan"),
               labels),
        Metric("drtool_replication_probe_delete_lag_seconds", "Seconds until the delete reached the target (NaN: "
               "not seen)", result.delete_lag if result.delete_lag is not None else float("nan"), labels),
    ]
