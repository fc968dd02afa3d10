"""Run the installed `drtool` console script as an operator would: a real process, real exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

DRTOOL = str(Path(sys.executable).with_name("drtool"))


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str

    def json_lines(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]


def drtool(*args: str, env: dict[str, str] | None = None, cwd: str | Path | None = None, timeout: float = 300) -> Run:
    """Environment is the test process's minus any DRTOOL_* so tests see only what they pass."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("DRTOOL_")}
    base.update(env or {})
    proc = subprocess.run([DRTOOL, *args], capture_output=True, text=True, env=base, cwd=cwd, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    return Run(proc.returncode, proc.stdout, proc.stderr)
