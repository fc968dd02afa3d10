"""The runbooks in playbooks/ are executable: every `$ drtool ...` they show runs against the real sandbox (Postgres,
two replicated MinIO sites, Milvus Lite, the embedding endpoint) with the exit status the runbook promises, and
every drtool command they only show (cron, systemd, Kubernetes, real outages) parses with drtool's own Click
definitions. A runbook whose command, flag or exit code drifts from the code fails here.

Set PLAYBOOKS_CAPTURE=FILE to append each command's real output to FILE (how the runbooks' output was captured).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import click
import pytest

from drtool.cli.main import cli
from tests.playbooks.conftest import REPO, Sandbox
from tests.playbooks.runbook import Block, Command, drtool_invocations, parse_runbook

PLAYBOOKS = REPO / "playbooks"
RUNBOOKS = sorted(p for p in PLAYBOOKS.glob("*.md") if p.name != "README.md")
SCHEDULING = sorted(p for p in (PLAYBOOKS / "scheduling").iterdir() if p.is_file())


def parse_drtool_args(args: list[str]) -> list[str]:
    """Parse `drtool ARGS` down to the leaf command with Click, without running anything; return the command path.

    Raises click.UsageError (unknown command, unknown option, bad value, missing argument) like the CLI would.
    """
    command: click.Command = cli
    name, rest, parent = "drtool", list(args), None
    path = [name]
    while True:
        ctx = command.make_context(name, rest, parent=parent)
        if not isinstance(command, click.Group):
            return path
        remaining = [*ctx._protected_args, *ctx.args]
        if not remaining:
            return path
        sub_name, sub, rest = command.resolve_command(ctx, remaining)
        assert sub is not None and sub_name is not None
        command, name, parent = sub, sub_name, ctx
        path.append(sub_name)


def _capture(command: str, run_code: int, stdout: str, stderr: str) -> None:
    target = os.environ.get("PLAYBOOKS_CAPTURE")
    if target:
        with open(target, "a", encoding="utf-8") as fh:
            fh.write(f"$ {command}\n{stdout}{stderr}[exit {run_code}]\n\n")


def _expand(box: Sandbox, env: dict[str, str], value: str) -> str:
    run = box.shell(f'printf %s "{value}"', env)
    assert run.code == 0, run.stderr
    return run.stdout


def _run_block(box: Sandbox, env: dict[str, str], block: Block, where: str) -> None:
    for action in block.actions:
        box.act(action)
    for cmd in block.commands:
        _run_command(box, env, cmd, where)


def _run_command(box: Sandbox, env: dict[str, str], cmd: Command, where: str) -> None:
    if cmd.is_export:
        name, _, value = cmd.text.removeprefix("export ").partition("=")
        env[name.strip()] = _expand(box, env, value.strip())
        return
    run = box.shell(cmd.text, env)
    _capture(cmd.text, run.code, run.stdout, run.stderr)
    assert run.code == cmd.expect_exit, (
        f"{where}:{cmd.line}: `{cmd.text}` exited {run.code}, the runbook says {cmd.expect_exit}\n"
        f"--- stdout\n{run.stdout[-3000:]}\n--- stderr\n{run.stderr[-3000:]}")


@pytest.mark.parametrize("runbook", RUNBOOKS, ids=lambda p: p.stem)
def test_runbook_commands_run_with_the_exit_codes_written(runbook: Path, sandbox: Sandbox) -> None:
    blocks = parse_runbook(runbook)
    runnable = [b for b in blocks if b.not_run is None]
    assert any(c.is_drtool for b in runnable for c in b.commands), f"{runbook.name} runs no drtool command"
    env = dict(sandbox.env)
    for block in blocks:
        if block.not_run is None:
            _run_block(sandbox, env, block, runbook.name)


@pytest.mark.parametrize("path", [*RUNBOOKS, *SCHEDULING], ids=lambda p: p.name)
def test_every_drtool_command_shown_parses(path: Path) -> None:
    """Commands that are not run here (cron, systemd, Kubernetes, real outages) still name real commands and flags."""
    invocations: list[tuple[int, list[str]]] = []
    if path.suffix == ".md":
        for block in parse_runbook(path):
            if block.commands:
                invocations += [(c.line, c.text.split()[1:]) for c in block.commands if c.is_drtool]
                invocations += [(block.line, a) for c in block.commands if not c.is_drtool
                                for a in drtool_invocations(c.text)]
            else:
                invocations += [(block.line, a) for a in drtool_invocations(block.text)]
    else:
        invocations += [(0, a) for a in drtool_invocations(path.read_text(encoding="utf-8"))]
    if path.suffix != ".timer":  # a timer only names its service
        assert invocations, f"{path.name} shows no drtool command"
    for line, args in invocations:
        try:
            parse_drtool_args([re.sub(r"^[\"']|[\"']$", "", a) for a in args])
        except click.ClickException as exc:
            pytest.fail(f"{path.name}:{line}: `drtool {' '.join(args)}` does not parse: {exc.format_message()}")


def test_parser_rejects_what_drtool_rejects() -> None:
    """The parse check can fail: an unknown flag, an unknown command and a bad choice are caught."""
    assert parse_drtool_args(["drill", "--rto-slo", "15m", "--json"]) == ["drtool", "drill"]
    assert parse_drtool_args(["drill", "history", "--limit", "5"]) == ["drtool", "drill", "history"]
    for bad in (["drill", "--no-such-flag"], ["snapshot", "take"], ["rebuild-index", "--target", "pinecone"]):
        with pytest.raises(click.UsageError):
            parse_drtool_args(bad)


def test_runbook_convention_is_parsed(tmp_path: Path) -> None:
    """Exit annotations, output lines, not-run and sandbox markers are read as documented in the README."""
    doc = tmp_path / "x.md"
    doc.write_text("<!-- sandbox: lose-index -->\n```console\n$ drtool verify  # exit 4\nbroken\n"
                   "$ export A=b\n```\n<!-- not-run: needs kubectl -->\n```console\n$ kubectl apply -f x\n```\n"
                   "```ini\nExecStart=/usr/local/bin/drtool drill --json\n```\n")
    blocks = parse_runbook(doc)
    assert blocks[0].actions == ["lose-index"] and blocks[0].not_run is None
    first = blocks[0].commands[0]
    assert (first.text, first.expect_exit, first.output) == ("drtool verify", 4, ("broken",))
    assert blocks[0].commands[1].is_export
    assert blocks[1].not_run == "needs kubectl"
    assert blocks[2].not_run == "ini block" and drtool_invocations(blocks[2].text) == [["drill", "--json"]]
