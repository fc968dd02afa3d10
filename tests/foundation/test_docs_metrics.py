"""docs/metrics.md lists exactly the metrics the code writes, so alert rules written from it keep working."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_IN_CODE = re.compile(r'Metric\(\s*(f?)"(drtool_[a-z_]*)(\{)?')
_CONSTANT = re.compile(r'^_[A-Z_]+ = "(drtool_[a-z_]+)"', re.M)


def _code_names() -> tuple[set[str], set[str]]:
    """(literal names, prefixes of f-string names) of every Metric the package builds."""
    names: set[str] = set()
    prefixes: set[str] = set()
    for path in (REPO / "drtool").rglob("*.py"):
        text = path.read_text()
        for is_f, name, brace in _IN_CODE.findall(text):
            (prefixes if is_f and brace else names).add(name)
        names.update(_CONSTANT.findall(text))
    return names, prefixes


def _doc_names() -> set[str]:
    text = (REPO / "docs" / "metrics.md").read_text()
    names: set[str] = set()
    for cell in re.findall(r"^\| ([^|]+) \|", text, re.M):
        first = re.search(r"`(drtool_[a-z_]+)`", cell)
        if not first:
            continue
        names.add(first.group(1))
        base = first.group(1).rsplit("_", 1)[0]
        names.update(base + suffix for suffix in re.findall(r"`(_[a-z_]+)`", cell))
    return names


def test_every_metric_written_is_documented_and_every_documented_metric_exists() -> None:
    names, prefixes = _code_names()
    documented = _doc_names()
    assert names and prefixes and documented
    undocumented = {n for n in names if n not in documented} | {
        p for p in prefixes if not any(d.startswith(p) for d in documented)}
    assert not undocumented, f"add to docs/metrics.md: {sorted(undocumented)}"
    stale = {d for d in documented if d not in names and not any(d.startswith(p) for p in prefixes)}
    assert not stale, f"docs/metrics.md lists metrics the code no longer writes: {sorted(stale)}"
