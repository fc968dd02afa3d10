"""Read a metrics file back with prometheus_client's own parser (the reference for the text format), so a file the
textfile collector would reject fails the test that wrote it."""

from __future__ import annotations

from pathlib import Path

import click
from prometheus_client.parser import text_string_to_metric_families

COMMON = ("last_run_timestamp_seconds", "last_success_timestamp_seconds", "last_exit_code", "duration_seconds")


Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def parse_metrics(path: str | Path) -> Samples:
    """{sample name: {sorted labels: value}}; raises if prometheus_client cannot parse the file."""
    return parse_metrics_text(Path(path).read_text(encoding="utf-8"))


def parse_metrics_text(text: str) -> Samples:
    """The same, from the text of a file."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        assert family.type == "gauge", (family.name, family.type)
        for sample in family.samples:
            key = tuple(sorted(sample.labels.items()))
            assert key not in out.setdefault(sample.name, {}), f"duplicate sample {sample.name}{dict(key)}"
            out[sample.name][key] = sample.value
    return out


def common_metrics(path: str | Path, prefix: str) -> dict[str, float]:
    """The four metrics every command writes, by suffix; fails when one is missing or labelled."""
    parsed = parse_metrics(path)
    found = {}
    for suffix in COMMON:
        name = f"{prefix}_{suffix}"
        assert name in parsed, f"{path}: no {name} in {sorted(parsed)}"
        assert list(parsed[name]) == [()], f"{name} must have no labels: {parsed[name]}"
        found[suffix] = parsed[name][()]
    foreign = [n for n in parsed if not n.startswith(prefix + "_")]
    assert not foreign, f"{path}: metrics outside {prefix}_*: {foreign}"
    return found


def commands_with_metrics(group: click.Group | None = None, path: str = "") -> set[str]:
    """The canonical names of every command that takes --metrics-file, found in the CLI itself (loading the lazily
    listed commands): what the docs and the metrics contract are checked against."""
    from drtool.cli.app import canonical_command
    from drtool.cli.main import cli

    group = cli if group is None else group
    found = set()
    context = click.Context(group)
    for name in group.list_commands(context):
        command = group.get_command(context, name)
        assert command is not None
        full = f"{path} {name}".strip()
        if any(p.name == "metrics_file" for p in command.params):
            found.add(canonical_command(full))  # `snapshots create` is an alias of `snapshot create`
        if isinstance(command, click.Group):
            found |= commands_with_metrics(command, full)
    return found
