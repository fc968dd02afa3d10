"""Start-up fit for cron and shell use: `drtool --help` and `drtool config show` import no command module they do
not run and no SDK (boto3, psycopg, pymilvus, weaviate, torch...), the lazily listed summaries are the commands'
own, and `--version` names the clients. Timings are measured in bench/startup, not asserted here."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest

from drtool.cli.lazy import load
from drtool.cli.main import COMMANDS, cli

SDKS = ("boto3", "botocore", "psycopg", "pymilvus", "weaviate", "sentence_transformers", "torch", "redis", "httpx",
        "numpy", "grpc")


def imported_after(args: list[str]) -> tuple[int, set[str]]:
    """Run drtool in a fresh interpreter; (exit code, the top-level modules it imported)."""
    code = ("import contextlib, io, json, sys\n"
            "from drtool.cli.main import run\n"
            "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
            f"    rc = run({args!r})\n"
            "print(json.dumps([rc, sorted(sys.modules)]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"})
    rc, modules = json.loads(out.stdout.strip().splitlines()[-1])
    return rc, set(modules)


@pytest.mark.parametrize("args", [["--help"], ["config", "show"]], ids=["--help", "config show"])
def test_no_sdk_and_no_other_command_is_imported(args: list[str]) -> None:
    rc, modules = imported_after(args)
    assert rc == 0
    assert not {m.split(".")[0] for m in modules} & set(SDKS)
    commands = {m for m in modules if m.startswith("drtool.cli.") and m.endswith("_cmd")}
    assert commands <= ({"drtool.cli.config_cmd"} if args[0] == "config" else set()), commands


def test_the_listed_summaries_are_the_commands_own() -> None:
    for name, entry in COMMANDS.items():
        command = load(entry)
        assert entry.summary == command.get_short_help_str(limit=10**6), name
    assert sorted(COMMANDS) == cli.list_commands(click.Context(cli))


def test_version_names_drtool_and_its_clients() -> None:
    out = subprocess.run([sys.executable, "-m", "drtool", "--version"], capture_output=True, text=True, check=True)
    first, *clients = out.stdout.splitlines()
    assert first.startswith("drtool, version ")
    assert any(line.strip().startswith("boto3 ") for line in clients)
    assert any(line.strip().startswith("pymilvus ") for line in clients)


def test_grpc_core_logging_is_silenced_unless_asked_for() -> None:
    """gRPC's C core prints to stderr itself (GOAWAY too_many_pings), which no log format of drtool's could wrap."""
    probe = "import os, drtool.cli.main; print(os.environ['GRPC_VERBOSITY'])"
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp"}
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                          env=env).stdout.strip() == "NONE"
    asked = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                           env={**env, "GRPC_VERBOSITY": "DEBUG"})
    assert asked.stdout.strip() == "DEBUG"
