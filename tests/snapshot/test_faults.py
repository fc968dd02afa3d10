"""Each fault of issue 3 against the real servers: the message, the exit code, and stores left as they were."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from drtool.ops.lock import here
from tests.snapshot.conftest import SnapshotEnv, new_bucket
from tests.stack.minio_sites import MinioSites


def _snapshot_ids(e: SnapshotEnv) -> list[str]:
    return sorted({k.split("/")[2] for k in e.keys(e.dest_bucket, "drtool/snapshots/")})


def test_wrong_postgres_password_exit_12_nothing_written(minio_env: SnapshotEnv) -> None:
    e = minio_env
    run = e.run("snapshot", "create", extra_env={"DRTOOL_POSTGRES_PASSWORD": "not-the-password"})
    assert run.code == 12, run.stderr
    assert "authentication failed" in run.stderr and "not-the-password" not in run.stderr + run.stdout
    assert e.keys(e.dest_bucket) == []  # no folder, and the lock was released


def test_postgres_unreachable_names_server(minio_env: SnapshotEnv) -> None:
    e = minio_env
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = e.run("snapshot", "create", extra_env={"DRTOOL_POSTGRES_PORT": str(port)})
    assert run.code == 1, run.stderr
    assert f"127.0.0.1:{port}" in run.stderr and "cannot connect" in run.stderr
    assert e.keys(e.dest_bucket) == []


def test_missing_buckets_exit_10(minio_env: SnapshotEnv) -> None:
    e = minio_env
    run = e.run("snapshot", "create", extra_env={"DRTOOL_SNAPSHOT_BUCKET": "no-such-bucket-x1"})
    assert run.code == 10, run.stderr
    assert "snapshot bucket no-such-bucket-x1 does not exist" in run.stderr
    run = e.run("snapshot", "create", extra_env={"DRTOOL_S3_BUCKET": "no-such-bucket-x2"})
    assert run.code == 10, run.stderr
    assert "no-such-bucket-x2" in run.stderr
    assert e.keys(e.dest_bucket) == []


def test_access_denied_exit_12(minio_env: SnapshotEnv, minio_pair: MinioSites) -> None:
    """A real MinIO user with the built-in readonly policy: it can read the source but not write snapshots."""
    e = minio_env
    user, secret = f"ro{os.getpid()}", "readonly-secret-123"
    minio_pair.mc("admin", "user", "add", minio_pair.a.alias, user, secret)
    minio_pair.mc("admin", "policy", "attach", minio_pair.a.alias, "readonly", "--user", user)
    try:
        run = e.run("snapshot", "create", extra_env={"DRTOOL_S3_ACCESS_KEY": user, "DRTOOL_S3_SECRET_KEY": secret})
        assert run.code == 12, run.stderr
        assert "access refused" in run.stderr and secret not in run.stderr
        wrong = e.run("snapshot", "create", extra_env={"DRTOOL_S3_SECRET_KEY": "wrong-secret-key"})
        assert wrong.code == 12, wrong.stderr
    finally:
        minio_pair.mc("admin", "user", "remove", minio_pair.a.alias, user, check=False)
    assert e.keys(e.dest_bucket) == []


def test_lock_held_exit_11(minio_env: SnapshotEnv) -> None:
    e = minio_env
    place = here()  # a live holder in this very host, boot and PID namespace: its pid check is believed
    held = {"holder": "snapshot create", "host": socket.gethostname(), "pid": os.getpid(),
            "started_at": datetime.now(UTC).isoformat(), "token": "t", "boot_id": place.boot_id,
            "pid_ns": place.pid_ns}
    e.client.put_object(Bucket=e.dest_bucket, Key="drtool/locks/snapshots.lock", Body=json.dumps(held).encode())
    run = e.run("snapshot", "create")
    assert run.code == 11, run.stderr
    assert f"pid {os.getpid()}" in run.stderr and "stale" not in run.stderr
    assert _snapshot_ids(e) == []
    unlock = e.run("snapshots", "unlock")  # a live holder is not removed without --force
    assert unlock.code == 2 and "does not look stale" in unlock.stderr
    assert e.run("snapshot", "create", "--break-stale-lock").code == 11  # nor replaced: it is not stale
    # the lock is still there, untouched
    assert json.loads(e.client.get_object(Bucket=e.dest_bucket, Key="drtool/locks/snapshots.lock")["Body"].read())
    forced = e.run("snapshots", "unlock", "--force", "--json")
    assert forced.code == 0 and f"pid {os.getpid()}" in forced.result()["holder"]
    assert e.run("snapshot", "create").code == 0


def test_lock_of_another_host_needs_the_explicit_flag(minio_env: SnapshotEnv) -> None:
    """drtool cannot tell whether a run on another host is alive: it reports, and replaces only when told."""
    e = minio_env
    key = "drtool/locks/snapshots.lock"
    young = {"holder": "snapshot create", "host": "other-host.example", "pid": 1,
             "started_at": datetime.now(UTC).isoformat(), "token": "t1"}
    e.client.put_object(Bucket=e.dest_bucket, Key=key, Body=json.dumps(young).encode())
    run = e.run("snapshot", "create", "--break-stale-lock")
    assert run.code == 11 and "other-host.example" in run.stderr and "stale" not in run.stderr

    old = dict(young, started_at=(datetime.now(UTC) - timedelta(hours=7)).isoformat(), token="t2")
    e.client.put_object(Bucket=e.dest_bucket, Key=key, Body=json.dumps(old).encode())
    run = e.run("snapshot", "create")
    assert run.code == 11 and "a stale lock blocks this run" in run.stderr
    assert "lock_stale_after" in run.stderr and "--break-stale-lock" in run.stderr
    assert _snapshot_ids(e) == []
    assert json.loads(e.client.get_object(Bucket=e.dest_bucket, Key=key)["Body"].read())["token"] == "t2"
    ok = e.run("snapshot", "create", "--json", "--break-stale-lock")
    assert ok.code == 0, ok.stderr
    assert "breaking the stale lock" in ok.stderr and "other-host.example" in ok.stderr
    taken = [ev for ev in ok.events() if ev.get("event") == "lock.taken_over"]
    assert len(taken) == 1 and taken[0]["automatic"] is False
    assert e.keys(e.dest_bucket, "drtool/locks/") == []  # released after the run


def _add_bulk(e: SnapshotEnv, megabytes: int) -> None:
    """Incompressible rows, so that the dump takes a moment and goes up in several parts."""
    with psycopg.connect(e.db.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE bulk (id int, payload bytea)")
        conn.execute("INSERT INTO bulk SELECT g, decode(string_agg(md5(random()::text), ''), 'hex') "
                     "FROM generate_series(1, %s) g, generate_series(1, 4096) h GROUP BY g", (megabytes * 16,))


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # the process ended meanwhile
        return b""


def _wait_for(predicate, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached")


@pytest.mark.parametrize("point", ["locked", "dump-uploading", "manifest-written"])
def test_killed_run_invisible_next_run_succeeds_gc_cleans(minio_env: SnapshotEnv, point: str) -> None:
    e = minio_env
    _add_bulk(e, 24)
    c, b = e.client, e.dest_bucket

    def uploads() -> bool:  # MinIO filters uploads only by a whole key: list all, filter here
        return any(u["Key"].startswith("drtool/snapshots/") for u in c.list_multipart_uploads(Bucket=b)
                   .get("Uploads", ()))

    conditions = {
        "locked": lambda: bool(e.keys(b, "drtool/locks/")),
        "dump-uploading": uploads,
        "manifest-written": lambda: any(k.endswith("manifest.jsonl.zst") for k in e.keys(b, "drtool/snapshots/")),
    }
    proc = e.popen("snapshot", "create", extra_env={"DRTOOL_SNAPSHOT_PART_SIZE_MB": "5"})
    try:
        _wait_for(conditions[point])
        if point == "dump-uploading":  # the password reaches pg_dump by environment, never by argv
            dumps = [d for d in Path("/proc").iterdir() if d.name.isdigit()
                     and _read(d / "stat").split(b") ", 1)[-1].split(b" ")[1:2] == [str(proc.pid).encode()]
                     and b"--snapshot=" in _read(d / "cmdline")]
            assert dumps, "pg_dump not running"
            secret = e.pg.password.encode()
            for d in dumps:
                in_argv = secret in _read(d / "cmdline")
                in_env = b"PGPASSWORD=" + secret in _read(d / "environ")
                assert not in_argv and in_env, "the password must be in pg_dump's environment, not its argv"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    assert not any(k.endswith("/COMMITTED") for k in e.keys(b, "drtool/snapshots/"))
    listed = e.run("snapshots", "list", "--json")
    assert listed.result()["snapshots"] == []  # invisible
    assert e.run("restore", "latest", "--verify-only").code == 10

    if point == "locked":  # the operator may remove a dead run's lock ...
        assert e.run("snapshots", "unlock").code == 0
        ok = e.run("snapshot", "create", "--json")
    else:  # ... but the next run takes it over by itself: its holder is a dead process on this host
        ok = e.run("snapshot", "create", "--json")
        assert "taking over the stale lock" in ok.stderr and f"pid {proc.pid}" in ok.stderr
        taken = [ev for ev in ok.events() if ev.get("event") == "lock.taken_over"]
        assert len(taken) == 1 and taken[0]["previous_holder"]["pid"] == proc.pid and taken[0]["automatic"]
        assert f"process {proc.pid} no longer runs" in taken[0]["reason"]
    assert ok.code == 0, ok.stderr
    good = ok.result()["snapshot"]

    leftovers = [f for f in _snapshot_ids(e) if f != good]
    dry = e.run("snapshots", "gc", "--grace", "0", "--dry-run", "--json")
    assert dry.result()["removed"] == leftovers
    gc = e.run("snapshots", "gc", "--grace", "0", "--json")
    assert gc.code == 0, gc.stderr
    assert _snapshot_ids(e) == [good]
    assert not uploads()
    assert e.run("snapshots", "verify", good).code == 0


def test_gc_leaves_young_leftovers(minio_env: SnapshotEnv) -> None:
    """Within the grace period an uncommitted folder may belong to a run still going on another host."""
    e = minio_env
    sid = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-abcdef"
    e.client.put_object(Bucket=e.dest_bucket, Key=f"drtool/snapshots/{sid}/meta.json", Body=b"{}")
    gc = e.run("snapshots", "gc", "--json")  # default grace: one day
    assert gc.code == 0 and gc.result()["kept_young"] == [sid] and gc.result()["removed"] == []
    assert _snapshot_ids(e) == [sid]


def test_corrupted_and_truncated_artifacts_verify_exit_4(minio_env: SnapshotEnv) -> None:
    e = minio_env
    run = e.run("snapshot", "create", "--json")
    assert run.code == 0, run.stderr
    sid = run.result()["snapshot"]
    folder = f"drtool/snapshots/{sid}/"
    dump = e.client.get_object(Bucket=e.dest_bucket, Key=folder + "db.dump")["Body"].read()
    e.client.put_object(Bucket=e.dest_bucket, Key=folder + "db.dump", Body=dump[: len(dump) // 2])
    v = e.run("snapshots", "verify", sid)
    assert v.code == 4 and "db.dump: checksum mismatch" in v.stderr
    restored = e.run("restore", sid, "--target-db", "never_created_db", "--no-objects")
    assert restored.code == 4 and "db.dump checksum mismatch" in restored.stderr
    with psycopg.connect(e.pg.admin_dsn) as conn:
        assert conn.execute("SELECT 1 FROM pg_database WHERE datname = 'never_created_db'").fetchone() is None

    e.client.put_object(Bucket=e.dest_bucket, Key=folder + "db.dump", Body=dump)  # repaired
    manifest = e.client.get_object(Bucket=e.dest_bucket, Key=folder + "manifest.jsonl.zst")["Body"].read()
    e.client.put_object(Bucket=e.dest_bucket, Key=folder + "manifest.jsonl.zst",
                        Body=manifest[:10] + b"\x00" + manifest[11:])
    v = e.run("snapshots", "verify", "--latest", "--json")
    assert v.code == 4 and "manifest.jsonl.zst: checksum mismatch" in v.stderr
    assert e.run("snapshots", "list", "--json").result()["snapshots"][0]["verified"]["ok"] is False

    e.client.put_object(Bucket=e.dest_bucket, Key=folder + "manifest.jsonl.zst", Body=manifest)
    assert e.run("snapshots", "verify", sid, "--deep").code == 0
    # A pinned version removed behind drtool's back: only --deep can see it.
    key = next(k for k in e.files if k.startswith("upload_files/"))
    version = e.client.head_object(Bucket=e.source_bucket, Key=key)["VersionId"]
    e.client.delete_object(Bucket=e.source_bucket, Key=key, VersionId=version)
    assert e.run("snapshots", "verify", sid).code == 0
    deep = e.run("snapshots", "verify", sid, "--deep")
    assert deep.code == 4 and f"object {key} (version {version}): missing" in deep.stderr
    target = new_bucket(e.client)
    gone = e.run("restore", sid, "--objects-to", target)
    assert gone.code == 4 and "no longer exist" in gone.stderr and key in gone.stderr

    e.client.delete_object(Bucket=e.dest_bucket, Key=folder + "SHA256SUMS")
    v = e.run("snapshots", "verify", sid)
    assert v.code == 4 and "SHA256SUMS is missing" in v.stderr


def test_encrypted_snapshot_wrong_key_and_age_cli(minio_env: SnapshotEnv, tmp_path, new_database) -> None:
    import pyrage

    e = minio_env
    right, wrong = pyrage.x25519.Identity.generate(), pyrage.x25519.Identity.generate()
    (tmp_path / "right.txt").write_text(str(right) + "\n")
    (tmp_path / "wrong.txt").write_text(str(wrong) + "\n")
    run = e.run("snapshot", "create", "--encrypt-to", str(right.to_public()), "--json")
    assert run.code == 0, run.stderr
    sid = run.result()["snapshot"]
    names = {k.rsplit("/", 1)[1] for k in e.keys(e.dest_bucket, f"drtool/snapshots/{sid}/")}
    assert {"db.dump.age", "manifest.jsonl.zst.age", "meta.json", "SHA256SUMS", "COMMITTED"} <= names
    assert e.run("snapshots", "verify", sid).code == 0  # checksums need no key
    nokey = e.run("snapshots", "verify", sid, "--deep")
    assert nokey.code == 2 and "--identity" in nokey.stderr

    target, dbname = new_bucket(e.client), new_database()
    bad = e.run("restore", sid, "--target-db", dbname, "--objects-to", target, "--identity",
                str(tmp_path / "wrong.txt"))
    assert bad.code == 12 and "none of the given age identities" in bad.stderr
    assert e.keys(target) == []
    assert e.run("snapshots", "verify", sid, "--deep", "--identity", str(tmp_path / "right.txt")).code == 0
    good = e.run("restore", sid, "--target-db", dbname, "--objects-to", target, "--identity",
                 str(tmp_path / "right.txt"), "--json")
    assert good.code == 0, good.stderr
    assert good.result()["objects"]["copied"] == len(e.files) - 1

    # The standard age tool decrypts the dump without drtool.
    enc = tmp_path / "db.dump.age"
    enc.write_bytes(e.client.get_object(Bucket=e.dest_bucket, Key=f"drtool/snapshots/{sid}/db.dump.age")["Body"]
                    .read())
    subprocess.run(["age", "-d", "-i", str(tmp_path / "right.txt"), "-o", str(tmp_path / "db.dump"), str(enc)],
                   check=True)
    listing = subprocess.run([str(e.pg.bin_dir / "pg_restore"), "--list", str(tmp_path / "db.dump")],
                             capture_output=True, text=True, check=True).stdout
    assert "TABLE DATA public upload_files" in listing


def test_non_empty_target_needs_yes(minio_env: SnapshotEnv) -> None:
    e = minio_env
    run = e.run("snapshot", "create")
    assert run.code == 0, run.stderr
    with psycopg.connect(e.db.dsn, autocommit=True) as conn:
        before = conn.execute("SELECT count(*) FROM upload_files").fetchone()[0]
        conn.execute("DELETE FROM tool_files")
    target = new_bucket(e.client)
    refused = e.run("restore", "latest", "--target-db", e.db.dbname, "--objects-to", target)
    assert refused.code == 2 and "is not empty" in refused.stderr and "--yes" in refused.stderr
    assert e.keys(target) == [], "the refusal came after objects were copied"
    with psycopg.connect(e.db.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM tool_files").fetchone()[0] == 0  # untouched
    dry = e.run("restore", "latest", "--target-db", e.db.dbname, "--no-objects", "--yes", "--dry-run", "--json")
    assert dry.code == 0 and dry.result()["database"]["action"] == "replace"
    ok = e.run("restore", "latest", "--target-db", e.db.dbname, "--no-objects", "--yes")
    assert ok.code == 0, ok.stderr
    with psycopg.connect(e.db.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM tool_files").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM upload_files").fetchone()[0] == before
