"""The `--json` contract of docs/json.md, as a check every CLI runner of the test suite applies to what it captured.

The events and their always-present fields are read from docs/json.md itself, so the page and the check cannot
disagree; `tests/foundation/test_json_contract.py` checks the other direction (every event name the code writes is
on the page). A runner calls `check_json_run(args, stdout, code)` after each run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "json.md"
ENVELOPE = ("event", "schema_version", "command", "ts")
_ROW = re.compile(r"^\| `([a-z_.]+)` \| [^|]* \|([^|]*)\|\s*$", re.M)
_NOT_RUNS = {"--help", "-h", "--version"}


@cache
def documented_events() -> dict[str, tuple[str, ...]]:
    """event name -> fields always present besides the envelope, from the `## Events` table of docs/json.md."""
    text = DOC.read_text()
    section = text.split("\n## Events", 1)[1].split("\n## ", 1)[0]
    events = {name: tuple(re.findall(r"`([a-z_]+)`", fields)) for name, fields in _ROW.findall(section)}
    assert "result" in events and len(events) > 10, f"docs/json.md: no event table found ({events})"
    return events


def schema_version() -> int:
    from drtool.cli.app import SCHEMA_VERSION

    return SCHEMA_VERSION


def problems_of(lines: Sequence[str], *, code: int | None, complete: bool = True) -> list[str]:
    """What in these stdout lines of one `--json` run breaks the contract (empty: nothing). `complete`: the run
    ended by itself (a run killed mid-way has no result yet)."""
    events = documented_events()
    found: list[str] = []
    parsed: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            if complete or number < len(lines):  # a killed run may leave its last line cut
                found.append(f"line {number} is not JSON: {line[:200]!r}")
            continue
        if not isinstance(event, dict):
            found.append(f"line {number} is not an object: {line[:200]!r}")
            continue
        parsed.append(event)
        name = event.get("event")
        if list(event)[:4] != list(ENVELOPE):
            found.append(f"line {number}: the envelope {ENVELOPE} does not come first: {list(event)[:6]}")
        if name not in events:
            found.append(f"line {number}: event {name!r} is not in docs/json.md")
            continue
        if event.get("schema_version") != schema_version():
            found.append(f"line {number}: schema_version {event.get('schema_version')!r}")
        if not (event.get("command") is None or isinstance(event.get("command"), str)):
            found.append(f"line {number}: command {event.get('command')!r}")
        try:
            datetime.fromisoformat(str(event.get("ts")))
        except ValueError:
            found.append(f"line {number}: ts {event.get('ts')!r} is not ISO 8601")
        missing = [f for f in events[name] if f not in event]
        if missing:
            found.append(f"line {number}: {name} lacks {missing}: {line[:300]}")
    results = [i for i, e in enumerate(parsed) if e.get("event") == "result"]
    if len(results) > 1:
        found.append(f"{len(results)} result events, one expected")
    if complete:
        if not results:
            found.append("no result event")
        elif results[-1] != len(parsed) - 1:
            found.append("the result event is not the last line")
        elif code is not None and parsed[-1].get("exit_code") != code:
            found.append(f"result exit_code {parsed[-1].get('exit_code')} but the run exited {code}")
    return found


def is_json_run(args: Sequence[str]) -> bool:
    return "--json" in args and not _NOT_RUNS.intersection(args)


def check_json_run(args: Sequence[str], stdout: str, code: int | None, *, complete: bool = True) -> None:
    """Fail the calling test when a `--json` run's stdout breaks docs/json.md; nothing for other runs."""
    if not is_json_run(args):
        return
    found = problems_of(stdout.splitlines(), code=code, complete=complete)
    assert not found, f"drtool {' '.join(args)}: stdout breaks docs/json.md:\n  " + "\n  ".join(found[:20])
