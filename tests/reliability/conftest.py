"""Fixtures of the reliability trials: the real CLI in-process (for the checks between trials, where a new Python
start-up per call would cost most of the suite's time) and fingerprints of the source stores."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.helpers.cli import ProcessRun, invoke

InProcess = Callable[[list[str], dict[str, str]], ProcessRun]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> InProcess:
    """`drtool --json ARGS` in this process with exactly the given DRTOOL_* environment; a ProcessRun with both
    streams."""
    def call(args: list[str], env: dict[str, str]) -> ProcessRun:
        for key in list(os.environ):
            if key.startswith("DRTOOL_") and not key.startswith(("DRTOOL_RELIABILITY_", "DRTOOL_TEST_")):
                monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        code, out, err = invoke(capsys, ["--json", *args])  # every --json run obeys docs/json.md
        return ProcessRun(code, out, err, 0.0)

    return call


def db_fingerprint(dsn: str) -> str:
    """A hash of every row of every user table (ordered), so "the source database is unchanged" is checked
    row by row, not by a count."""
    digest = hashlib.sha256()
    with psycopg.connect(dsn, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1")]
        for table in tables:
            digest.update(table.encode())
            rows = conn.execute(f"SELECT md5(t::text) FROM {table} t ORDER BY 1").fetchall()
            for (row,) in rows:
                digest.update(row.encode())
    return digest.hexdigest()


def bucket_fingerprint(client: Any, bucket: str, *, versions: bool = True,
                       skip: tuple[str, ...] = ()) -> list[tuple[str, str, str]]:
    """Every object version (key, version id, etag) of a bucket, or every current object (key, "", etag)."""
    out: list[tuple[str, str, str]] = []

    def keep(key: str) -> bool:
        return not (skip and key.startswith(skip))

    if versions:
        for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket):
            for v in page.get("Versions", ()):
                if keep(v["Key"]):
                    out.append((v["Key"], str(v.get("VersionId")), v["ETag"].strip('"')))
            for m in page.get("DeleteMarkers", ()):
                if keep(m["Key"]):
                    out.append((m["Key"], str(m.get("VersionId")), "delete-marker"))
    else:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for o in page.get("Contents", ()):
                if keep(o["Key"]):
                    out.append((o["Key"], "", o["ETag"].strip('"')))
    return sorted(out)


@dataclass
class SnapshotSource:
    """A seeded Dify database with its files in a versioned source bucket, an empty snapshot bucket, and the
    DRTOOL_* environment of a snapshot run with TMPDIR of its own (checked for leftovers after each kill)."""

    client: Any
    source: str
    dest: str
    files: dict[str, bytes]
    env: dict[str, str]
    tmp: Path


def snapshot_source(site: Any, dify_db: Any, pg: Any, tmp_path: Path, *, bulk_groups: int) -> SnapshotSource:
    """`bulk_groups` x 64 KiB of incompressible rows more, so the dump (and pg_restore) take a moment."""
    from tests.snapshot.conftest import fill_source, make_env, new_bucket

    client = site.s3_client()
    source, dest = new_bucket(client), new_bucket(client)
    files = fill_source(client, source, dify_db)
    with psycopg.connect(dify_db.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE bulk (id int, payload bytea)")
        conn.execute("INSERT INTO bulk SELECT g, decode(string_agg(md5(random()::text), ''), 'hex') "
                     "FROM generate_series(1, %s) g, generate_series(1, 4096) h GROUP BY g", (bulk_groups,))
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = make_env(endpoint=site.endpoint, access_key=site.access_key, secret_key=site.secret_key,
                   source_bucket=source, dest_bucket=dest, db=dify_db, pg=pg)
    env = {k: v for k, v in env.items() if k.startswith("DRTOOL_")}
    env["TMPDIR"] = str(tmp)
    return SnapshotSource(client, source, dest, files, env, tmp)
