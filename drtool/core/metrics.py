"""Prometheus text-format metrics for node_exporter's textfile collector.

Cron jobs cannot be scraped, so each run writes its outcome to a file; the write is atomic (temp file in the same
directory, fsync, rename) so the collector never reads half a file. Every name follows one scheme,
`drtool_<command>_<what>_<unit>` (`metric_prefix`), and docs/metrics.md lists each one.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


@dataclass(frozen=True)
class Metric:
    name: str
    help: str
    value: float
    labels: Mapping[str, str] = field(default_factory=dict)
    kind: str = "gauge"


def metric_prefix(command: str) -> str:
    """`snapshot create` -> `drtool_snapshot_create`, `export-chunks` -> `drtool_export_chunks`: derived from the
    command's name, never chosen per command, so two commands cannot drift into two schemes."""
    words = re.sub(r"[^a-z0-9]+", "_", command.strip().lower()).strip("_")
    if not words:
        raise ValueError("metrics need a command name")
    return f"drtool_{words}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def render(metrics: Iterable[Metric]) -> str:
    """The text exposition format. The samples of one metric are written together under one HELP/TYPE (the format
    requires it; callers may add them interleaved, e.g. bucket by bucket), and a duplicate sample is refused."""
    groups: dict[str, list[Metric]] = {}
    for metric in metrics:
        if not _NAME.match(metric.name):
            raise ValueError(f"invalid metric name {metric.name!r}")
        bad = [k for k in metric.labels if not _LABEL.match(k)]
        if bad:
            raise ValueError(f"invalid label name(s) {bad} on {metric.name}")
        groups.setdefault(metric.name, []).append(metric)
    lines: list[str] = []
    for name, samples in groups.items():
        lines.append(f"# HELP {name} {_escape_help(samples[0].help)}")
        lines.append(f"# TYPE {name} {samples[0].kind}")
        seen: set[tuple[tuple[str, str], ...]] = set()
        for metric in samples:
            key = tuple(sorted((k, str(v)) for k, v in metric.labels.items()))
            if key in seen:
                raise ValueError(f"duplicate sample {name}{dict(key)}")
            seen.add(key)
            labels = ",".join(f'{k}="{_escape(v)}"' for k, v in key)
            lines.append(f"{name}{{{labels}}} {_number(metric.value)}" if labels
                         else f"{name} {_number(metric.value)}")
    return "\n".join(lines) + "\n"


def previous_value(path: str | Path, name: str) -> float | None:
    """The value of an unlabelled sample `name` in a file this module wrote before, or None (no file, no sample,
    unreadable): how a failed run keeps the last success time of the run before it."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == name:
            try:
                value = float(parts[1])
            except ValueError:
                return None
            return value if math.isfinite(value) else None
    return None


def write_textfile(path: str | Path, metrics: Iterable[Metric]) -> None:
    """Replace `path` atomically: a temporary file next to it, flushed to disk, renamed over it. Any failure
    (missing directory, no permission, full disk) raises; the caller turns it into an exit code."""
    target = Path(path)
    text = render(metrics)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or Path("."))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
