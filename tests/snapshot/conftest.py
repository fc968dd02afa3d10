"""Fixtures of the snapshot tests: a versioned source bucket filled from the seeded Dify rows, a separate
snapshot bucket, and a runner for the real `drtool` CLI (a subprocess, as cron runs it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.foundation.json_contract import check_json_run
from tests.stack.dify_db import DifyDatabase
from tests.stack.minio_sites import MinioSites
from tests.stack.pg_server import PostgresServer

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.startswith("{")]

    def result(self) -> dict[str, Any]:
        return self.events()[-1]


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

    def run(self, *args: str, extra_env: dict[str, str] | None = None, timeout: float = 300) -> Run:
        env = dict(self.env, **(extra_env or {}))
        proc = subprocess.run([sys.executable, "-m", "drtool", *args], env=env, capture_output=True, text=True,
                              timeout=timeout, cwd=REPO)
        check_json_run(args, proc.stdout, proc.returncode)  # every --json run obeys docs/json.md
        return Run(proc.returncode, proc.stdout, proc.stderr)

    def popen(self, *args: str, extra_env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        env = dict(self.env, **(extra_env or {}))
        return subprocess.Popen([sys.executable, "-m", "drtool", *args], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=REPO)

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        out: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            out += [o["Key"] for o in page.get("Contents", ())]
        return out


def new_bucket(client: Any, *, versioned: bool = True) -> str:
    name = f"snap-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=name)
    if versioned:
        client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


def make_env(*, endpoint: str, access_key: str, secret_key: str, source_bucket: str, dest_bucket: str,
             db: DifyDatabase, pg: PostgresServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DRTOOL_", "PG", "AWS_"))}
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


@pytest.fixture
def minio_env(minio_pair: MinioSites, dify_db: DifyDatabase, pg: PostgresServer) -> Iterator[SnapshotEnv]:
    site = minio_pair.a
    client = site.s3_client()
    source, dest = new_bucket(client), new_bucket(client)
    files = fill_source(client, source, dify_db)
    env = make_env(endpoint=site.endpoint, access_key=site.access_key, secret_key=site.secret_key,
                   source_bucket=source, dest_bucket=dest, db=dify_db, pg=pg)
    yield SnapshotEnv(env=env, client=client, source_bucket=source, dest_bucket=dest, db=dify_db, pg=pg,
                      files=files)


@pytest.fixture
def new_database(pg: PostgresServer) -> Iterator[Callable[[], str]]:
    """Names of databases that do not exist yet (restore creates them); dropped afterwards."""
    names: list[str] = []

    def make() -> str:
        names.append(f"restored_{uuid.uuid4().hex[:10]}")
        return names[-1]

    yield make
    for name in names:
        pg.drop_database(name)
