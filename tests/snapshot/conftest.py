"""Fixtures of the snapshot tests: a versioned source bucket filled from the seeded Dify rows, a separate
snapshot bucket, and a runner for the real `drtool` CLI (a subprocess, as cron runs it)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.helpers.buckets import new_bucket
from tests.helpers.cli import ProcessRun, clean_env, run_process
from tests.helpers.fixtures import new_database  # noqa: F401  (fixture, re-exported likewise)
from tests.stack.dify_db import DifyDatabase
from tests.stack.minio_sites import MinioSites
from tests.stack.pg_server import PostgresServer

REPO = Path(__file__).resolve().parents[2]


@dataclass
class SnapshotEnv:
    """Everything a test needs to run drtool against one source bucket, one database and one snapshot bucket."""

    env: dict[str, str]
    client: Any  # boto3 client of the S3 server
    source_bucket: str
    dest_bucket: str
    db: DifyDatabase
    pg: PostgresServer
    files: dict[str, bytes] = field(default_factory=dict)

    def run(self, *args: str, extra_env: dict[str, str] | None = None, timeout: float = 300) -> ProcessRun:
        done = run_process(args, dict(self.env, **(extra_env or {})), timeout=timeout)  # checks docs/json.md
        return ProcessRun(done.code, done.stdout, done.stderr, done.seconds)

    def popen(self, *args: str, extra_env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        env = dict(self.env, **(extra_env or {}))
        return subprocess.Popen([sys.executable, "-m", "drtool", *args], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=REPO)

    def get_object(self, key: str) -> bytes:
        """The body of `key` in the snapshot bucket (what a test inspects or tampers with)."""
        return bytes(self.client.get_object(Bucket=self.dest_bucket, Key=key)["Body"].read())

    def put_object(self, key: str, body: bytes) -> None:
        """Write `key` in the snapshot bucket directly, as an attacker with write access would."""
        self.client.put_object(Bucket=self.dest_bucket, Key=key, Body=body)

    def database_exists(self, name: str) -> bool:
        """Whether the database server has a database `name` (a refused restore must not have created one)."""
        with psycopg.connect(self.pg.admin_dsn) as conn:
            return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        out: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            out += [o["Key"] for o in page.get("Contents", ())]
        return out


def make_env(*, endpoint: str, access_key: str, secret_key: str, source_bucket: str, dest_bucket: str,
             db: DifyDatabase, pg: PostgresServer) -> dict[str, str]:
    env = clean_env()
    env.update({
        "DRTOOL_S3_ENDPOINT": endpoint, "DRTOOL_S3_ACCESS_KEY": access_key, "DRTOOL_S3_SECRET_KEY": secret_key,
        "DRTOOL_S3_BUCKET": source_bucket, "DRTOOL_S3_ADDRESS_STYLE": "path",
        "DRTOOL_SNAPSHOT_BUCKET": dest_bucket, "DRTOOL_SNAPSHOT_PG_BIN_DIR": str(pg.bin_dir),
        "DRTOOL_POSTGRES_HOST": pg.host, "DRTOOL_POSTGRES_PORT": str(pg.port), "DRTOOL_POSTGRES_USER": pg.user,
        "DRTOOL_POSTGRES_PASSWORD": pg.password, "DRTOOL_POSTGRES_DATABASE": db.dbname,
        "DRTOOL_POSTGRES_SSLMODE": "disable",
    })
    return env


def fill_source(client: Any, bucket: str, db: DifyDatabase) -> dict[str, bytes]:
    """The objects Dify would have written for the seeded rows, plus unreferenced ones under pinned prefixes."""
    assert db.seed is not None
    files = dict(db.seed.files)
    files[f"privkeys/{db.tenant_id}/private.pem"] = b"-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA...\n"
    for ds in db.dataset_ids:
        files[f"datasets/{ds}/processed/chunks.jsonl"] = json.dumps({"id": ds, "text": "chunk"}).encode() + b"\n"
    files["website_files/not-pinned.html"] = b"<html/>"  # outside every pinned prefix: not in the manifest
    for key, body in files.items():
        client.put_object(Bucket=bucket, Key=key, Body=body)
    return files


def snapshot_env_on(pair: MinioSites, dify_db: DifyDatabase, pg: PostgresServer) -> SnapshotEnv:
    """A filled source bucket and an empty snapshot bucket on site A of `pair`: the shared pair (minio_env) or a
    module's own (tests/snapshot/test_lifecycle.py)."""
    site = pair.a
    client = site.s3_client()
    source, dest = new_bucket(client), new_bucket(client)
    files = fill_source(client, source, dify_db)
    env = make_env(endpoint=site.endpoint, access_key=site.access_key, secret_key=site.secret_key,
                   source_bucket=source, dest_bucket=dest, db=dify_db, pg=pg)
    return SnapshotEnv(env=env, client=client, source_bucket=source, dest_bucket=dest, db=dify_db, pg=pg,
                       files=files)


@pytest.fixture
def minio_env(minio_pair: MinioSites, dify_db: DifyDatabase, pg: PostgresServer) -> Iterator[SnapshotEnv]:
    yield snapshot_env_on(minio_pair, dify_db, pg)


