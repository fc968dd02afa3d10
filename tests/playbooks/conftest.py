"""The sandbox the runbooks run in: a seeded Dify database, its files in a bucket on MinIO site A (replicated to
site B), a snapshot bucket, chunk files exported and a Milvus Lite index built, all with the real CLI.

Runbooks name their inputs with shell variables (DATASET_ID, SITE_A_URL, ...) and read drtool's settings from
DRTOOL_* variables, the way an operator's shell would have them; this fixture provides both.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.helpers.buckets import new_bucket
from tests.helpers.cli import clean_env, run_process
from tests.stack.dify_db import DifyDatabase
from tests.stack.minio_sites import MinioSites
from tests.stack.pg_server import PostgresServer
from tests.stack.process import wait_ready

REPO = Path(__file__).resolve().parents[2]
BIN = str(Path(sys.executable).parent)


@dataclass
class CommandRun:
    text: str
    code: int
    stdout: str
    stderr: str


@dataclass
class Sandbox:
    """drtool's environment for one runbook, the servers behind it, and the disasters the runbooks simulate."""

    env: dict[str, str]
    db: DifyDatabase
    pg: PostgresServer
    sites: MinioSites
    bucket: str
    milvus_uri: str
    extra_databases: list[str] = field(default_factory=list)

    def shell(self, command: str, env: dict[str, str] | None = None, timeout: float = 300) -> CommandRun:
        """Run one runbook line with bash in the repository, as an operator's shell would."""
        proc = subprocess.run(["bash", "-c", command], env=env or self.env, capture_output=True, text=True,
                              timeout=timeout, cwd=REPO, stdin=subprocess.DEVNULL)
        return CommandRun(command, proc.returncode, proc.stdout, proc.stderr)

    def drtool(self, *args: str) -> CommandRun:
        done = run_process(args, self.env, script=True)  # every --json run obeys docs/json.md
        return CommandRun("drtool " + " ".join(args), done.code, done.stdout, done.stderr)

    # -- disasters and repairs a runbook asks for with <!-- sandbox: ... -->
    def act(self, action: str) -> None:
        handler = getattr(self, "_" + action.replace("-", "_"), None)
        if handler is None:
            raise ValueError(f"unknown sandbox action {action!r}")
        handler()

    def _lose_index(self) -> None:
        subprocess.run([sys.executable, "-m", "demo.lose_index", self.milvus_uri], cwd=REPO, check=True,
                       capture_output=True)

    def _corrupt_index(self) -> None:
        subprocess.run([sys.executable, "-m", "tests.playbooks.actions", "corrupt-index", self.milvus_uri],
                       cwd=REPO, check=True, capture_output=True)

    def _corrupt_db(self) -> None:
        """A wrong DELETE: the segments of the first (text) dataset are gone, its vectors are orphans now."""
        with psycopg.connect(self.db.dsn) as conn:
            deleted = conn.execute("DELETE FROM document_segments WHERE dataset_id = %s",
                                   (self.db.dataset_ids[0],)).rowcount
        assert deleted > 0

    def _drop_db(self) -> None:
        self.pg.drop_database(self.db.dbname)

    def _nightly_snapshot(self) -> None:
        """The restore point the nightly job would have taken before the disaster."""
        run = self.drtool("snapshot", "create")
        assert run.code == 0, run.stderr

    def _wait_replicated(self) -> None:
        """Wait until site B lists every object version of site A's buckets (replication is asynchronous)."""
        a, b = self.sites.a.s3_client(), self.sites.b.s3_client()
        buckets = (self.bucket, self.env["DRTOOL_SNAPSHOT_BUCKET"])

        def versions(client: Any) -> set[tuple[str, str, str]]:
            out: set[tuple[str, str, str]] = set()
            for name in buckets:
                for page in client.get_paginator("list_object_versions").paginate(Bucket=name):
                    out |= {(name, v["Key"], v["VersionId"]) for v in page.get("Versions", [])}
            return out

        wait_ready(lambda: versions(a) <= versions(b), 120.0, what="replicated to site B")

    def _stop_site_a(self) -> None:
        self.sites.a.stop()

    def _start_site_a(self) -> None:
        self.sites.a.start()


@pytest.fixture
def sandbox(pg: PostgresServer, dify_db: DifyDatabase, minio_pair: MinioSites, milvus_uri: str,
            embedding_server: Any, tmp_path: Path) -> Iterator[Sandbox]:
    site_a, site_b = minio_pair.a, minio_pair.b
    client = site_a.s3_client()
    bucket, dr_bucket = new_bucket(client, "dify"), new_bucket(client, "dify-dr")
    assert dify_db.seed is not None
    for key, body in dify_db.seed.files.items():
        client.put_object(Bucket=bucket, Key=key, Body=body)
    env = clean_env()
    env.update({
        "PATH": f"{BIN}:{env.get('PATH', '/usr/bin:/bin')}",
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
        "DRTOOL_S3_ENDPOINT": site_a.endpoint, "DRTOOL_S3_BUCKET": bucket, "DRTOOL_S3_ADDRESS_STYLE": "path",
        "DRTOOL_S3_ACCESS_KEY": site_a.access_key, "DRTOOL_S3_SECRET_KEY": site_a.secret_key,
        "DRTOOL_SNAPSHOT_BUCKET": dr_bucket, "DRTOOL_SNAPSHOT_PG_BIN_DIR": str(pg.bin_dir),
        "DRTOOL_POSTGRES_HOST": pg.host, "DRTOOL_POSTGRES_PORT": str(pg.port), "DRTOOL_POSTGRES_USER": pg.user,
        "DRTOOL_POSTGRES_PASSWORD": pg.password, "DRTOOL_POSTGRES_DATABASE": dify_db.dbname,
        "DRTOOL_POSTGRES_SSLMODE": "disable",
        "DRTOOL_VECTOR_STORE": "milvus", "DRTOOL_MILVUS_URI": milvus_uri,
        "DRTOOL_EMBEDDING_PROVIDER": "openai", "DRTOOL_EMBEDDING_BASE_URL": embedding_server.base_url,
        "DRTOOL_EMBEDDING_API_KEY": embedding_server.api_key, "DRTOOL_EMBEDDING_MODEL": embedding_server.model_name,
        "DRTOOL_EMBEDDING_DIMENSIONS": str(embedding_server.dimensions), "DRTOOL_REBUILD_SAMPLE": "20",
        "DRTOOL_REPLICATION_SITES": f"A={site_a.endpoint},B={site_b.endpoint}",
        "DRTOOL_REPLICATION_EXPECTED_SITES": "2",
        # The runbooks' own variables.
        "DATASET_ID": dify_db.dataset_ids[0], "DIFY_DB": dify_db.dbname,
        "RESTORED_DB": f"{dify_db.dbname}_restored", "SITE_A_URL": site_a.endpoint, "SITE_B_URL": site_b.endpoint,
        # The endpoint also serves the model under its Hugging Face name: another model id, so a full re-embed.
        "NEW_MODEL": f"sentence-transformers/{embedding_server.model_name}",
        "REPORT_DIR": str(tmp_path / "drill-reports"),
    })
    box = Sandbox(env, dify_db, pg, minio_pair, bucket, milvus_uri, [f"{dify_db.dbname}_restored"])
    for args in (("export-chunks", "--all"), ("rebuild-index", "--all")):
        run = box.drtool(*args)
        assert run.code == 0, run.stderr
    yield box
    with psycopg.connect(pg.admin_dsn, autocommit=True) as conn:
        for name in box.extra_databases:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
