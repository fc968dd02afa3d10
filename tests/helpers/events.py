"""Reading drtool's `--json` events back: one definition, used by every folder that checks a command's result."""

from __future__ import annotations

from typing import Any


def summary(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The command's `result` event (every `--json` run ends with one; docs/json.md)."""
    return next(e for e in events if e.get("event") == "result")


def first_dataset(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The first entry of `result.datasets` (rebuild-index's per-dataset outcome), as a plain dict."""
    return dict(summary(events)["datasets"][0])
