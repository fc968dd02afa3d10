"""The event sink every use case reports through.

A use case emits small dicts (`{"event": "rebuild.dataset_started", ...}`, docs/json.md); the CLI prints them
(one JSON object per line with --json), a drill collects them into its report, tests read them. One type, so that a
use case never depends on who listens.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Emit = Callable[[dict[str, Any]], None]


def no_events(_event: dict[str, Any]) -> None:
    """The sink of a caller that wants no events."""
