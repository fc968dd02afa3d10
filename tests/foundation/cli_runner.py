"""Run the installed `drtool` console script as an operator would: a real process, real exit codes (a view over
tests.helpers.cli, which holds the one runner and the one environment rule)."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.cli import (  # noqa: F401  (re-exported)
    DRTOOL,
    ProcessRun,
    RunCli,
    make_run_cli,
    run_json,
    run_process,
)


def run_script(*args: str, env: dict[str, str] | None = None, cwd: str | Path | None = None,
               timeout: float = 300) -> ProcessRun:
    """The console script in tests.helpers.cli.clean_env(env): tests see only the settings they pass."""
    done = run_process(args, env, cwd=cwd, timeout=timeout, script=True)  # every --json run obeys docs/json.md
    return ProcessRun(done.code, done.stdout, done.stderr, done.seconds)
