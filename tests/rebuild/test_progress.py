"""Progress off a terminal: a rebuild run by cron or in Kubernetes logs a life sign every DRTOOL_PROGRESS_SECONDS
(30 by default) on stderr, counting chunks stored (not bytes read, which run ahead of embedding), numbering
datasets out of all the run will do (`[2/2]`, never `[2/1]` with --all), and nothing of it with -q or on stdout.
Real SeaweedFS, Milvus Lite and the embedding server."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from drtool.cli.main import run
from tests.rebuild.conftest import ChunkBucket, make_chunks


def _run_logged(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, list[dict[str, Any]]]:
    capsys.readouterr()
    code = run(list(args))
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.err.splitlines() if line.startswith("{")]
    return code, captured.out, records


def test_progress_lines_count_chunks_stored_across_all_datasets(rebuild_env: dict[str, str],
                                                                 chunk_bucket: ChunkBucket,
                                                                 capsys: pytest.CaptureFixture[str],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRTOOL_PROGRESS_SECONDS", "0")
    monkeypatch.setenv("DRTOOL_REBUILD_BATCH_SIZE", "16")
    sizes = {}
    for n in (40, 24):
        ds = str(uuid.uuid4())
        chunk_bucket.put_chunks(ds, make_chunks(ds, n))
        sizes[ds] = n
    code, out, records = _run_logged(capsys, "--log-format", "json", "rebuild-index", "--all")
    assert code == 0, records[-5:]
    assert out.strip(), "the summary still goes to stdout"
    progress = [r for r in records if r.get("event") == "rebuild.progress"]
    assert progress, records
    assert all(r["level"] == "info" for r in progress)
    labels = {r["message"].split("]")[0].split("[")[1] for r in progress}
    assert labels == {"1/2", "2/2"}, labels
    finals: dict[str, int] = {}
    for r in progress:
        stored, estimate = r["chunks_stored"], r["chunks_estimated"]
        assert estimate is None or stored <= estimate, r
        assert r["chunks_stored"] >= finals.get(r["dataset"], 0), "chunks stored never go back"
        finals[r["dataset"]] = stored
    assert finals == sizes  # the last line of each dataset: every chunk stored

    quiet_code, _out, quiet_records = _run_logged(capsys, "-q", "--log-format", "json", "rebuild-index", "--all",
                                           "--force")
    assert quiet_code == 0
    assert not [r for r in quiet_records if r.get("event") == "rebuild.progress"]


def test_the_terminal_bar_numbers_datasets_and_keeps_warnings_on_their_own_line(
        rebuild_env: dict[str, str], chunk_bucket: ChunkBucket, tmp_path: Any) -> None:
    """The rich bar on a real pseudo-terminal: `[2/2]` with --all, and a warning printed while it runs (a rejected
    line) starts a line of its own instead of being glued onto the bar."""
    import os
    import pty
    import subprocess
    import sys

    for n in (30, 20):
        ds = str(uuid.uuid4())
        data = make_chunks(ds, n)
        data.insert(5, {"id": "", "text": "no id", "dataset_id": ds, "document_id": "d"})  # rejected: warns
        chunk_bucket.put_chunks(ds, data)
    primary, secondary = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "drtool", "rebuild-index", "--all", "--max-rejects", "1"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=secondary, cwd=tmp_path,
                            env={**os.environ, "COLUMNS": "160", "TERM": "xterm"})
    os.close(secondary)
    chunks = []
    while True:
        try:
            data = os.read(primary, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    code = proc.wait(timeout=300)
    os.close(primary)
    screen = b"".join(chunks).decode(errors="replace")
    assert code == 3, screen[-3000:]  # done, with one line skipped per dataset
    assert "[1/2]" in screen and "[2/2]" in screen and "[2/1]" not in screen, screen[-3000:]
    import re

    warnings = [re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", line) for line in screen.replace("\r", "\n").splitlines()
                if "rejected s3://" in line]
    assert len(warnings) == 2, warnings
    for line in warnings:
        assert line.startswith("warning: rejected"), f"a warning glued onto the bar: {line!r}"
