"""Read the commands out of the runbooks in playbooks/, so a test can run them and they cannot rot.

The convention (documented in playbooks/README.md):
- A fenced block whose language is ``console`` holds commands, one per line starting with ``$ ``; the lines
  after a command, up to the next ``$ `` line, are its (trimmed) expected output. A command's expected exit
  status is written as a trailing comment ``# exit N`` (none written means 0).
- ``$ export NAME=VALUE`` lines change the environment of the commands after them in the same runbook.
- An HTML comment ``<!-- not-run: reason -->`` right before a block means the block is not run against the
  sandbox (it needs kubectl, systemctl, a real outage...); the drtool commands in it are still parsed with
  drtool's own Click definitions, so their subcommands and flags must exist.
- An HTML comment ``<!-- sandbox: action [action...] -->`` tells the test what to do to the sandbox before the
  next block (simulate the disaster the runbook is about): the actions are defined in tests/playbooks.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Block", "Command", "drtool_invocations", "parse_runbook"]

_FENCE = re.compile(r"^```(\S*)\s*$")
_NOT_RUN = re.compile(r"<!--\s*not-run:\s*(.+?)\s*-->")
_SANDBOX = re.compile(r"<!--\s*sandbox:\s*(.+?)\s*-->")
_EXIT = re.compile(r"\s+#\s*exit\s+(\d+)\s*$")
# `drtool ARGS` inside any text (shell, crontab, systemd ExecStart=, YAML): the arguments end at a quote, a
# comment, a pipe, a redirection or the end of the line.
_DRTOOL = re.compile(r"(?:^|[\s\"'=])(?:\S*/bin/)?drtool((?:\s+[^\s\"'#;&|<>]+)*)")


@dataclass(frozen=True)
class Command:
    """One ``$ `` line: the command text, its expected exit status, its expected output, where it is."""

    text: str
    expect_exit: int
    output: tuple[str, ...]
    line: int

    @property
    def is_drtool(self) -> bool:
        return self.text.split(maxsplit=1)[0] == "drtool"

    @property
    def is_export(self) -> bool:
        return self.text.startswith("export ")


@dataclass
class Block:
    """A console block: its commands, whether it runs, and the sandbox actions to do before it."""

    line: int
    commands: list[Command] = field(default_factory=list)
    not_run: str | None = None
    actions: list[str] = field(default_factory=list)
    text: str = ""


def parse_runbook(path: Path) -> list[Block]:
    """Every fenced block of `path` (console or not), with the markers that precede it."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    pending_not_run: str | None = None
    pending_actions: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if m := _NOT_RUN.search(line):
            pending_not_run = m.group(1)
        if m := _SANDBOX.search(line):
            pending_actions += m.group(1).split()
        fence = _FENCE.match(line)
        if not fence:
            i += 1
            continue
        language, start = fence.group(1), i + 1
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        i += 1
        block = Block(line=start, not_run=pending_not_run, actions=pending_actions, text="\n".join(body))
        pending_not_run, pending_actions = None, []
        if language == "console":
            block.commands = _commands(body, start + 1)
        elif block.actions:
            raise ValueError(f"{path}:{start}: a sandbox marker must precede a console block")
        else:
            block.not_run = block.not_run or f"{language or 'plain'} block"
        blocks.append(block)
    if pending_actions:
        raise ValueError(f"{path}: sandbox marker after the last block")
    return blocks


def _commands(body: list[str], first_line: int) -> list[Command]:
    commands: list[Command] = []
    current: tuple[str, int, int] | None = None
    output: list[str] = []

    def flush() -> None:
        if current is not None:
            commands.append(Command(current[0], current[1], tuple(output), current[2]))

    for n, raw in enumerate(body):
        if raw.startswith("$ "):
            flush()
            output = []
            text = raw[2:].strip()
            expect = 0
            if m := _EXIT.search(text):
                expect, text = int(m.group(1)), text[: m.start()].rstrip()
            current = (text, expect, first_line + n)
        else:
            output.append(raw)
    flush()
    return commands


def drtool_invocations(text: str) -> list[list[str]]:
    """The argument lists of every `drtool ...` found in `text` (environment references stay as written)."""
    found: list[list[str]] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith(("#", "Description=")):  # prose that merely names the tool
            continue
        for m in _DRTOOL.finditer(line):
            args = shlex.split(m.group(1), comments=False)
            if args:
                found.append(args)
    return found
