"""Life signs of a long command: one line on stderr every DRTOOL_PROGRESS_SECONDS (30 by default) saying how long
it has run and what it has done so far, counted from the progress events it emits (`export.part_uploaded` x12,
`restore.objects`...). A two-hour snapshot in Kubernetes or under cron then shows life in its log; `-q` turns it
off with the rest of the progress, and stdout never carries it. rebuild-index has its own progress (chunks stored,
rate, ETA: drtool/cli/rebuild_cmd.py) and is not listed here.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

from drtool.log import LOGGER_NAME

LONG_COMMANDS = frozenset({"snapshot create", "snapshots verify", "restore", "export-chunks", "verify", "drill",
                           "replication verify", "audit"})
log = logging.getLogger(f"{LOGGER_NAME}.progress")


def interval_seconds() -> float:
    try:
        return max(0.05, float(os.environ.get("DRTOOL_PROGRESS_SECONDS", "30")))
    except ValueError:
        return 30.0


class Heartbeat:
    def __init__(self, command: str, every: float | None = None) -> None:
        self.command = command
        self.every = interval_seconds() if every is None else every
        self.started = time.monotonic()
        self.counts: Counter[str] = Counter()
        self.last = ""
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._beat, name="drtool-heartbeat", daemon=True)
        self._thread.start()

    def observe(self, event: Mapping[str, Any]) -> None:
        name = str(event.get("event", ""))
        if not name or name.endswith(".started"):
            return
        with self._lock:
            self.counts[name.split(".", 1)[-1]] += 1
            self.last = name

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def line(self) -> tuple[str, dict[str, Any]]:
        elapsed = time.monotonic() - self.started
        with self._lock:
            counts = dict(self.counts)
        done = ", ".join(f"{name.replace('_', ' ')} x{n}" for name, n in sorted(counts.items())) or "working"
        return (f"{self.command}: running {elapsed:.0f} s; {done}",
                {"event": "progress", "command": self.command, "elapsed_seconds": round(elapsed, 1),
                 "done": counts})

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            text, fields = self.line()
            # Bypasses the logger's level (WARNING without -v), as the -q reason line does: life signs are the
            # point; -q is honoured where the heartbeat is started.
            log.handle(log.makeRecord(log.name, logging.INFO, __file__, 0, "%s", (text,), None,
                                      extra={"fields": fields}))
