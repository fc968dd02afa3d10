"""`--metrics-file` on every command that changes or checks state, one naming scheme, written on success and on
failure (configuration and usage errors included), the last success carried over from the previous file, and a
file that cannot be written is an error. Every file is read back with prometheus_client's parser.

The configuration cases need no server (they fail before reaching one); the success-then-failure and unwritable
cases run against the real MinIO and Postgres of the test stack.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from drtool.core.metrics import Metric, metric_prefix, render
from tests.foundation.cli_runner import make_run_cli, run_script
from tests.foundation.metrics_check import commands_with_metrics, common_metrics, parse_metrics
from tests.snapshot.conftest import SnapshotEnv, minio_env  # noqa: F401 - minio_env: fixture

# Every command that changes or checks state (issue #14), and arguments that reach its configuration.
STATEFUL = {
    "snapshot create": ["snapshot", "create"],
    "snapshots prune": ["snapshots", "prune"],
    "snapshots gc": ["snapshots", "gc"],
    "restore": ["restore", "latest"],
    "replication status": ["replication", "status"],
    "replication verify": ["replication", "verify"],
    "replication probe": ["replication", "probe"],
    "export-chunks": ["export-chunks", "--all"],
    "rebuild-index": ["rebuild-index", "--all"],
    "verify": ["verify"],
    "drill": ["drill"],
    "audit": ["audit"],
}




def test_exactly_the_stateful_commands_take_metrics_file() -> None:
    assert commands_with_metrics() == set(STATEFUL)


def test_prefix_is_derived_from_the_command_name() -> None:
    assert metric_prefix("snapshot create") == "drtool_snapshot_create"
    assert metric_prefix("export-chunks") == "drtool_export_chunks"
    assert metric_prefix("replication status") == "drtool_replication_status"


def test_render_groups_samples_and_refuses_duplicates() -> None:
    text = render([Metric("drtool_x_a", "a", 1, {"b": "1"}), Metric("drtool_x_c", "c", 2),
                   Metric("drtool_x_a", "a", 3, {"b": "2"})])
    assert text.count("# TYPE drtool_x_a") == 1
    families = {f.name: len(f.samples) for f in text_string_to_metric_families(text)}
    assert families == {"drtool_x_a": 2, "drtool_x_c": 1}
    with pytest.raises(ValueError, match="duplicate"):
        render([Metric("drtool_x_a", "a", 1), Metric("drtool_x_a", "a", 2)])


@pytest.mark.parametrize("command", sorted(STATEFUL))
def test_a_configuration_error_is_recorded(command: str, tmp_path: Path) -> None:
    """No setting at all: exit 2, and the file says so; the last success of the previous file is kept."""
    prefix = metric_prefix(command)
    path = tmp_path / "m.prom"
    path.write_text(f"# TYPE {prefix}_last_success_timestamp_seconds gauge\n"
                    f"{prefix}_last_success_timestamp_seconds 1234.5\n")
    before = time.time()
    run = run_script("--json", *STATEFUL[command], "--metrics-file", str(path), cwd=tmp_path)
    assert run.code == 2, (run.stdout, run.stderr)
    common = common_metrics(path, prefix)
    assert common["last_exit_code"] == 2
    assert before <= common["last_run_timestamp_seconds"] <= time.time()
    assert common["last_success_timestamp_seconds"] == 1234.5
    assert 0 <= common["duration_seconds"] < 60
    [result] = [e for e in run.json_lines() if e["event"] == "result"]
    assert result["error"] in ("ConfigError", "UsageError") and result["command"] == command


def test_a_usage_error_after_the_path_is_recorded(tmp_path: Path) -> None:
    path = tmp_path / "prune.prom"
    run = run_script("--json", "snapshots", "prune", "--metrics-file", str(path), "--keep-last", "-1", cwd=tmp_path)
    assert run.code == 2
    common = common_metrics(path, "drtool_snapshots_prune")
    assert common["last_exit_code"] == 2 and common["last_success_timestamp_seconds"] == 0
    assert run.json_lines()[-1]["error"] == "UsageError"


def test_a_metrics_directory_that_does_not_exist_is_refused_at_once(tmp_path: Path) -> None:
    run = run_script("-q", "snapshots", "gc", "--metrics-file", str(tmp_path / "no" / "such.prom"), cwd=tmp_path)
    assert run.code == 2 and "does not exist" in run.stderr, run.stderr


def test_success_then_failure_keeps_the_last_success(minio_env: SnapshotEnv, tmp_path: Path) -> None:  # noqa: F811
    """gc on a clean destination succeeds; the same gc with a refused key fails with 12 and keeps the success."""
    path = tmp_path / "gc.prom"
    ok = run_script("-q", "snapshots", "gc", "--metrics-file", str(path), env=minio_env.env, cwd=tmp_path)
    assert ok.code == 0, ok.stderr
    first = common_metrics(path, "drtool_snapshots_gc")
    assert first["last_exit_code"] == 0
    assert first["last_success_timestamp_seconds"] == first["last_run_timestamp_seconds"]
    assert parse_metrics(path)["drtool_snapshots_gc_removed_folders"][()] == 0
    time.sleep(0.01)
    bad = run_script("-q", "snapshots", "gc", "--metrics-file", str(path),
                 env={**minio_env.env, "DRTOOL_S3_SECRET_KEY": "wrong-secret-key", "DRTOOL_S3_MAX_ATTEMPTS": "1"},
                 cwd=tmp_path)
    assert bad.code == 12, bad.stderr
    second = common_metrics(path, "drtool_snapshots_gc")
    assert second["last_exit_code"] == 12
    assert second["last_run_timestamp_seconds"] > first["last_run_timestamp_seconds"]
    assert second["last_success_timestamp_seconds"] == first["last_success_timestamp_seconds"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "a temporary file was left behind"


def test_snapshot_create_metrics(minio_env: SnapshotEnv, tmp_path: Path) -> None:  # noqa: F811
    path = tmp_path / "snap.prom"
    run = run_script("--json", "snapshot", "create", "--metrics-file", str(path), env=minio_env.env, cwd=tmp_path)
    assert run.code == 0, run.stderr
    assert common_metrics(path, "drtool_snapshot_create")["last_exit_code"] == 0
    parsed = parse_metrics(path)
    committed = next(e for e in run.json_lines() if e["event"] == "snapshot.committed")
    assert parsed["drtool_snapshot_create_pinned_objects"][()] == committed["pinned"]
    assert parsed["drtool_snapshot_create_dangling_references"][()] == committed["dangling"]
    assert parsed["drtool_snapshot_create_written_bytes"][()] >= committed["dump_bytes"] > 0


def test_a_metrics_file_that_cannot_be_written_is_an_error(minio_env: SnapshotEnv, tmp_path: Path) -> None:  # noqa: F811
    """The command itself succeeds, the file cannot be created (/proc takes no new file): exit 1, the reason on
    stderr also with -q, and in the --json result."""
    quiet = run_script("-q", "snapshots", "gc", "--metrics-file", "/proc/drtool-test.prom", env=minio_env.env,
                   cwd=tmp_path)
    assert quiet.code == 1, quiet.stderr
    assert "cannot write the metrics file /proc/drtool-test.prom" in quiet.stderr
    loud = run_script("--json", "snapshots", "gc", "--metrics-file", "/proc/drtool-test.prom", env=minio_env.env,
                  cwd=tmp_path)
    result = loud.json_lines()[-1]
    assert loud.code == 1 and result["exit_code"] == 1 and "/proc/drtool-test.prom" in result["metrics_error"]
    assert json.loads(loud.stderr.splitlines()[-1])["event"] == "metrics.write_failed"


@pytest.mark.parametrize(("exception", "code"), [(RuntimeError("boom"), 1), (KeyboardInterrupt(), 1)])
def test_an_unexpected_exception_is_recorded(exception: BaseException, code: int, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """The last line of defence in drtool.cli.main still writes the file (and the one result event)."""
    import drtool.ops.snapshot.destination

    def explode(*_args: object, **_kwargs: object) -> None:
        raise exception

    for key in [k for k in os.environ if k.startswith("DRTOOL_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("DRTOOL_SNAPSHOT_BUCKET", "b")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(drtool.ops.snapshot.destination, "open_destination", explode)
    path = tmp_path / "gc.prom"
    run_cli = make_run_cli(capsys)
    exit_code, events = run_cli("snapshots", "gc", "--metrics-file", str(path))
    assert exit_code == code
    assert common_metrics(path, "drtool_snapshots_gc")["last_exit_code"] == code
    assert [e["event"] for e in events] == ["result"] and events[0]["exit_code"] == code


def test_a_group_alias_writes_the_same_metrics(tmp_path: Path) -> None:
    """`snapshot prune` is `snapshots prune`: one series of metrics and one `command`, whichever was typed."""
    path = tmp_path / "prune.prom"
    run = run_script("--json", "snapshot", "prune", "--metrics-file", str(path), cwd=tmp_path)
    assert run.code == 2 and run.json_lines()[-1]["command"] == "snapshots prune"
    assert common_metrics(path, "drtool_snapshots_prune")["last_exit_code"] == 2
