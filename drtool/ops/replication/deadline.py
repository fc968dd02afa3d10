"""`--deadline` for the replication commands: one wall-clock limit for the whole command.

Cron runs `replication status` every few minutes; a site that accepts connections and then freezes (a stopped
VM, a full disk, a SIGSTOPped process) must not pile up runs that never end. Per-request timeouts and retries
add up to far more than anyone expects, so the command itself runs in a worker thread and the main thread waits
at most the deadline. The work records what it has finished in a `Progress`, so the error at the deadline says
what was checked and what was not. Request timeouts are also capped (`capped_timeout`) so that the abandoned
worker does not linger.
"""

from __future__ import annotations

import dataclasses
import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

from drtool.config import Settings
from drtool.errors import DrtoolError, UsageError

__all__ = ["DEFAULT_DEADLINES", "DeadlineExceeded", "Progress", "capped_timeout", "deadline_seconds",
           "parse_duration", "run_with_deadline", "within_deadline"]

T = TypeVar("T")

# Defaults for cron (docs/replication.md): status runs every few minutes, so it must end well before the next run;
# probe waits up to probe_timeout twice (put, then delete) plus clean-up; verify lists whole buckets.
DEFAULT_DEADLINES = {"status": 120.0, "verify": 6 * 3600.0}


class DeadlineExceeded(DrtoolError):
    """The command ran out of its --deadline (exit 1): the finding is 'unknown', not 'bad'."""


def parse_duration(text: str) -> float:
    """'90', '90s', '5m', '1h30m', '1.5h' -> seconds; '0' or 'none' -> 0 (no deadline)."""
    value = text.strip().lower()
    if value in ("0", "none", "off"):
        return 0.0
    parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?", value)
    if not value or parts is None or not any(parts.groups()):
        raise UsageError(f"invalid duration '{text}'", hint="e.g. 90s, 5m, 1h30m, or 0 for none")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in parts.groups())
    return hours * 3600 + minutes * 60 + seconds


def capped_timeout(timeout: float, deadline: float) -> float:
    """A per-request timeout that leaves a few tries inside the deadline (at least 1 s)."""
    return timeout if deadline <= 0 else max(1.0, min(timeout, deadline / 3))


def deadline_seconds(value: str | None, command: str, fallback: float = 0.0) -> float:
    """--deadline as given, else the command's default (DEFAULT_DEADLINES), else `fallback`; 0: none."""
    if value is not None:
        return parse_duration(value)
    return DEFAULT_DEADLINES.get(command, fallback)


def within_deadline(settings: Settings, deadline: float) -> Settings:
    """Settings whose per-request timeout fits a few tries inside the deadline."""
    rep = settings.replication
    timeout = max(1, int(capped_timeout(float(rep.timeout), deadline)))
    return dataclasses.replace(settings, replication=dataclasses.replace(rep, timeout=timeout))


class Progress:
    """What a command has finished so far, shared between the worker and the deadline watcher."""

    def __init__(self, planned: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._planned: list[str] = list(planned)
        self._done: list[str] = []

    def plan(self, items: Iterable[str]) -> None:
        with self._lock:
            self._planned.extend(i for i in items if i not in self._planned)

    def done(self, item: str) -> None:
        with self._lock:
            if item not in self._done:
                self._done.append(item)
            if item not in self._planned:
                self._planned.append(item)

    def summary(self) -> tuple[list[str], list[str]]:
        with self._lock:
            return list(self._done), [p for p in self._planned if p not in self._done]


def run_with_deadline(work: Callable[[], T], seconds: float, progress: Progress, what: str) -> T:
    """Run `work`; after `seconds` (0: no limit) raise DeadlineExceeded naming what was and was not checked."""
    if seconds <= 0:
        return work()
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["result"] = work()
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    started = time.monotonic()
    worker = threading.Thread(target=target, name=f"drtool {what}", daemon=True)
    worker.start()
    worker.join(max(0.0, seconds - (time.monotonic() - started)))
    if worker.is_alive():
        done, todo = progress.summary()
        raise DeadlineExceeded(
            f"{what} stopped at its deadline of {seconds:g} s; checked: {', '.join(done) or 'nothing'}; "
            f"not checked: {', '.join(todo) or 'the rest'}",
            hint="a site that accepts connections but does not answer does this; check the sites named as not "
                 "checked, or raise --deadline")
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["result"]  # type: ignore[return-value]
