"""Progress of a long command on stderr: a rich bar on a terminal, one log line every DRTOOL_PROGRESS_SECONDS off one.

The operations report units of work on the channel they already use for events, `emit`, as a `progress` event:

    emit({"event": "progress", "task": "restore objects", "unit": "objects", "done": 120, "total": 500})

`task` and `unit` are words of the code; `done` is absolute (so a repeated or reordered report is harmless);
`total` is None when unknown (then counts and rate, no ETA); `also` (optional) maps secondary counters to values
(`{"segments": 5120}`). `App.emit` hands such an event to the run's display and never writes it on stdout, not
even under --json: stdout is for results. A display is created only for the long commands (heartbeat.py) and not
with -q.

- `Meter`: the pure counting of one task (rate since the task began, ETA when the total is known), unit-tested.
- `LogDisplay`: off a terminal (cron, Kubernetes, journald) a `progress` log record every DRTOOL_PROGRESS_SECONDS
  (30 by default), also when no unit was reported yet (a life sign during a pg_dump), plus a last line when a task
  that lasted at least that long ends, so the final count is in the log. JSON log lines stay JSON (drtool.log).
- `RichDisplay`: on a terminal, a bar per task with counts, rate and ETA; life-sign lines while no bar is shown.

rebuild-index drives the same displays through its own protocol (drtool/cli/rebuild_cmd.py).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from drtool.core.terminal import one_line
from drtool.log import LOGGER_NAME

PROGRESS_EVENT = "progress"
PROGRESS_ENV = "DRTOOL_PROGRESS_SECONDS"
Clock = Callable[[], float]


def interval_seconds() -> float:
    """DRTOOL_PROGRESS_SECONDS (default 30); 0 logs every report (tests), a bad value falls back to the default."""
    try:
        return max(0.0, float(os.environ.get(PROGRESS_ENV, "30")))
    except ValueError:
        return 30.0


def human_seconds(seconds: float) -> str:
    """A short duration for an ETA: `42 s`, `7 min`, `2 h 05 min`."""
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 120:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


@dataclass
class Meter:
    """One task's counts: units done of a total (None: unknown), the rate since the task began, the ETA.

    `approximate`: the total is an estimate (rebuild-index counts chunks against the bytes read so far). `rate`
    given to `update` replaces the computed one (a resumed rebuild rates only what this run inserted)."""

    task: str = ""
    unit: str = ""
    total: int | None = None
    done: int = 0
    also: dict[str, int] = field(default_factory=dict)
    started: float = 0.0
    approximate: bool = False
    rate_override: float | None = None

    def begin(self, task: str, unit: str, now: float) -> None:
        self.task, self.unit, self.started = task, unit, now
        self.total, self.done, self.also, self.approximate, self.rate_override = None, 0, {}, False, None

    def update(self, done: int, *, total: int | None = None, also: Mapping[str, int] | None = None,
               approximate: bool = False, rate: float | None = None) -> None:
        """The latest absolute count (the rate and ETA are computed when read, against the clock then)."""
        self.done, self.total, self.approximate, self.rate_override = max(0, done), total, approximate, rate
        if also:
            self.also.update(also)

    def rate(self, now: float) -> float:
        if self.rate_override is not None:
            return self.rate_override
        return self.done / max(1e-6, now - self.started)

    def eta_seconds(self, now: float) -> float | None:
        rate = self.rate(now)
        if self.total is None or rate <= 0:
            return None
        return max(0.0, (self.total - self.done) / rate)

    def counts(self, *, final: bool = False) -> str:
        """`120/500 objects` (`/~500` for an estimate; the bare count when the total is unknown or it ended)."""
        of = ""
        if self.total is not None and not (final and self.approximate):
            of = f"/{'~' if self.approximate else ''}{self.total}"
        return f"{self.done}{of} {one_line(self.unit)}"

    def summary(self, now: float, *, final: bool = False) -> str:
        """`120/500 objects, 40/s, ~10 s left; pinned 3`: counts, rate, ETA when known, secondary counters."""
        text = f"{self.counts(final=final)}, {self.rate(now):.0f}/s"
        eta = None if final else self.eta_seconds(now)
        if eta is not None:
            text += f", ~{human_seconds(eta)} left"
        if self.also:
            text += "; " + ", ".join(f"{one_line(k)} {v}" for k, v in self.also.items())
        return text

    def fields(self, now: float) -> dict[str, Any]:
        """The numbers of a `progress` log record (docs/json.md)."""
        eta = self.eta_seconds(now)
        return {"task": self.task, "unit": self.unit, "done": self.done, "total": self.total,
                "rate_per_second": round(self.rate(now), 1), "eta_seconds": None if eta is None else round(eta, 1),
                **({"also": dict(self.also)} if self.also else {})}


def _int_or_none(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


class LogDisplay:
    """Off a terminal: a `progress` record every `every` seconds, bypassing the logger's level (WARNING without -v)
    on purpose, as the -q reason line does: life signs are the point; -q is honoured where the display is chosen."""

    event = PROGRESS_EVENT

    def __init__(self, command: str, every: float | None = None, *, clock: Clock = time.monotonic,
                 logger: str = f"{LOGGER_NAME}.progress", beat: bool = True) -> None:
        self.command = command
        self.every = interval_seconds() if every is None else max(0.0, every)
        self.clock = clock
        self.started = clock()
        self.meter = Meter()
        self.events: Counter[str] = Counter()
        self._log = logging.getLogger(logger)
        self._lock = threading.RLock()
        self._last = self.started
        self._logged_task = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if beat:
            self._thread = threading.Thread(target=self._beat, name="drtool-progress", daemon=True)
            self._thread.start()

    # --- what the run reports ---------------------------------------------------------------------------------

    def observe(self, event: Mapping[str, Any]) -> None:
        """Every event the run emits (App.emit): a `progress` event moves the count, the others are counted by name
        for the life sign of a command that reports no units yet."""
        name = str(event.get("event", ""))
        if name == PROGRESS_EVENT:
            also = event.get("also")
            self.update(str(event.get("task", "")), str(event.get("unit", "")), _int_or_none(event.get("done")) or 0,
                        total=_int_or_none(event.get("total")),
                        also={str(k): int(v) for k, v in also.items()} if isinstance(also, Mapping) else None)
        elif name and not name.endswith(".started"):
            with self._lock:
                self.events[name.split(".", 1)[-1]] += 1

    def update(self, task: str, unit: str, done: int, *, total: int | None = None,
               also: Mapping[str, int] | None = None, approximate: bool = False, rate: float | None = None) -> None:
        with self._lock:
            now = self.clock()
            if (task, unit) != (self.meter.task, self.meter.unit):
                if self.meter.task:
                    self._finish_task(now)
                self.meter.begin(task, unit, now)
                self._logged_task = False
                self._begun(now)
            self.meter.update(done, total=total, also=also, approximate=approximate, rate=rate)
            self._updated(now)

    def end_task(self) -> None:
        """The current task is over (its last line, if due, says so); the next `update` begins another."""
        with self._lock:
            if self.meter.task:
                self._finish_task(self.clock())
                self.meter = Meter()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)
        with self._lock:
            self.end_task()
            self._stopped()

    # --- hooks a display overrides -----------------------------------------------------------------------------

    def _begun(self, now: float) -> None:
        pass

    def _updated(self, now: float) -> None:
        if now - self._last >= self.every:
            self._line(now)

    def _finish_task(self, now: float) -> None:
        """The last line of a task, when lines were logged for it or it ran for a whole interval: the final count
        is then in the log. A short task of a short run adds nothing (cron mails stay empty)."""
        if self._logged_task or now - self.meter.started >= self.every:
            self._line(now, final=True)

    def _stopped(self) -> None:
        pass

    def _quiet_now(self) -> bool:
        """True while another display (the rich bar) shows the progress: no life-sign line then."""
        return False

    # --- the line ----------------------------------------------------------------------------------------------

    def record(self, now: float, *, final: bool = False) -> tuple[str, dict[str, Any]]:
        """The message and the fields of one progress record."""
        elapsed = now - self.started
        head = f"{self.command}: running {elapsed:.0f} s; "
        fields: dict[str, Any] = {"event": self.event, "command": self.command, "elapsed_seconds": round(elapsed, 1)}
        if self.meter.task:
            text = head + f"{one_line(self.meter.task)}: {self.meter.summary(now, final=final)}" + (
                " (done)" if final else "")
            fields.update(self.meter.fields(now), final=final)
        else:
            counts = dict(self.events)
            text = head + (", ".join(f"{name.replace('_', ' ')} x{n}" for name, n in sorted(counts.items()))
                           or "working")
            fields.update(done=None, total=None)
        fields["events"] = dict(self.events)
        return text, fields

    def _line(self, now: float, *, final: bool = False) -> None:
        text, fields = self.record(now, final=final)
        self._last = now
        self._logged_task = bool(self.meter.task)
        self._log.handle(self._log.makeRecord(self._log.name, logging.INFO, __file__, 0, "%s", (text,), None,
                                              extra={"fields": fields}))

    def _beat(self) -> None:
        while not self._stop.wait(max(0.05, self.every)):
            with self._lock:
                now = self.clock()
                if now - self._last >= self.every and not self._quiet_now():
                    self._line(now)


class RichDisplay(LogDisplay):
    """On a terminal: a bar per task (label, bar, counts, rate, ETA, elapsed) on stderr. Log records are routed
    through the bar's console while it runs, so a warning gets a line of its own; before the first unit is
    reported, life-sign lines as off a terminal."""

    def __init__(self, command: str, every: float | None = None, *, clock: Clock = time.monotonic,
                 beat: bool = True) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("{task.fields[label]}", style="bold", markup=False), BarColumn(),
            TextColumn("{task.fields[stats]}", markup=False), TimeElapsedColumn(),
            console=Console(stderr=True), transient=False)
        self._task: Any = None
        self._live = False
        self._rerouted: list[tuple[logging.StreamHandler[Any], Any]] = []
        super().__init__(command, every, clock=clock, beat=beat)

    def _begun(self, now: float) -> None:
        if not self._live:
            self._progress.start()
            self._live = True
            self._reroute_logs()
        # Task names and units are the code's words, a dataset id in a label may come from a bucket listing:
        # escaped (one_line) and shown with markup off.
        self._task = self._progress.add_task("", total=None, label=one_line(self.meter.task), stats="")

    def _updated(self, now: float) -> None:
        if self._task is not None:
            self._progress.update(self._task, completed=self.meter.done, total=self.meter.total,
                                  stats=self.meter.summary(now))

    def _finish_task(self, now: float) -> None:
        if self._task is not None:
            self._progress.update(self._task, completed=self.meter.done, total=self.meter.done or 1,
                                  stats=self.meter.summary(now, final=True))
            self._task = None

    def _stopped(self) -> None:
        if self._live:
            self._progress.stop()
            self._live = False
            for handler, stream in self._rerouted:
                handler.setStream(stream)
            self._rerouted = []

    def _quiet_now(self) -> bool:
        return self._live

    def _reroute_logs(self) -> None:
        """rich's live display proxies sys.stderr; drtool's log handler kept the real one and would write into the
        bar's line. Point it at the proxy while the bar runs."""
        for handler in logging.getLogger(LOGGER_NAME).handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is sys.__stderr__:
                self._rerouted.append((handler, handler.setStream(sys.stderr)))


def on_terminal(*, json_mode: bool, log_format: str | None) -> bool:
    """The rich bar only for a person: stderr a terminal, no --json, text logs (a bar between JSON lines would
    break them)."""
    from drtool.log import use_json_logs

    return sys.stderr.isatty() and not json_mode and not use_json_logs(log_format, json_mode)


def make_display(command: str, *, json_mode: bool, log_format: str | None) -> LogDisplay:
    """The display for this run's stderr."""
    if on_terminal(json_mode=json_mode, log_format=log_format):
        return RichDisplay(command)
    return LogDisplay(command)
