"""Which commands show progress, and the display a run of one gets (drtool/cli/progress.py).

Every long command gets one: a rich bar with counts, rate and ETA on a terminal; off a terminal, one line on stderr
every DRTOOL_PROGRESS_SECONDS (30 by default) with the units done of the total, the rate and the ETA, or, before the
operation reports any unit (a pg_dump running), how long it has run and what events it has emitted. A two-hour
snapshot in Kubernetes or under cron then shows life in its log; `-q` turns it off with the rest of the progress,
and stdout never carries it. rebuild-index drives the same displays itself (drtool/cli/rebuild_cmd.py) and is not
listed here.
"""

from __future__ import annotations

from drtool.cli.progress import LogDisplay, interval_seconds, make_display

__all__ = ["LONG_COMMANDS", "Heartbeat", "interval_seconds", "start"]

LONG_COMMANDS = frozenset({"snapshot create", "snapshots verify", "restore", "export-chunks", "verify", "drill",
                           "replication verify", "audit"})

# The life-sign display off a terminal (the name this module's users knew).
Heartbeat = LogDisplay


def start(command: str, *, json_mode: bool, log_format: str | None) -> LogDisplay | None:
    """The progress display of a run of `command`, or None when it is not a long command."""
    if command not in LONG_COMMANDS:
        return None
    return make_display(command, json_mode=json_mode, log_format=log_format)
