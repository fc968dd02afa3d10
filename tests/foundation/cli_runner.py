"""Run the installed `drtool` console script as an operator would: a real process, real exit codes (a view over
tests.helpers.cli, which holds the one runner and the one environment rule)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.cli import DRTOOL, RunCli, make_run_cli, run_json, run_process  # noqa: F401  (re-exported)


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str

    def json_lines(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]


def drtool(*args: str, env: dict[str, str] | None = None, cwd: str | Path | None = None, timeout: float = 300) -> Run:
    """The console script in tests.helpers.cli.clean_env(env): tests see only the settings they pass."""
    done = run_process(args, env, cwd=cwd, timeout=timeout, script=True)  # every --json run obeys docs/json.md
    return Run(done.code, done.stdout, done.stderr)
