"""docs/metrics.md lists exactly the metrics the code writes, so alert rules written from it keep working.

The code's names are found two ways: the literal `Metric("drtool_...")` names of each command's own metrics, and
the four common metrics of every command that takes `--metrics-file` (found in the CLI itself, named by
`drtool.core.metrics.metric_prefix`). The "Renamed" table of the page is history, not a list of current names.
"""

from __future__ import annotations

import re
from pathlib import Path

from drtool.core.metrics import metric_prefix
from tests.foundation.metrics_check import commands_with_metrics

REPO = Path(__file__).resolve().parents[2]
_IN_CODE = re.compile(r'Metric\(\s*(f?)"(drtool_[a-z_]*)(\{)?')
_CONSTANT = re.compile(r'^_[A-Z_]+ = "(drtool_[a-z_]+)"', re.M)
COMMON = ("last_run_timestamp_seconds", "last_success_timestamp_seconds", "last_exit_code", "duration_seconds")




def _prefixes() -> set[str]:
    return {metric_prefix(c) for c in commands_with_metrics()}


def _code_names() -> tuple[set[str], set[str]]:
    """(literal names, prefixes of f-string names) of every Metric the package builds, and the common four."""
    names: set[str] = {f"{prefix}_{suffix}" for prefix in _prefixes() for suffix in COMMON}
    prefixes: set[str] = set()
    for path in (REPO / "drtool").rglob("*.py"):
        text = path.read_text()
        for is_f, name, brace in _IN_CODE.findall(text):
            (prefixes if is_f and brace else names).add(name)
        names.update(_CONSTANT.findall(text))
    return names, prefixes


def _doc_names() -> set[str]:
    """Every name in the first column of a table, `_suffix` shorthands expanded against the command's prefix."""
    text = (REPO / "docs" / "metrics.md").read_text().split("\n## Renamed", 1)[0]
    if "\n## Renamed" in (REPO / "docs" / "metrics.md").read_text():
        text += (REPO / "docs" / "metrics.md").read_text().split("\n## Renamed", 1)[1].split("\n## ", 1)[1]
    prefixes = sorted(_prefixes(), key=len, reverse=True)
    names: set[str] = set()
    for cell in re.findall(r"^\| ([^|]+) \|", text, re.M):
        full = re.findall(r"`(drtool_[a-z_]+)`", cell)
        if not full:
            continue
        names.update(full)
        base = next((p for p in prefixes if full[0].startswith(p + "_")), None)
        suffixes = re.findall(r"`(_[a-z_]+)`", cell)
        assert base or not suffixes, f"docs/metrics.md: {full[0]} has no command prefix for {suffixes}"
        names.update(f"{base}{suffix}" for suffix in suffixes)
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


def test_every_metric_follows_the_scheme() -> None:
    """`drtool_<command>_...` for a command that writes metrics; each alert rule names a documented metric."""
    names, prefixes = _code_names()
    owners = _prefixes()
    strays = sorted(n for n in names | prefixes if not any(n.startswith(p + "_") for p in owners))
    assert not strays, f"metrics outside every command's prefix: {strays}"
    text = (REPO / "docs" / "metrics.md").read_text()
    rules = text.split("## Alerts worth having", 1)[1]
    documented = _doc_names()
    for metric in re.findall(r"\b(drtool_[a-z_]+)\b", rules):
        assert metric in documented, f"an alert rule uses {metric}, which is not documented"
