"""A well-configured Dify stack on the real servers, for `drtool audit` to find nothing wrong with; each test then
breaks exactly one thing and checks that the audit names exactly that finding.

The world: site A of the replicated MinIO pair (drtool uses an IAM user, not root), a Dify bucket with versioning
and a chunk file per dataset, a snapshot bucket with Object Lock holding one signed committed snapshot (made by
the real `drtool snapshot create`) and one passed drill record, the seeded Dify database on `isolated_pg`, and
the rebuild embedding model equal to the datasets' model.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from drtool.cli.main import run
from drtool.core import drill_report as dr
from drtool.core import signing
from drtool.core.drill_record import build_record
from tests.foundation.json_contract import check_json_run
from tests.helpers.cli import NOT_INHERITED
from tests.snapshot.conftest import fill_source
from tests.stack.dify_db import DifyDatabase, create_dify_database
from tests.stack.dify_seed import DEFAULT_EMBEDDING_MODEL
from tests.stack.minio_sites import MinioSites
from tests.stack.pg_server import PostgresServer

AUDIT_USER = "drtool-audit-user"
PROBLEMS = ("warning", "critical")


@dataclass
class AuditRun:
    code: int
    out: str
    err: str
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def result(self) -> dict[str, Any]:
        return [e for e in self.events if e.get("event") == "result"][-1]

    @property
    def findings(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == "audit.finding"]

    def problems(self) -> dict[str, str]:
        """id -> severity of every warning or critical finding (the ones that change the exit code)."""
        return {f["id"]: f["severity"] for f in self.findings if f["severity"] in PROBLEMS}


@dataclass
class AuditWorld:
    client: Any  # root client of site A (to set the world up and break it)
    dify_bucket: str
    snap_bucket: str
    db: DifyDatabase
    env: dict[str, str]
    audit: Callable[..., AuditRun]
    # grant(dify_bucket, snap_bucket): the user's documented policy for other buckets (a test that switches one)
    grant: Callable[[str, str], None]


AUDIT_POLICY = "drtool-audit-world"


def grant_documented(sites: MinioSites, dify_bucket: str, snap_bucket: str, *, name: str = AUDIT_POLICY,
                     user: str = AUDIT_USER, extra: list[dict[str, Any]] | None = None,
                     leave_out: tuple[str, ...] = (), alias: str = "A") -> None:
    """Give `user` exactly docs/iam.md's policies (their union, drtool.core.iam.documented_policy) for these two
    buckets, plus `extra` statements and without the actions in `leave_out`: what a careful operator gives the
    key drtool runs with, so a clean audit has no `s3.policy_too_wide`. Replaces the policy `name` in place."""
    from drtool.core.iam import documented_policy

    policy = documented_policy(dify_bucket, snap_bucket)
    for st in policy["Statement"]:
        st["Action"] = [a for a in st["Action"] if a not in leave_out]
    policy["Statement"] = [st for st in policy["Statement"] if st["Action"]] + list(extra or [])
    path = Path(sites.mc_config_dir) / f"{name}.json"
    path.write_text(json.dumps(policy))
    sites.mc("admin", "policy", "create", alias, name, str(path))
    sites.mc("admin", "policy", "attach", alias, name, "--user", user, check=False)  # already attached: fine


# The audit has servers of its own (tests/stack/plugin.py): `isolated_minio_pair`, since an audit judges the whole
# pair and the shared one's leftovers decided verdicts, and `isolated_pg`, since an audit reads every database of
# the server. Its tests and fixtures ask for those by name, never for the shared `minio_pair`, `pg` or `dify_db`.


AUDIT_TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every audit test is marked own_servers: the shared pair, Postgres and Dify database are off limits here."""
    for item in items:
        if Path(item.path).resolve().is_relative_to(AUDIT_TESTS):
            item.add_marker(pytest.mark.own_servers("minio_pair", "pg", "dify_db", "dify_db_factory", "new_database"))


@pytest.fixture
def audit_dify_db(isolated_pg: PostgresServer) -> Iterator[DifyDatabase]:
    """The seeded Dify database of `world`, on the audit's own Postgres (dify_db's is on the shared `pg`);
    dropped after the test."""
    database = create_dify_database(isolated_pg)
    yield database
    isolated_pg.drop_database(database.dbname)


@pytest.fixture(scope="session")
def audit_user(isolated_minio_pair: MinioSites) -> tuple[str, str]:
    """A non-root IAM user (created once; site replication copies it to B); each `world` gives it exactly the
    documented policy for its buckets (grant_documented)."""
    password = "audit-" + secrets.token_urlsafe(18)
    isolated_minio_pair.mc("admin", "user", "add", "A", AUDIT_USER, password)
    return AUDIT_USER, password


def in_process(capsys: pytest.CaptureFixture[str]) -> Callable[..., AuditRun]:
    def call(*args: str) -> AuditRun:
        capsys.readouterr()
        code = run(list(args))
        captured = capsys.readouterr()
        check_json_run(args, captured.out, code)
        events = [json.loads(line) for line in captured.out.splitlines() if line.startswith("{")]
        return AuditRun(code, captured.out, captured.err, events)

    return call


def passed_drill(finished: datetime) -> dict[str, Any]:
    """A drill record as `drtool drill` writes it (drill_record.build_record), finished at `finished`."""
    started = finished - timedelta(minutes=5)
    return build_record(
        drill_id=finished.strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6], started_at=started,
        finished_at=finished, snapshot={"id": "x"}, fence=started - timedelta(hours=1),
        phases=[{"name": "restore-db", "status": "ok", "seconds": 1.0}], rto_slo=None, rpo_slo=None, lag=None,
        lag_source="none", scratch={}, cleanup={}, kept=False, problems=[], version="test")


def put_drill(client: Any, bucket: str, record: dict[str, Any]) -> None:
    client.put_object(Bucket=bucket, Key=f"drtool/drills/{record['drill_id']}.json",
                      Body=dr.render_json(record).encode(), ContentType="application/json")


class _Collector(BaseHTTPRequestHandler):
    """An audit-log collector: MinIO's audit webhook posts one JSON record per request; 200 keeps it online."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def set_audit_webhook(sites: MinioSites, endpoint: str | None) -> None:
    """Point both sites' audit webhook at `endpoint`, or reset it (None). Applied live, no restart."""
    for alias in ("A", "B"):
        if endpoint is None:
            sites.mc("admin", "config", "reset", alias, "audit_webhook", check=False)
        else:
            sites.mc("admin", "config", "set", alias, "audit_webhook", "enable=on", f"endpoint={endpoint}")


@pytest.fixture(scope="package")
def audit_collector(isolated_minio_pair: MinioSites) -> Iterator[str]:
    """A well-configured MinIO sends its audit log somewhere: a real HTTP collector on loopback while the audit
    tests run (the webhook is reset after them, so the shared MinIO pair is as the other tests expect it)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}/audit"
    set_audit_webhook(isolated_minio_pair, endpoint)
    try:
        yield endpoint
    finally:
        set_audit_webhook(isolated_minio_pair, None)
        server.shutdown()


@pytest.fixture
def world(isolated_minio_pair: MinioSites, audit_user: tuple[str, str], audit_dify_db: DifyDatabase,
          isolated_pg: PostgresServer,
          monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str],
          audit_collector: str) -> Iterator[AuditWorld]:
    site = isolated_minio_pair.a
    client = site.s3_client()
    tag = uuid.uuid4().hex[:8]
    dify_bucket, snap_bucket = f"audit-dify-{tag}", f"audit-snap-{tag}"
    client.create_bucket(Bucket=dify_bucket)
    client.create_bucket(Bucket=snap_bucket, ObjectLockEnabledForBucket=True)
    for b in (dify_bucket, snap_bucket):
        client.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
    fill_source(client, dify_bucket, audit_dify_db)
    grant_documented(isolated_minio_pair, dify_bucket, snap_bucket)
    key_file = tmp_path / "signing.key"
    key = signing.generate()
    key_file.write_bytes(signing.private_pem(key))
    key_file.chmod(0o600)
    for name in list(os.environ):
        if name.startswith(NOT_INHERITED):  # tests.helpers.cli's rule, applied to this process
            monkeypatch.delenv(name)
    env = {
        "DRTOOL_S3_ENDPOINT": site.endpoint, "DRTOOL_S3_ACCESS_KEY": audit_user[0],
        "DRTOOL_S3_SECRET_KEY": audit_user[1], "DRTOOL_S3_BUCKET": dify_bucket, "DRTOOL_S3_ADDRESS_STYLE": "path",
        "DRTOOL_SNAPSHOT_BUCKET": snap_bucket, "DRTOOL_SNAPSHOT_PG_BIN_DIR": str(isolated_pg.bin_dir),
        "DRTOOL_SNAPSHOT_SIGNING_KEY_FILE": str(key_file),
        "DRTOOL_POSTGRES_HOST": isolated_pg.host, "DRTOOL_POSTGRES_PORT": str(isolated_pg.port),
        "DRTOOL_POSTGRES_USER": isolated_pg.user,
        "DRTOOL_POSTGRES_PASSWORD": isolated_pg.password, "DRTOOL_POSTGRES_DATABASE": audit_dify_db.dbname,
        "DRTOOL_POSTGRES_SSLMODE": "disable",
        "DRTOOL_REPLICATION_SITES": f"A={isolated_minio_pair.a.endpoint},B={isolated_minio_pair.b.endpoint}",
        "DRTOOL_REPLICATION_ACCESS_KEY": site.access_key, "DRTOOL_REPLICATION_SECRET_KEY": site.secret_key,
        "DRTOOL_REPLICATION_BACKLOG_CHECK": "false",
        "DRTOOL_EMBEDDING_MODEL": DEFAULT_EMBEDDING_MODEL,
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(tmp_path)  # no drtool.toml of the repository can leak in
    call = in_process(capsys)
    made = call("snapshot", "create", "--json")
    assert made.code == 0, made.out + made.err
    put_drill(client, snap_bucket, passed_drill(datetime.now(UTC) - timedelta(days=1)))
    yield AuditWorld(client, dify_bucket, snap_bucket, audit_dify_db, env, call,
                lambda dify, snap: grant_documented(isolated_minio_pair, dify, snap))


@pytest.fixture(scope="session")
def solo_minio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str]]:
    """One MinIO without site replication: (endpoint, root access key, root secret key)."""
    from tests.stack.minio_sites import local_minio_site

    with local_minio_site(tmp_path_factory.mktemp("audit-solo")) as site:
        yield site.endpoint, site.access_key, site.secret_key
