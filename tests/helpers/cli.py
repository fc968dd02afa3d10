"""The one way tests run drtool: in this process (fast; fixtures' monkeypatched environment applies) or as a real
process (exit codes, signals, start-up as cron sees them), with one rule for the environment a process inherits.

The rule (`clean_env`): the test process's environment minus every DRTOOL_* setting and minus the PG* and AWS_*
variables libpq and boto3 read on their own, plus exactly what the test passes. A developer's shell (a PGPASSWORD,
an AWS_PROFILE, a DRTOOL_S3_BUCKET) can then never change what a test sees, and no test inherits another's
settings whatever order the suite runs in. In-process runs read `os.environ`, so a test that uses them sets its
settings with `monkeypatch` (tests.export.helpers.apply_env clears DRTOOL_* first).

A process run is read through one result shape, `ProcessRun`; the folders' runners (tests.foundation.cli_runner,
tests.security.conftest, tests.snapshot.conftest's SnapshotEnv.run, tests.reliability.harness) only choose how drtool
is started (console script or `python -m`, working directory, `--json`).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.foundation.json_contract import check_json_run

REPO = Path(__file__).resolve().parents[2]
DRTOOL = str(Path(sys.executable).with_name("drtool"))  # the installed console script
NOT_INHERITED = ("DRTOOL_", "PG", "AWS_")

RunCli = Callable[..., tuple[int, list[dict[str, Any]]]]


def clean_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without DRTOOL_*, PG* and AWS_* variables, then `env` on top."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(NOT_INHERITED)}
    base.update(env or {})
    return base


def json_events(text: str) -> list[dict[str, Any]]:
    """The JSON objects of a `--json` run's output (lines starting with `{`)."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def command(args: Sequence[str], *, script: bool = False) -> list[str]:
    """argv of drtool: the console script (as an operator types it) or `python -m drtool` (as cron often runs it)."""
    return [DRTOOL, *args] if script else [sys.executable, "-m", "drtool", *args]


@dataclass(frozen=True)
class Finished:
    """What a subprocess run left: exit code, both streams and its wall time."""

    code: int
    stdout: str
    stderr: str
    seconds: float


@dataclass
class ProcessRun:
    """A finished drtool run as the tests read it (one shape for every folder): exit code, both streams, wall
    time; `label` and `args` name it in a report (tests/security), `first_event_s` and `last_event_s` say when its
    first and last JSON events came out (tests/reliability)."""

    code: int
    stdout: str
    stderr: str
    seconds: float = 0.0
    first_event_s: float | None = None
    last_event_s: float | None = None
    label: str = ""
    args: tuple[str, ...] = ()

    def events(self) -> list[dict[str, Any]]:
        """The JSON objects of stdout (lines starting with `{`); a line cut short by a kill -9 is skipped (a
        complete `--json` run has none: run_process checks every line against docs/json.md)."""
        out = []
        for line in self.stdout.splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out

    def result(self) -> dict[str, Any]:
        """The last JSON event (a complete `--json` run ends with its `result`)."""
        return self.events()[-1]

    def json_lines(self) -> list[dict[str, object]]:
        """Every non-blank stdout line parsed as JSON (a `--json` run prints nothing else)."""
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]

    @property
    def no_traceback(self) -> bool:
        return "Traceback" not in self.stderr and "Traceback" not in self.stdout


def run_process(args: Sequence[str], env: Mapping[str, str] | None = None, *, cwd: str | Path | None = REPO,
                timeout: float = 300, script: bool = False, check_json: bool = True) -> Finished:
    """Run drtool as a separate process in `clean_env(env)`, stdin closed; every `--json` run is checked against
    docs/json.md (tests.foundation.json_contract)."""
    started = time.monotonic()
    proc = subprocess.run(command(args, script=script), env=clean_env(env), capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, stdin=subprocess.DEVNULL, check=False)
    if check_json:
        check_json_run(list(args), proc.stdout, proc.returncode)
    return Finished(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)


def spawn(args: Sequence[str], env: Mapping[str, str] | None = None, *, cwd: str | Path | None = REPO,
          script: bool = False, **popen: Any) -> subprocess.Popen[str]:
    """Start drtool in `clean_env(env)` without waiting (for kills, signals and concurrent runs); text pipes for
    stdout and stderr, stdin closed, unless `popen` says otherwise."""
    options: dict[str, Any] = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "stdin": subprocess.DEVNULL,
                               "text": True, **popen}
    return subprocess.Popen(command(args, script=script), env=clean_env(env), cwd=cwd, **options)


def invoke(capsys: pytest.CaptureFixture[str], args: Sequence[str]) -> tuple[int, str, str]:
    """Run drtool in this process: (exit code, stdout, stderr). Output before the call is discarded first, and a
    `--json` run is checked against docs/json.md."""
    from drtool.cli.main import run

    capsys.readouterr()
    code = run(list(args))
    captured = capsys.readouterr()
    check_json_run(list(args), captured.out, code)
    return code, captured.out, captured.err


def make_run_cli(capsys: pytest.CaptureFixture[str]) -> RunCli:
    """`drtool --json ARGS` in this process; returns (exit code, JSON events)."""
    def call(*args: str) -> tuple[int, list[dict[str, Any]]]:
        code, out, _err = invoke(capsys, ["--json", *args])
        return code, json_events(out)

    return call


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[dict[str, Any]], list[dict[str, Any]]]:
    """`drtool --json --log-format json ARGS` in this process: exit code, stdout events, stderr records (what a
    test of the logs, such as the progress lines, reads)."""
    code, out, err = invoke(capsys, ["--json", "--log-format", "json", *args])
    return code, json_events(out), json_events(err)
