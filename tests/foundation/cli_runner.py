"""Run the installed `drtool` console script as an operator would: a real process, real exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.foundation.json_contract import check_json_run

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
    check_json_run(args, proc.stdout, proc.returncode)  # every --json run obeys docs/json.md
    return Run(proc.returncode, proc.stdout, proc.stderr)


RunCli = Callable[..., tuple[int, list[dict[str, Any]]]]


def make_run_cli(capsys: pytest.CaptureFixture[str]) -> RunCli:
    """`drtool --json ARGS` in this process (fast, and fixtures' monkeypatched env applies); (exit code, events)."""
    from drtool.cli.main import run

    def call(*args: str) -> tuple[int, list[dict[str, Any]]]:
        capsys.readouterr()
        code = run(["--json", *args])
        out = capsys.readouterr().out
        check_json_run(["--json", *args], out, code)  # every --json run obeys docs/json.md
        return code, [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    return call


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[dict[str, Any]], list[dict[str, Any]]]:
    """`drtool --json --log-format json ARGS` in this process: exit code, stdout events, stderr records (what a
    test of the logs, such as the progress lines, reads)."""
    from drtool.cli.main import run

    capsys.readouterr()
    code = run(["--json", "--log-format", "json", *args])
    captured = capsys.readouterr()
    check_json_run(["--json", *args], captured.out, code)
    return (code, [json.loads(line) for line in captured.out.splitlines() if line.startswith("{")],
            [json.loads(line) for line in captured.err.splitlines() if line.startswith("{")])
