"""Prometheus text-format metrics for node_exporter's textfile collector.

Cron jobs cannot be scraped, so each run writes its outcome to a file; the write is atomic (temp file + rename)
so the collector never reads half a file.
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


@dataclass(frozen=True)
class Metric:
    name: str
    help: str
    value: float
    labels: Mapping[str, str] = field(default_factory=dict)
    kind: str = "gauge"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def render(metrics: Iterable[Metric]) -> str:
    lines: list[str] = []
    seen: set[str] = set()
    for metric in metrics:
        if not _NAME.match(metric.name):
            raise ValueError(f"invalid metric name {metric.name!r}")
        if metric.name not in seen:
            lines.append(f"# HELP {metric.name} {metric.help}")
            lines.append(f"# TYPE {metric.name} {metric.kind}")
            seen.add(metric.name)
        labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(metric.labels.items()))
        lines.append(f"{metric.name}{{{labels}}} {_number(metric.value)}" if labels
                     else f"{metric.name} {_number(metric.value)}")
    return "\n".join(lines) + "\n"


def write_textfile(path: str | Path, metrics: Iterable[Metric]) -> None:
    target = Path(path)
    text = render(metrics)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent or Path("."))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
