"""Shared hypothesis strategies for bad-input tests, and the example budgets the README's figures count."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

# One budget per property; tests/badinput/README.md adds them up.
EXAMPLES = 400
FEW = 150
PROFILE = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
SMALL = settings(max_examples=FEW, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)


def json_values(keys: st.SearchStrategy[str] | None = None, leaves: int = 25) -> st.SearchStrategy[Any]:
    """Any JSON value; object keys drawn from `keys` so the generator hits the fields the parser reads."""
    key_strategy = keys if keys is not None else st.text(max_size=8)
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(key_strategy, inner, max_size=5), max_leaves=leaves)


def flip(data: bytes, at: int, bit: int) -> bytes:
    """`data` with one bit flipped at `at % len(data)`."""
    if not data:
        return data
    i = at % len(data)
    return data[:i] + bytes([data[i] ^ (1 << (bit % 8))]) + data[i + 1:]


def error_message(stderr: str) -> str:
    """The error text drtool printed, whether stderr carries JSON log lines or plain text."""
    out = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            try:
                event = json.loads(line)
            except ValueError:
                out.append(line)
                continue
            out.append(str(event.get("message", "")))
        else:
            out.append(line)
    return "\n".join(out)
