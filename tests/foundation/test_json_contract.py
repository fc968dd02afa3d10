"""The `--json` contract (docs/json.md): the code writes only documented events, the page lists no event the code
no longer writes, the check that every CLI runner applies (tests/foundation/json_contract.py) catches what it
should, and errors raised before or while a command's options are parsed are JSON too."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from drtool.cli.app import SCHEMA_VERSION, App
from drtool.log import LOG_FORMAT_ENV, LOG_FORMATS
from tests.foundation.cli_runner import run_script
from tests.foundation.json_contract import DOC, ENVELOPE, documented_events, problems_of

REPO = Path(__file__).resolve().parents[2]
_IN_CODE = re.compile(r'"event":\s*"([^"]+)"|event="([^"]+)"')


def _event_names_in_code() -> dict[str, set[str]]:
    """Every event name a module of drtool/ writes (on stdout through App, or on stderr as a log record field)."""
    names: dict[str, set[str]] = {}
    for path in (REPO / "drtool").rglob("*.py"):
        for match in _IN_CODE.finditer(path.read_text()):
            names.setdefault(match.group(1) or match.group(2), set()).add(str(path.relative_to(REPO)))
    return names


def _stderr_events() -> set[str]:
    section = DOC.read_text().split("## Log records on stderr", 1)[1]
    return set(re.findall(r"^\| `([a-z_.]+)` \|", section, re.M))


def test_every_event_the_code_writes_is_documented() -> None:
    in_code = _event_names_in_code()
    assert "snapshot.started" in in_code and "result" in in_code, sorted(in_code)
    known = set(documented_events()) | _stderr_events()
    undocumented = {name: sorted(where) for name, where in in_code.items() if name not in known}
    assert not undocumented, f"add to docs/json.md: {undocumented}"


def test_every_documented_event_is_written_somewhere() -> None:
    in_code = _event_names_in_code()
    stale = sorted((set(documented_events()) | _stderr_events()) - set(in_code))
    assert not stale, f"docs/json.md lists events the code no longer writes: {stale}"


def test_one_naming_scheme() -> None:
    for name in documented_events():
        assert name == "result" or re.fullmatch(r"[a-z]+\.[a-z]+(_[a-z]+)*", name), name


def test_log_format_is_documented() -> None:
    text = DOC.read_text()
    assert "--log-format" in text and LOG_FORMAT_ENV in text
    assert f"--log-format {'|'.join(LOG_FORMATS)}" in text, "every value of --log-format, as the CLI accepts them"


def test_the_check_catches_a_broken_stream() -> None:
    def line(**fields: object) -> str:
        return json.dumps({"event": fields.pop("event"), "schema_version": SCHEMA_VERSION, "command": "x",
                           "ts": "2026-01-01T00:00:00.000+00:00", **fields})

    good = [line(event="export.started", datasets=1, bucket="b", compression="none", dry_run=False),
            line(event="result", exit_code=0, duration_seconds=0.1)]
    assert problems_of(good, code=0) == []
    assert problems_of(good, code=3) == ["result exit_code 0 but the run exited 3"]
    assert any("not in docs/json.md" in p for p in problems_of([line(event="export_summary"), good[1]], code=0))
    assert any("lacks ['bucket'" in p for p in problems_of([line(event="export.started", datasets=1), good[1]],
                                                             code=0))
    assert problems_of(good[:1], code=0) == ["no result event"]
    assert problems_of(good[:1], code=None, complete=False) == []  # a killed run
    assert any("not the last" in p for p in problems_of(good[::-1], code=0))
    assert any("2 result events" in p for p in problems_of([good[1], good[1]], code=0))
    assert any("envelope" in p for p in problems_of([json.dumps({"exit_code": 0, "event": "result"})], code=0))
    assert any("not JSON" in p for p in problems_of(["done", good[1]], code=0))


def test_emit_refuses_a_second_result() -> None:
    with pytest.raises(ValueError, match="finish_run"):
        App(json_mode=True).emit({"event": "result"})


@pytest.mark.parametrize(("args", "command", "error"), [
    (["snapshot", "create", "--no-such-option"], "snapshot create", "UsageError"),
    (["no-such-command"], None, "UsageError"),
    (["snapshots", "prune", "--keep-last", "-1"], "snapshots prune", "UsageError"),
    (["snapshots", "list"], "snapshots list", "ConfigError"),
    (["config", "check"], "config check", "UsageError"),
])
def test_usage_and_config_errors_are_one_result(args: list[str], command: str | None, error: str,
                                                tmp_path: Path) -> None:
    """Before the contract, a usage error under --json wrote nothing on stdout: a script saw an empty stream."""
    run = run_script("--json", *args, cwd=tmp_path)  # the runner validates the stream against docs/json.md
    assert run.code == 2, (run.stdout, run.stderr)
    [result] = run.json_lines()
    assert list(result)[:4] == list(ENVELOPE)
    assert result["event"] == "result" and result["exit_code"] == 2 and result["command"] == command
    assert result["error"] == error and result["message"], result


def test_help_is_not_a_run(tmp_path: Path) -> None:
    run = run_script("--json", "snapshot", "create", "--help", cwd=tmp_path)
    assert run.code == 0 and "Usage:" in run.stdout and not run.stdout.lstrip().startswith("{")
