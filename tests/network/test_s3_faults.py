"""Network faults between drtool and the object store (MinIO behind toxiproxy): snapshot create and restore.

Each test either lets the fault clear within the command's retry budget (the command then succeeds and its
result is checked against the real stores), or keeps it and checks the exit code, a message that names the
object store and says what to do, that nothing half-written became visible, and that the next run succeeds.
"""

from __future__ import annotations

import psycopg

from tests.network.conftest import SnapshotNet
from tests.snapshot.conftest import new_bucket
from tests.stack.ports import free_port_containing
from tests.stack.toxiproxy import Toxiproxy


def _restore_and_check(s: SnapshotNet, sid: str, dbname: str) -> None:
    target = new_bucket(s.client)
    restored = s.run("restore", sid, "--target-db", dbname, "--objects-to", target, "--json")
    assert restored.code == 0, restored.stderr
    for key, body in s.files.items():
        if not key.startswith("website_files/"):
            assert s.client.get_object(Bucket=target, Key=key)["Body"].read() == body
    with psycopg.connect(s.pg.dsn(dbname)) as conn:
        assert conn.execute("SELECT count(*) FROM upload_files").fetchone()[0] > 0


def _assert_unavailable(run: object, s: SnapshotNet) -> None:
    """Exit 1, one message naming the object store and its endpoint, a hint, no traceback."""
    assert run.code == 1, run.stderr
    assert run.no_traceback, run.stderr
    assert "object store" in run.stderr and s.proxy.listen in run.stderr, run.stderr


def test_latency_and_bandwidth_cap_snapshot_and_restore_succeed(snap: SnapshotNet, new_database) -> None:
    snap.proxy.latency(60, jitter_ms=20)
    snap.proxy.latency(20, stream="upstream")
    snap.proxy.bandwidth(256)  # KB/s, answers
    snap.proxy.bandwidth(256, stream="upstream")  # and uploads
    created = snap.run("snapshot", "create", "--json")
    assert created.code == 0, created.stderr
    [sid] = snap.committed()
    _restore_and_check(snap, sid, new_database())


def test_resets_that_clear_within_budget(snap: SnapshotNet, new_database) -> None:
    """Every connection is reset for 1 s, during the snapshot and then during the restore: drtool's backoff
    (0.5, 1, 2 s with 4 tries here) outlasts it and both complete."""
    toxic = snap.proxy.reset_peer()
    snap.proxy.later(1.0, snap.proxy.remove_toxic, toxic)
    created = snap.run("snapshot", "create", "--json")
    assert created.code == 0, created.stderr
    [sid] = snap.committed()
    toxic = snap.proxy.reset_peer()
    snap.proxy.later(1.0, snap.proxy.remove_toxic, toxic)
    _restore_and_check(snap, sid, new_database())


def test_stall_that_clears_within_budget(snap: SnapshotNet) -> None:
    """The server accepts connections but answers nothing for 2.5 s: read timeouts, retries, success."""
    toxic = snap.proxy.blackhole()
    snap.proxy.later(2.5, snap.proxy.remove_toxic, toxic)
    created = snap.run("snapshot", "create", "--json")
    assert created.code == 0, created.stderr
    assert len(snap.committed()) == 1


def test_server_stops_answering_fails_then_next_run_succeeds(snap: SnapshotNet) -> None:
    snap.proxy.blackhole()
    failed = snap.run("snapshot", "create", extra={"DRTOOL_S3_MAX_ATTEMPTS": "3"})
    _assert_unavailable(failed, snap)
    assert "s3.read_timeout" in failed.stderr or "network" in failed.stderr
    assert snap.committed() == []
    snap.proxy.clear()
    again = snap.run("snapshot", "create", "--json")
    assert again.code == 0, again.stderr
    assert len(snap.committed()) == 1


def test_connection_refused_fails_fast_then_next_run_succeeds(snap: SnapshotNet) -> None:
    snap.proxy.disable()
    failed = snap.run("snapshot", "create")
    _assert_unavailable(failed, snap)
    assert snap.committed() == []
    snap.proxy.enable()
    again = snap.run("snapshot", "create", "--json")
    assert again.code == 0, again.stderr


def test_restore_download_cut_mid_transfer(snap: SnapshotNet, new_database) -> None:
    """Every connection is closed after 2 KB of answer: the dump download is cut mid-body."""
    created = snap.run("snapshot", "create", "--json")
    assert created.code == 0, created.stderr
    [sid] = snap.committed()
    dbname = new_database()
    target = new_bucket(snap.client)
    snap.proxy.limit_data(2048)
    failed = snap.run("restore", sid, "--target-db", dbname, "--objects-to", target)
    _assert_unavailable(failed, snap)
    snap.proxy.clear()
    _restore_and_check(snap, sid, dbname)


def test_unreachable_endpoint_whose_port_contains_404_is_not_a_missing_bucket(snap: SnapshotNet,
                                                                             toxiproxy: Toxiproxy) -> None:
    """Found by these tests: `"404" in str(exc)` took a refused connection to http://127.0.0.1:404xx for a
    missing bucket (exit 10 "does not exist"). Unreachable is exit 1."""
    proxy = toxiproxy.proxy("minio_a_404", snap.proxy.upstream, port=free_port_containing("404"))
    proxy.disable()
    failed = snap.run("snapshot", "create", extra={"DRTOOL_S3_ENDPOINT": proxy.url()})
    assert failed.code == 1, failed.stderr
    assert "does not exist" not in failed.stderr and proxy.listen in failed.stderr, failed.stderr
    assert snap.committed() == []

