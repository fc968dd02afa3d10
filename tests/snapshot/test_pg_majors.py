"""Snapshot and restore across PostgreSQL majors (issue 12): 15 (Debian's, Dify's), 16, 17 and 18.

Dify upgrades will move self-hosted databases past 15, so every claim in docs/snapshots.md "Supported PostgreSQL
versions" is checked here against real servers of each major (pinned PyPI builds, see tests/stack/versions.py):

- the round trip (snapshot create -> lose the database -> restore -> every row back) on 16, 17 and 18, with the
  client tools of the server's own major (15's round trip is tests/restore/test_roundtrip.py's);
- a pg_dump older than the server is refused before anything is written, naming both versions (exit 2);
- how drtool picks pg_dump/pg_restore when snapshot.pg_bin_dir is not set;
- a 15 dump restores into 18 (the upgrade path); an 18 dump into 15 is refused before anything changes (exit 2);
- a pg_restore older than the dump is refused as a setting (exit 2), not reported as a damaged snapshot.

Kept to one round trip per major: each costs about a second of server start and a few seconds of CLI runs.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from drtool.adapters.postgres import find_pg_tool, installed_majors, tool_version
from tests.snapshot.conftest import SnapshotEnv, fill_source, make_env, new_bucket
from tests.stack.dify_db import create_dify_database
from tests.stack.minio_sites import MinioSites
from tests.stack.pg_server import DEFAULT_BIN_DIR, PostgresMajors, PostgresServer, bin_dir_for_major
from tests.stack.versions import POSTGRES_MAJOR, POSTGRES_WHEELS

NEWEST = max(POSTGRES_WHEELS)


@pytest.fixture(scope="session")
def pg_major(pg: PostgresServer) -> Iterator[PostgresMajors]:
    """``pg_major(18)`` -> a running PostgreSQL 18 server, started once per session; 15 is the session's ``pg``."""
    with PostgresMajors(system=pg) as majors:
        yield majors


@pytest.fixture
def env_on_major(minio_pair: MinioSites, pg_major: PostgresMajors) -> Iterator[Callable[[int], SnapshotEnv]]:
    """``env_on_major(major)`` -> a seeded Dify database on that major's server, its versioned source bucket and a
    snapshot bucket, with drtool's environment pointing snapshot.pg_bin_dir at that major's client tools."""
    made: list[tuple[PostgresServer, str]] = []

    def make(major: int) -> SnapshotEnv:
        server = pg_major(major)
        db = create_dify_database(server)
        made.append((server, db.dbname))
        client = minio_pair.a.s3_client()
        source, dest = new_bucket(client), new_bucket(client)
        files = fill_source(client, source, db)
        env = make_env(endpoint=minio_pair.a.endpoint, access_key=minio_pair.a.access_key,
                       secret_key=minio_pair.a.secret_key, source_bucket=source, dest_bucket=dest, db=db, pg=server)
        return SnapshotEnv(env=env, client=client, source_bucket=source, dest_bucket=dest, db=db, pg=server,
                           files=files)

    yield make
    for server, name in made:
        server.drop_database(name)


def rows(dsn: str) -> dict[str, list[str]]:
    """Every row of every user table as md5 of its text form, sorted: "the same data" row by row, across majors."""
    out: dict[str, list[str]] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        tables = [t for (t,) in conn.execute(
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1")]
        for table in tables:
            out[table] = [h for (h,) in conn.execute(f"SELECT md5(t::text) FROM {table} t ORDER BY 1")]
    return out


def versions_in(client: Any, bucket: str) -> list[str]:
    """Every object version and delete marker in `bucket`: empty means nothing was ever written, not even a lock."""
    listed = client.list_object_versions(Bucket=bucket)
    return [v["Key"] for v in listed.get("Versions", []) + listed.get("DeleteMarkers", [])]


def database_exists(server: PostgresServer, name: str) -> bool:
    with psycopg.connect(server.admin_dsn, autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def snapshot(e: SnapshotEnv) -> tuple[str, dict[str, Any]]:
    """Take a snapshot (exit 0 required) and return its id and meta.json."""
    run = e.run("snapshot", "create", "--json")
    assert run.code == 0, run.stderr
    sid = run.result()["snapshot"]
    meta = json.loads(e.client.get_object(Bucket=e.dest_bucket, Key=f"drtool/snapshots/{sid}/meta.json")["Body"].read())
    return sid, meta


@pytest.mark.parametrize("major", sorted(POSTGRES_WHEELS))
def test_round_trip_on_each_major(env_on_major: Callable[[int], SnapshotEnv], major: int) -> None:
    e = env_on_major(major)
    assert e.pg.major() == major
    before = rows(e.db.dsn)
    assert before["public.upload_files"] and before["public.document_segments"]
    sid, meta = snapshot(e)
    assert meta["database"]["server_version_num"] // 10_000 == major
    assert meta["database"]["pg_dump_major"] == major
    deep = e.run("snapshots", "verify", sid, "--deep")  # pg_restore --list of this major reads the archive
    assert deep.code == 0, deep.stderr

    e.pg.drop_database(e.db.dbname)  # the disaster
    target_bucket = new_bucket(e.client)
    r = e.run("restore", sid, "--target-db", e.db.dbname, "--objects-to", target_bucket, "--json")
    assert r.code == 0, r.stderr
    assert r.result()["database"]["action"] == "create and restore"
    assert rows(e.db.dsn) == before
    for key, body in e.files.items():
        if not key.startswith("website_files/"):
            assert e.client.get_object(Bucket=target_bucket, Key=key)["Body"].read() == body


def test_pg_dump_older_than_server_refused_before_anything_is_written(
        env_on_major: Callable[[int], SnapshotEnv]) -> None:
    e = env_on_major(NEWEST)
    run = e.run("snapshot", "create", "--json", extra_env={"DRTOOL_SNAPSHOT_PG_BIN_DIR": str(DEFAULT_BIN_DIR)})
    assert run.code == 2, run.stderr
    error = run.result()  # the error's event (with --json the last line, whatever its name)
    assert error["error"] == "ConfigError" and error["exit_code"] == 2
    version = e.pg.server_version()
    assert f"pg_dump at {DEFAULT_BIN_DIR}/pg_dump is PostgreSQL {POSTGRES_MAJOR} (" in error["message"]
    assert f"the server is PostgreSQL {version}" in error["message"]
    assert f"postgresql-client-{NEWEST}" in error["hint"]
    assert versions_in(e.client, e.dest_bucket) == []  # not even the lock: the check comes before it
    with psycopg.connect(e.pg.admin_dsn, autocommit=True) as conn:  # no pg_dump got as far as connecting
        assert conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg_dump'"
                            ).fetchone() == (0,)


def test_without_pg_bin_dir_the_newest_installed_client_is_taken(env_on_major: Callable[[int], SnapshotEnv]) -> None:
    """snapshot.pg_bin_dir unset: the server's major folder under /usr/lib/postgresql, else the newest there.

    This machine (and CI) has Debian's 15 only, so against 18 that is 15, which is refused naming it.
    """
    newest_installed = max((m for m, _ in installed_majors("pg_dump")), default=0)
    if newest_installed >= NEWEST:
        pytest.skip(f"this machine has a PostgreSQL {newest_installed} client: nothing too old to refuse")
    e = env_on_major(NEWEST)
    env = {k: v for k, v in e.env.items() if k != "DRTOOL_SNAPSHOT_PG_BIN_DIR"}
    run = SnapshotEnv(env=env, client=e.client, source_bucket=e.source_bucket, dest_bucket=e.dest_bucket, db=e.db,
                      pg=e.pg).run("snapshot", "create")
    assert run.code == 2, run.stderr
    assert f"/usr/lib/postgresql/{newest_installed}/bin/pg_dump is PostgreSQL {newest_installed}" in run.stderr
    assert f"postgresql-client-{NEWEST}" in run.stderr
    assert versions_in(e.client, e.dest_bucket) == []


def test_client_choice_rules(tmp_path: Path) -> None:
    """find_pg_tool over a Debian-style folder of real 15, 16 and 18 clients (links to the test servers' tools)."""
    root = tmp_path / "postgresql"
    for major in (15, 16, 18):
        (root / str(major) / "bin").mkdir(parents=True)
        for name in ("pg_dump", "pg_restore"):
            (root / str(major) / "bin" / name).symlink_to(bin_dir_for_major(major) / name)
    (root / "common").mkdir()  # Debian's /usr/lib/postgresql has non-version folders too

    def chosen(name: str, server_major: int, **kw: Any) -> int:
        return tool_version(find_pg_tool(name, server_major=server_major, bin_dir=None, root=str(root), **kw))[0]

    assert [m for m, _ in installed_majors("pg_dump", root=str(root))] == [18, 16, 15]
    assert chosen("pg_dump", 16) == 16  # the server's own major: its dump restores with that major's pg_restore
    assert chosen("pg_dump", 15) == 15
    assert chosen("pg_dump", 17) == 18  # no 17: the newest reads every older server
    assert chosen("pg_dump", 19) == 18  # too old, but the best there is: the version check names it
    assert chosen("pg_restore", 16, min_major=18) == 18  # an 18 archive needs pg_restore 18 even for a 16 server
    pinned = find_pg_tool("pg_dump", server_major=18, bin_dir=str(root / "15" / "bin"), root=str(root))
    assert pinned == str(root / "15" / "bin" / "pg_dump")  # a configured folder is never second-guessed


def test_dump_of_15_restores_into_18(env_on_major: Callable[[int], SnapshotEnv], pg_major: PostgresMajors) -> None:
    """The upgrade path: a snapshot taken on Dify's PostgreSQL 15 restored into a PostgreSQL 18 server."""
    e = env_on_major(POSTGRES_MAJOR)
    before = rows(e.db.dsn)
    sid, meta = snapshot(e)
    assert meta["database"]["pg_dump_major"] == POSTGRES_MAJOR
    newer = pg_major(NEWEST)
    name = f"upgraded_{uuid.uuid4().hex[:10]}"
    try:
        r = e.run("restore", sid, "--target-db", newer.dsn(name), "--no-objects", "--json",
                  extra_env={"DRTOOL_SNAPSHOT_PG_BIN_DIR": str(newer.bin_dir)})
        assert r.code == 0, r.stderr
        assert f"restoring a PostgreSQL {POSTGRES_MAJOR} dump into PostgreSQL {NEWEST}" in r.stderr
        assert rows(newer.dsn(name)) == before
    finally:
        newer.drop_database(name)


def test_dump_of_18_into_15_refused_before_anything_changes(env_on_major: Callable[[int], SnapshotEnv],
                                                            pg_major: PostgresMajors) -> None:
    e = env_on_major(NEWEST)
    sid, _ = snapshot(e)
    older = pg_major(POSTGRES_MAJOR)
    name = f"downgraded_{uuid.uuid4().hex[:10]}"
    target_bucket = new_bucket(e.client)
    r = e.run("restore", sid, "--target-db", older.dsn(name), "--objects-to", target_bucket, "--json")
    assert r.code == 2, r.stderr
    error = r.result()
    assert error["error"] == "ConfigError" and error["exit_code"] == 2
    assert f"the dump comes from PostgreSQL {e.pg.server_version()}" in error["message"]
    assert f"the target server is PostgreSQL {POSTGRES_MAJOR}" in error["message"]
    assert not database_exists(older, name)
    assert versions_in(e.client, target_bucket) == []  # checked before the first object copy


def test_pg_restore_older_than_the_dump_refused_not_called_damage(env_on_major: Callable[[int], SnapshotEnv]) -> None:
    """pg_restore 15 cannot read pg_dump 18's archive ("unsupported version in file header"): that is a client to
    install (exit 2, both versions named), not a damaged snapshot (verify's exit 4), and restore changes nothing."""
    e = env_on_major(NEWEST)
    sid, _ = snapshot(e)
    old_client = {"DRTOOL_SNAPSHOT_PG_BIN_DIR": str(DEFAULT_BIN_DIR)}
    verify = e.run("snapshots", "verify", sid, "--deep", "--json", extra_env=old_client)
    assert verify.code == 2, verify.stdout + verify.stderr
    assert f"pg_restore at {DEFAULT_BIN_DIR}/pg_restore is PostgreSQL {POSTGRES_MAJOR}" in verify.stderr
    assert f"written by pg_dump {NEWEST}" in verify.stderr and f"postgresql-client-{NEWEST}" in verify.stderr
    assert e.run("snapshots", "verify", sid, "--deep").code == 0  # the snapshot itself is fine

    name = f"restored_{uuid.uuid4().hex[:10]}"
    target_bucket = new_bucket(e.client)
    r = e.run("restore", sid, "--target-db", e.pg.dsn(name), "--objects-to", target_bucket, extra_env=old_client)
    assert r.code == 2, r.stderr
    assert f"written by pg_dump {NEWEST}: an older pg_restore cannot read it; nothing was changed" in r.stderr
    assert not database_exists(e.pg, name)
    assert versions_in(e.client, target_bucket) == []
