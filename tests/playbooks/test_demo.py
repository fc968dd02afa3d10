"""`make demo`'s own parts: its knowledge base is what Dify would hold (drtool exports exactly the chunks the seed
says Dify embeds), and an interrupted demo leaves no server and no folder behind.

The full cycle is what `make demo` runs (about two minutes here); its drtool commands are the ones the runbook
tests already run against the same kind of sandbox.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg

from demo.seed import LICENSE_NOTE, seed_pydoc_knowledge_base
from tests.foundation.cli_runner import run_script
from tests.playbooks.conftest import REPO
from tests.stack.dify_db import apply_dify_schema
from tests.stack.minio_sites import MinioSites
from tests.stack.pg_server import PostgresServer
from tests.stack.process import interruptible


def test_pydoc_knowledge_base_exports_as_seeded(pg: PostgresServer, minio_pair: MinioSites) -> None:
    dbname = f"demo_{uuid.uuid4().hex[:10]}"
    dsn = pg.create_database(dbname)
    try:
        with psycopg.connect(dsn) as conn:
            apply_dify_schema(conn)
            kb = seed_pydoc_knowledge_base(conn, max_chunks=40)
            descriptions = [r[0] for r in conn.execute("SELECT description FROM datasets")]
        assert kb.expected_vectors >= 40 and len(kb.dataset_ids) == 2
        assert all(LICENSE_NOTE in d for d in descriptions)
        site = minio_pair.a
        client = site.s3_client()
        bucket = f"demo-{uuid.uuid4().hex[:10]}"
        client.create_bucket(Bucket=bucket)
        env = {"DRTOOL_S3_ENDPOINT": site.endpoint, "DRTOOL_S3_BUCKET": bucket, "DRTOOL_S3_ADDRESS_STYLE": "path",
               "DRTOOL_S3_ACCESS_KEY": site.access_key, "DRTOOL_S3_SECRET_KEY": site.secret_key,
               "DRTOOL_POSTGRES_HOST": pg.host, "DRTOOL_POSTGRES_PORT": str(pg.port),
               "DRTOOL_POSTGRES_USER": pg.user, "DRTOOL_POSTGRES_PASSWORD": pg.password,
               "DRTOOL_POSTGRES_DATABASE": dbname, "DRTOOL_POSTGRES_SSLMODE": "disable"}
        run = run_script("--json", "export-chunks", "--all", env=env)
        assert run.code == 0, run.stderr
        lines = 0
        for dataset in kb.dataset_ids:
            body = client.get_object(Bucket=bucket, Key=f"datasets/{dataset}/processed/chunks.jsonl")["Body"].read()
            chunks = [json.loads(line) for line in body.splitlines()]
            assert {c["dataset_id"] for c in chunks} == {dataset}
            lines += len(chunks)
        assert lines == kb.expected_vectors  # parents of the parent-child dataset are not embedded, children are
    finally:
        pg.drop_database(dbname)


def _connection_refused(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError:
        return True
    return False


def test_interrupted_demo_stops_its_servers_and_removes_its_folder(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "demo", "--report-dir", str(tmp_path)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=interruptible)
    assert proc.stdout is not None
    seen: list[str] = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("== 3."):  # servers up, knowledge base seeded: interrupt like Ctrl-C would
                proc.send_signal(signal.SIGINT)
                break
        rest = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    output = "".join(seen) + rest
    assert proc.returncode == 130, output
    assert "interrupted: servers stopped, sandbox removed" in output
    workdir = Path(re.search(r"config\s+(\S+)/drtool\.toml", output).group(1))  # type: ignore[union-attr]
    assert not workdir.exists()
    pg_host, pg_port = re.search(r"postgres\s+([\d.]+):(\d+)", output).groups()  # type: ignore[union-attr]
    minio_host, minio_port = re.search(r"minio\s+http://([\d.]+):(\d+)", output).groups()  # type: ignore[union-attr]
    assert _connection_refused(pg_host, int(pg_port)) and _connection_refused(minio_host, int(minio_port))
