"""Cron behaviour, warnings, dangling references, unversioned buckets, prune, version mismatch on restore."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import psycopg
import pytest

from tests.foundation.metrics_check import parse_metrics
from tests.snapshot.conftest import SnapshotEnv, snapshot_env_on
from tests.stack.dify_db import DifyDatabase
from tests.stack.minio_sites import MinioSites
from tests.stack.pg_server import PostgresServer

pytestmark = pytest.mark.own_servers("minio_pair")  # --require-replication judges every bucket of the pair


@pytest.fixture
def own_pair_snapshot_env(own_minio_pair: MinioSites, dify_db: DifyDatabase, pg: PostgresServer) -> SnapshotEnv:
    """minio_env on a pair of this module's own: --require-replication's verdict covers every bucket of the pair,
    and buckets other modules made around a site restart (one missing on a site for a while) would decide it."""
    return snapshot_env_on(own_minio_pair, dify_db, pg)


def test_json_events_and_metrics_file(own_pair_snapshot_env: SnapshotEnv, tmp_path) -> None:
    e = own_pair_snapshot_env
    metrics = tmp_path / "drtool_snapshot_create.prom"
    run = e.run("snapshot", "create", "--json", "--metrics-file", str(metrics))
    assert run.code == 0, run.stderr
    kinds = [ev["event"] for ev in run.events()]
    assert kinds == ["snapshot.started", "snapshot.dumped", "snapshot.committed", "result"]
    assert {ev["command"] for ev in run.events()} == {"snapshot create"}
    parsed = parse_metrics(metrics)  # prometheus_client's parser
    assert parsed["drtool_snapshot_create_last_exit_code"][()] == 0
    assert parsed["drtool_snapshot_create_pinned_objects"][()] == len(e.files) - 1
    success = parsed["drtool_snapshot_create_last_success_timestamp_seconds"][()]
    assert success == parsed["drtool_snapshot_create_last_run_timestamp_seconds"][()]
    # A failed run keeps the last success time and records the failure.
    bad = e.run("snapshot", "create", "--metrics-file", str(metrics),
                extra_env={"DRTOOL_POSTGRES_PASSWORD": "wrong-password"})
    assert bad.code == 12
    parsed = parse_metrics(metrics)
    assert parsed["drtool_snapshot_create_last_success_timestamp_seconds"][()] == success
    assert parsed["drtool_snapshot_create_last_exit_code"][()] == 12
    assert parsed["drtool_snapshot_create_last_run_timestamp_seconds"][()] > success
    verbose = e.run("snapshot", "create", "-v")
    assert verbose.code == 0 and "committed" in verbose.stdout + verbose.stderr


def test_dangling_reference_reported_exit_3(own_pair_snapshot_env: SnapshotEnv) -> None:
    e = own_pair_snapshot_env
    key = next(k for k in e.files if k.startswith("upload_files/"))
    e.client.delete_object(Bucket=e.source_bucket, Key=key)  # a delete marker: the row now points at nothing
    with psycopg.connect(e.db.dsn, autocommit=True) as conn:
        conn.execute("UPDATE tool_files SET file_key = '../../etc/passwd'")  # a hostile row
    run = e.run("snapshot", "create", "--json")
    assert run.code == 3, run.stderr
    assert "1 referenced key(s) had no object version at the fence" in run.stderr
    assert "refused" in run.stderr
    result = run.result()
    assert result["counts"]["dangling"] == 1 and result["counts"]["refused"] == 1
    assert e.run("snapshots", "list", "--json").result()["snapshots"][0]["dangling"] == 1


def test_lifecycle_rule_shorter_than_retention_warns(own_pair_snapshot_env: SnapshotEnv) -> None:
    e = own_pair_snapshot_env
    e.client.put_bucket_lifecycle_configuration(Bucket=e.source_bucket, LifecycleConfiguration={"Rules": [{
        "ID": "expire-old-versions", "Status": "Enabled", "Filter": {"Prefix": ""},
        "NoncurrentVersionExpiration": {"NoncurrentDays": 3}}]})
    run = e.run("snapshot", "create")
    assert run.code == 3
    assert "lifecycle rule 'expire-old-versions'" in run.stderr and "after 3 days" in run.stderr
    ok = e.run("snapshot", "create", extra_env={"DRTOOL_SNAPSHOT_KEEP_DAILY": "2", "DRTOOL_SNAPSHOT_KEEP_WEEKLY": "0",
                                                "DRTOOL_SNAPSHOT_KEEP_MONTHLY": "0"})
    assert ok.code == 0, ok.stderr


def _forge_sid(e: SnapshotEnv, sid: str, when: datetime) -> str:
    """Copy a committed snapshot under an older id (prune needs snapshots spread over days)."""
    new = when.strftime("%Y%m%dT%H%M%SZ") + "-" + sid.rsplit("-", 1)[1]
    for key in e.keys(e.dest_bucket, f"drtool/snapshots/{sid}/"):
        name = key.rsplit("/", 1)[1]
        body = e.client.get_object(Bucket=e.dest_bucket, Key=key)["Body"].read()
        if name == "meta.json":
            meta = json.loads(body)
            meta["id"], meta["fence"] = new, when.isoformat()
            body = json.dumps(meta).encode()
        e.client.put_object(Bucket=e.dest_bucket, Key=f"drtool/snapshots/{new}/{name}", Body=body)
    _reseal_current(e, new)
    return new


def _reseal_current(e: SnapshotEnv, sid: str) -> None:
    """Rewrite SHA256SUMS and COMMITTED to match the folder's current artifacts."""
    folder = f"drtool/snapshots/{sid}/"
    sums = {}
    for key in e.keys(e.dest_bucket, folder):
        name = key.rsplit("/", 1)[1]
        if name not in ("SHA256SUMS", "COMMITTED", "verified.json"):
            sums[name] = hashlib.sha256(e.client.get_object(Bucket=e.dest_bucket, Key=key)["Body"].read()).hexdigest()
    data = "".join(f"{d}  {n}\n" for n, d in sorted(sums.items())).encode()
    e.client.put_object(Bucket=e.dest_bucket, Key=folder + "SHA256SUMS", Body=data)
    e.client.put_object(Bucket=e.dest_bucket, Key=folder + "COMMITTED", Body=json.dumps(
        {"snapshot": sid, "committed_at": datetime.now(UTC).isoformat(),
         "sha256sums": hashlib.sha256(data).hexdigest()}).encode())


def test_prune_dry_run_then_real(own_pair_snapshot_env: SnapshotEnv) -> None:
    e = own_pair_snapshot_env
    run = e.run("snapshot", "create", "--json")
    assert run.code == 0, run.stderr
    sid = run.result()["snapshot"]
    days = [datetime(2026, 11, d, 3, 0, tzinfo=UTC) for d in (1, 2, 3, 9, 20, 21)]
    old = [_forge_sid(e, sid, d) for d in days]
    assert len(e.run("snapshots", "list", "--json").result()["snapshots"]) == 7
    args = ("snapshots", "prune", "--keep-last", "1", "--keep-daily", "2", "--keep-weekly", "2", "--keep-monthly", "0")
    dry = e.run(*args, "--dry-run", "--json")
    assert dry.code == 0, dry.stderr
    plan = dry.result()
    assert sid in plan["keep"] and "newest" in plan["keep"][sid]
    assert len(e.run("snapshots", "list", "--json").result()["snapshots"]) == 7  # dry run deleted nothing
    real = e.run(*args, "--json")
    assert real.code == 0 and real.result()["removed"] == plan["remove"]
    left = [s["id"] for s in e.run("snapshots", "list", "--json").result()["snapshots"]]
    assert left == [s for s in [sid, *reversed(old)] if s in plan["keep"]]
    assert set(plan["remove"]) and not set(plan["remove"]) & set(left)
    zero = e.run("snapshots", "prune", "--keep-last", "0", "--keep-daily", "0", "--keep-weekly", "0",
                 "--keep-monthly", "0", "--json")
    assert zero.code == 0 and [s["id"] for s in e.run("snapshots", "list", "--json").result()["snapshots"]] == [sid]


def test_restore_into_older_major_refused(own_pair_snapshot_env: SnapshotEnv, new_database) -> None:
    e = own_pair_snapshot_env
    run = e.run("snapshot", "create", "--json")
    sid = run.result()["snapshot"]
    key = f"drtool/snapshots/{sid}/meta.json"
    meta = json.loads(e.client.get_object(Bucket=e.dest_bucket, Key=key)["Body"].read())
    meta["database"].update(server_version="16.4", server_version_num=160004, pg_dump_major=16)
    e.client.put_object(Bucket=e.dest_bucket, Key=key, Body=json.dumps(meta).encode())
    tampered = e.run("restore", sid, "--target-db", new_database(), "--no-objects")
    assert tampered.code == 4 and "meta.json checksum mismatch" in tampered.stderr
    _reseal_current(e, sid)  # as if a PostgreSQL 16 server had written it
    dbname = new_database()
    r = e.run("restore", sid, "--target-db", dbname, "--no-objects")
    assert r.code == 2, r.stderr
    assert "PostgreSQL 16.4" in r.stderr and "PostgreSQL 15" in r.stderr


def test_second_site_env_helper_is_consistent(own_pair_snapshot_env: SnapshotEnv) -> None:
    """The snapshot destination may live under another prefix; list only sees its own."""
    e = own_pair_snapshot_env
    assert e.run("snapshot", "create", "--dest-prefix", "nightly/db").code == 0
    assert e.keys(e.dest_bucket, "nightly/db/snapshots/")
    assert e.run("snapshots", "list", "--json").result()["snapshots"] == []
    assert len(e.run("snapshots", "list", "--dest-prefix", "nightly/db", "--json").result()["snapshots"]) == 1


def test_require_replication(own_pair_snapshot_env: SnapshotEnv, own_minio_pair) -> None:
    """The verdict comes from `drtool replication` (drtool.ops.replication.summary.replication_summary)."""
    import socket

    e = own_pair_snapshot_env
    sites = f"a={own_minio_pair.a.endpoint},b={own_minio_pair.b.endpoint}"
    # Old failed versions other modules' outages left on the shared pair would make the verdict CRITICAL; here
    # they may only warn (a year of max_failed_age): the test is about the gate, the dead site below.
    ok = e.run("snapshot", "create", "--require-replication", "--json",
               extra_env={"DRTOOL_REPLICATION_SITES": sites, "DRTOOL_REPLICATION_MAX_FAILED_AGE": "31536000"})
    assert ok.code == 0, ok.stderr
    sid = ok.result()["snapshot"]
    meta = json.loads(e.client.get_object(Bucket=e.dest_bucket, Key=f"drtool/snapshots/{sid}/meta.json")["Body"]
                      .read())
    assert meta["replication"]["verdict"] in ("OK", "WARNING")  # WARNING: queued objects from other tests
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    bad = e.run("snapshot", "create", "--require-replication",
                extra_env={"DRTOOL_REPLICATION_SITES": f"a={own_minio_pair.a.endpoint},b=http://127.0.0.1:{dead}",
                           "DRTOOL_REPLICATION_TIMEOUT": "3"})
    assert bad.code == 4, bad.stderr
    assert "replication verdict is CRITICAL" in bad.stderr and "did not answer" in bad.stderr
    assert len(e.run("snapshots", "list", "--json").result()["snapshots"]) == 1  # nothing new committed


def test_table_filter_dumps_only_that_table(own_pair_snapshot_env: SnapshotEnv, new_database) -> None:
    e = own_pair_snapshot_env
    run = e.run("snapshot", "create", "--table", "public.upload_files", "--json")
    assert run.code == 0, run.stderr
    dbname = new_database()
    r = e.run("restore", run.result()["snapshot"], "--target-db", dbname, "--no-objects", "--no-owner")
    assert r.code == 0, r.stderr
    with psycopg.connect(e.pg.dsn(dbname)) as conn:
        tables = {t for (t,) in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert tables == {"upload_files"}


def test_schema_filter_dumps_only_that_schema(own_pair_snapshot_env: SnapshotEnv, new_database) -> None:
    e = own_pair_snapshot_env
    with psycopg.connect(e.db.dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA audit")
        conn.execute("CREATE TABLE audit.events (id int PRIMARY KEY, what text)")
        conn.execute("INSERT INTO audit.events VALUES (1, 'login'), (2, 'logout')")
    run = e.run("snapshot", "create", "--schema", "audit", "--json")
    assert run.code == 0, run.stderr
    pinnable = [k for k in e.files if not k.startswith("website_files/")]  # fill_source adds one unreferenced key
    assert run.result()["counts"]["pinned"] == len(pinnable)  # referenced keys are pinned whatever the dump's scope
    dbname = new_database()
    r = e.run("restore", run.result()["snapshot"], "--target-db", dbname, "--no-objects", "--no-owner")
    assert r.code == 0, r.stderr
    with psycopg.connect(e.pg.dsn(dbname)) as conn:
        tables = {f"{s}.{t}" for (s, t) in conn.execute(
            "SELECT schemaname, tablename FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')")}
        rows = conn.execute("SELECT what FROM audit.events ORDER BY id").fetchall()
    assert tables == {"audit.events"}
    assert rows == [("login",), ("logout",)]
