"""Static checks of the runbooks against drtool and a real Dify deployment (no sandbox needed, fast).

Why: a runbook is read at 3 a.m. and followed literally. It must name only the breaks `drtool verify` really
reports (an operator grepping for `count_mismatch` would wait forever), say for every drtool step which exit code
is expected and what 2, 11 and 12 mean there, and edit and restart what a real Dify docker-compose deployment
needs (the OPENDAL_S3_* variables of the default storage, the worker_beat and plugin_daemon containers).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from drtool.ops.verify.report import KINDS
from tests.playbooks.runbook import parse_runbook

PLAYBOOKS = Path(__file__).resolve().parents[2] / "playbooks"
RUNBOOKS = sorted(p for p in PLAYBOOKS.glob("*.md") if p.name != "README.md")
DIFY_WRITERS = ("api", "worker", "worker_beat", "plugin_daemon")
_SNAKE = re.compile(r"`([a-z]+(?:_[a-z]+)+)`")
# A snake_case word is a check name when one of its parts is a verdict: `missing_vector`, `chunk_file_stale`,
# `count_mismatch` are; `document_id` and `worker_beat` are not.
_VERDICT_WORDS = {"missing", "orphan", "duplicate", "wrong", "stale", "mismatch", "extra", "lost", "broken",
                  "corrupt", "unexpected", "invalid", "bad"}
_BREAK_LINE = re.compile(r"^\s+([a-z]+(?:_[a-z]+)+) \(\d+\): ")


def prose(path: Path) -> str:
    """The text outside fenced blocks."""
    out, inside = [], False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            inside = not inside
        elif not inside:
            out.append(line)
    return "\n".join(out)


def check_names_mentioned(path: Path) -> set[str]:
    """Break kinds a runbook names: backticked snake_case words with a verdict part in its prose, and the
    `kind (N):` lines of the outputs it shows."""
    names = {name for name in _SNAKE.findall(prose(path)) if _VERDICT_WORDS & set(name.split("_"))}
    for block in parse_runbook(path):
        for cmd in block.commands:
            names |= {m.group(1) for line in cmd.output if (m := _BREAK_LINE.match(line))}
    return names


def test_vector_runbook_names_exactly_the_breaks_verify_reports() -> None:
    mentioned = check_names_mentioned(PLAYBOOKS / "vector-index-lost.md")
    assert mentioned == set(KINDS), (
        f"named in the runbook but never reported by verify: {sorted(mentioned - set(KINDS))}; "
        f"reported by verify but missing from the runbook: {sorted(set(KINDS) - mentioned)}")


def test_the_name_check_can_fail(tmp_path: Path) -> None:
    page = tmp_path / "r.md"
    page.write_text("Verify reports `count_mismatch` in `document_id`.\n\n```console\n$ drtool verify  # exit 4\n"
                    "  missing_vector (3): an indexed segment has no vector\n```\n")
    assert check_names_mentioned(page) == {"count_mismatch", "missing_vector"}


@pytest.mark.parametrize("runbook", RUNBOOKS, ids=lambda p: p.stem)
def test_every_drtool_step_states_its_exit_code(runbook: Path) -> None:
    unstated = []
    for number, line in enumerate(runbook.read_text().splitlines(), start=1):
        if line.startswith("$ ") and re.search(r"(^|[\s'\"])drtool\s", line[2:]) \
                and not re.search(r"\s#\s*exit\s+\d+\s*$", line):
            unstated.append(f"{runbook.name}:{number}: {line}")
    assert not unstated, "\n".join(unstated)


@pytest.mark.parametrize("runbook", RUNBOOKS, ids=lambda p: p.stem)
def test_every_runbook_says_what_to_do_on_2_11_and_12(runbook: Path) -> None:
    text = runbook.read_text()
    assert "\n## If a drtool step exits 2, 11 or 12\n" in text, runbook.name
    section = text.split("\n## If a drtool step exits 2, 11 or 12\n", 1)[1].split("\n## ", 1)[0]
    for code in ("2", "11", "12"):
        assert f"- **{code}**: " in section, (runbook.name, code)


@pytest.mark.parametrize("runbook", RUNBOOKS, ids=lambda p: p.stem)
def test_restarts_cover_every_dify_container_that_reads_the_changed_settings(runbook: Path) -> None:
    for block in parse_runbook(runbook):
        for cmd in block.commands:
            if "docker compose" in cmd.text and re.search(r"\s(up|restart|stop)\s", cmd.text):
                services = set(cmd.text.split()[cmd.text.split().index("-f") + 2:])
                assert set(DIFY_WRITERS) <= services, f"{runbook.name}:{cmd.line}: {cmd.text}"


def test_failover_edits_both_storage_variable_families() -> None:
    """STORAGE_TYPE=opendal (Dify's default) reads OPENDAL_S3_ENDPOINT, STORAGE_TYPE=s3 reads S3_ENDPOINT."""
    edits = [cmd.text for block in parse_runbook(PLAYBOOKS / "object-storage-site-down.md")
             for cmd in block.commands if cmd.text.startswith("sed -i")]
    assert edits, "the failover runbook edits no .env"
    assert any("^S3_ENDPOINT=" in e and "^OPENDAL_S3_ENDPOINT=" in e for e in edits), edits
