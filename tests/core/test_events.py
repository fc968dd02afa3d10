"""drtool/core/events.py: the one event-sink type (issue #17 found the `Emit` alias defined six times)."""

from __future__ import annotations

import ast
from pathlib import Path

from drtool.core.events import Emit, no_events

DRTOOL = Path(__file__).resolve().parents[2] / "drtool"


def test_the_silent_sink_takes_any_event_and_keeps_nothing() -> None:
    sink: Emit = no_events
    event = {"event": "rebuild.dataset_started", "dataset_id": "d"}
    assert sink(event) is None
    assert event == {"event": "rebuild.dataset_started", "dataset_id": "d"}  # not consumed or changed


def test_no_module_defines_its_own_emit_alias() -> None:
    """A second alias drifts from the first (another signature, another name for the same idea): import this one."""
    defined = []
    for path in sorted(DRTOOL.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            targets = node.targets if isinstance(node, ast.Assign) else \
                [node.target] if isinstance(node, ast.AnnAssign) else []
            if any(isinstance(t, ast.Name) and t.id == "Emit" for t in targets):
                defined.append(str(path.relative_to(DRTOOL.parent)))
    assert defined == ["drtool/core/events.py"]
