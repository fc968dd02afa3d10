"""Values from data never reach a terminal as control sequences.

A Dify user chooses the names of the files they upload, so an `upload_files.key` can hold ESC sequences (clear the
screen, paint a green "no break"), an OSC-8 hyperlink, a right-to-left override or a CR; anyone who can write the
snapshot bucket can write a lock object whose holder does the same. The real `drtool`, as cron and an operator run
it (pipes, and a real pseudo-terminal), against a real Postgres and a real MinIO: human output shows every such
character as a visible escape, JSON output gives the exact original back, and a key MinIO refuses (400) is a
break that verify reports (exit 4), not a crash (exit 1).
"""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
import threading
import tty
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.export.helpers import drtool_env, new_bucket_on
from tests.helpers.cli import clean_env
from tests.security.conftest import ProcessRun, run_module

# Written out here rather than imported from drtool.core.terminal: the test must not trust the code it checks.
# C0 but LF and TAB, DEL, C1, bidi marks, embeddings, overrides and isolates, zero-width, line separators.
RAW_DANGER = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")

SCREEN = "upload_files/t/\x1b[2J\x1b[H\x1b[32mverify: no break in 2 dataset(s)\x1b[0m.pdf"
OSC8 = "upload_files/t/\x1b]8;;http://evil.example/\x1b\\report.pdf\x1b]8;;\x1b\\"
BIDI_CR = "upload_files/t/invoice\u202efdp.exe\rverify: no break"
NEWLINE = "upload_files/t/x.pdf\nverify: no break in 2 dataset(s)"
REFUSED = "upload_files/t/../\x1b[8mhidden\x1b[28m.pdf"  # `..` makes MinIO answer 400 (Bad Request)
HOSTILE_KEYS = (SCREEN, OSC8, BIDI_CR, NEWLINE, REFUSED)  # 5 = verify's examples per kind: all are shown
REFUSED_BY_MINIO = {OSC8, REFUSED}  # a `..` or `//` (http://) path segment: 400; the others are merely missing


def on_terminal(*args: str, env: dict[str, str], cwd: Path, timeout: float = 300) -> tuple[int, str]:
    """drtool with stdout and stderr on a real pseudo-terminal, as an operator sees it (isatty() is true, so the
    human log formatter runs). Raw mode: the terminal adds no CR of its own, so any CR seen came from drtool."""
    base = clean_env(env)
    master, slave = pty.openpty()
    tty.setraw(slave)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "drtool", *args], env=base, cwd=cwd,
                                stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    finally:
        os.close(slave)
    received: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer of the terminal is gone
                return
            if not data:
                return
            received.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        code = proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
        reader.join(timeout=30)
        os.close(master)
    return code, b"".join(received).decode("utf-8", errors="replace")


# What drtool's own progress bar (rich) writes on a terminal: colours (SGR), cursor hide/show, carriage return then
# erase line, cursor up. Removed before the scan; the hostile keys' own SGR sequences are checked to be absent raw
# separately, and a CR from data is never followed by an erase-line (the keys are escaped whole).
BAR_SEQUENCES = re.compile(r"\r\x1b\[2K|\x1b\[[0-9;]*m|\x1b\[\?25[lh]|\x1b\[2K|\x1b\[1A")


def raw_controls(text: str) -> list[str]:
    return sorted({f"U+{ord(m.group()):04X}" for m in RAW_DANGER.finditer(text)})


def raw_controls_besides_the_bar(screen: str) -> list[str]:
    """raw_controls of a terminal screen, once drtool's own progress-bar sequences are taken out; the data's SGR
    sequences (which look alike) must not be there raw at all."""
    assert "\x1b[32mverify" not in screen and "\x1b[8mhidden" not in screen and "\x1b[0m.pdf" not in screen
    return raw_controls(BAR_SEQUENCES.sub("", screen))


def _hostile_world(pg: Any, dify_db_factory: Callable[..., Any], minio_pair: Any) -> tuple[dict[str, str], Any]:
    """A seeded Dify database whose files are all in the bucket, plus one upload_files row per hostile key."""
    db = dify_db_factory()
    bucket = new_bucket_on(minio_pair.a)
    for key, data in db.seed.files.items():
        bucket.client.put_object(Bucket=bucket.name, Key=key, Body=data)
    with db.connect() as conn:
        for key in HOSTILE_KEYS:
            conn.execute(
                "INSERT INTO upload_files (tenant_id, storage_type, key, name, size, extension, created_by) "
                "SELECT tenant_id, 's3', %s, 'x.pdf', 1, 'pdf', created_by FROM upload_files LIMIT 1", (key,))
        conn.commit()
    return drtool_env(pg, db.dbname, bucket), db


def test_verify_shows_hostile_keys_escaped_and_reports_them_as_breaks(
        pg: Any, dify_db_factory: Callable[..., Any], minio_pair: Any, tmp_path: Path) -> None:
    env, _db = _hostile_world(pg, dify_db_factory, minio_pair)

    cron = run_module("verify", "--skip-vectors", env=env, cwd=tmp_path)  # stdout and stderr are pipes
    assert cron.code == 4, cron.stderr  # a break, not an error: the refused key did not stop the run
    assert raw_controls(cron.stdout) == [] and raw_controls(cron.stderr) == []
    assert "missing_object (5)" in cron.stdout
    shown = cron.stdout
    assert "\\x1b[2J\\x1b[H\\x1b[32mverify: no break in 2 dataset(s)\\x1b[0m.pdf" in shown
    assert "\\x1b]8;;http://evil.example/\\x1b\\report.pdf\\x1b]8;;\\x1b\\" in shown
    assert "invoice\\u202efdp.exe\\x0dverify: no break" in shown
    assert "x.pdf\\x0averify: no break in 2 dataset(s)" in shown
    assert "the object store refused the key (400: Bad Request)" in shown
    # no value from data starts a line of the report: the only verdict line is drtool's own
    assert not [line for line in shown.splitlines() if line.startswith("verify")]

    code, screen = on_terminal("-v", "verify", "--skip-vectors", env=env, cwd=tmp_path)
    assert code == 4, screen
    assert raw_controls_besides_the_bar(screen) == [], screen
    assert "missing_object (5)" in screen and "\\x1b[32mverify: no break" in screen


def test_verify_json_keeps_the_exact_hostile_keys(pg: Any, dify_db_factory: Callable[..., Any], minio_pair: Any,
                                                  tmp_path: Path) -> None:
    env, _db = _hostile_world(pg, dify_db_factory, minio_pair)
    run = run_module("--json", "verify", "--skip-vectors", env=env, cwd=tmp_path)
    assert run.code == 4, run.stderr
    assert run.stdout.isascii() and run.stderr.isascii()  # controls, bidi and all non-ASCII as \uNNNN
    summary = next(e for e in run.events() if e.get("event") == "result")
    assert summary["exit_code"] == 4 and summary["counts"] == {"missing_object": 5}
    examples = summary["examples"]["missing_object"]
    assert {e["key"] for e in examples} == set(HOSTILE_KEYS)  # byte for byte what the row holds
    refused = {e["key"]: e["problem"] for e in examples if "problem" in e}
    assert set(refused) == REFUSED_BY_MINIO
    assert all(problem.startswith("the object store refused the key (400") for problem in refused.values())
    files = next(e for e in run.events() if e.get("event") == "verify.files")
    assert files["missing"] == 5


HOLDER = "snapshot create\x1b[2J\x1b[32m\u202eok\r\nerror: fake"
HOST = "elsewhere\x1b[8m-concealed\x1b]8;;http://evil.example/\x1b\\"


def test_a_hostile_lock_holder_reaches_the_terminal_escaped(pg: Any, dify_db_factory: Callable[..., Any],
                                                            minio_pair: Any, tmp_path: Path) -> None:
    db = dify_db_factory(seed=False)
    bucket = new_bucket_on(minio_pair.a)
    lock = {"holder": HOLDER, "host": HOST, "pid": 4242, "started_at": datetime.now(UTC).isoformat(),
            "token": uuid.uuid4().hex}
    bucket.client.put_object(Bucket=bucket.name, Key="drtool/locks/export-chunks.lock", Body=json.dumps(lock))
    env = drtool_env(pg, db.dbname, bucket)

    code, screen = on_terminal("export-chunks", "--all", env=env, cwd=tmp_path)
    assert code == 11, screen
    assert raw_controls(screen) == [], screen
    assert "snapshot create\\x1b[2J\\x1b[32m\\u202eok\\x0d\\x0aerror: fake" in screen
    assert "elsewhere\\x1b[8m-concealed\\x1b]8;;http://evil.example/\\x1b\\" in screen
    assert not [line for line in screen.splitlines() if line.startswith("error: fake")]

    cron: ProcessRun = run_module("--json", "export-chunks", "--all", env=env, cwd=tmp_path)
    assert cron.code == 11
    assert cron.stdout.isascii() and cron.stderr.isascii()
    error = next(e for e in cron.events() if e.get("event") == "result")
    assert error["exit_code"] == 11 and "\\x1b[2J" in error["message"]
    assert all(json.loads(line)["level"] for line in cron.stderr.splitlines())  # JSON lines off a terminal
