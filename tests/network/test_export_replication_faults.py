"""Network faults for export-chunks (writing chunk files to the object store) and replication status (MinIO's
admin API and S3 calls to each site), with the object store behind toxiproxy."""

from __future__ import annotations

import os

import pytest

from tests.export.helpers import Bucket, drtool_env, new_bucket_on
from tests.helpers.replication import wait_peers_online
from tests.network.conftest import FAST_S3, ProcessRun, host_port, run_drtool
from tests.stack.dify_db import DifyDatabase
from tests.stack.minio_sites import MinioSites
from tests.stack.pg_server import PostgresServer
from tests.stack.toxiproxy import Proxy, Toxiproxy


@pytest.fixture
def a_proxy(toxiproxy: Toxiproxy, minio_pair: MinioSites) -> Proxy:
    return toxiproxy.proxy("minio_a_export", host_port(minio_pair.a.endpoint))


def _export_env(pg: PostgresServer, db: DifyDatabase, bucket: Bucket, proxy: Proxy) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRTOOL_")}
    env.update(drtool_env(pg, db.dbname, bucket, **FAST_S3))
    env["DRTOOL_S3_ENDPOINT"] = proxy.url()
    return env


def _exported(bucket: Bucket, db: DifyDatabase) -> dict[str, int]:
    """Lines of each dataset's chunk file, read directly (not through the proxy)."""
    assert db.seed is not None
    return {d.id: len(bucket.chunks(f"datasets/{d.id}/processed/chunks.jsonl")) for d in db.seed.datasets}


def test_export_with_resets_and_bandwidth_cap_that_clear(minio_pair: MinioSites, pg: PostgresServer,
                                                         dify_db: DifyDatabase, a_proxy: Proxy) -> None:
    bucket = new_bucket_on(minio_pair.a)
    env = _export_env(pg, dify_db, bucket, a_proxy)
    a_proxy.bandwidth(128, stream="upstream")
    reset = a_proxy.reset_peer()
    a_proxy.later(1.0, a_proxy.remove_toxic, reset)
    run = run_drtool(env, "--json", "export-chunks", "--all")
    assert run.code == 0, run.stderr[-3000:]
    assert dify_db.seed is not None
    assert _exported(bucket, dify_db) == {d.id: len(d.index_nodes) for d in dify_db.seed.datasets}


def test_export_upload_stalls_then_next_run_writes(minio_pair: MinioSites, pg: PostgresServer,
                                                   dify_db: DifyDatabase, a_proxy: Proxy) -> None:
    """The store accepts connections and never answers: exit 1 naming it, no chunk file (not even a partial one)
    is visible, and the next run writes both."""
    bucket = new_bucket_on(minio_pair.a)
    env = _export_env(pg, dify_db, bucket, a_proxy)
    a_proxy.blackhole()
    failed = run_drtool(dict(env, DRTOOL_S3_MAX_ATTEMPTS="3"), "export-chunks", "--all")
    assert failed.code == 1, failed.stderr[-3000:]
    assert failed.no_traceback, failed.stderr[-3000:]
    assert "object store" in failed.stderr and a_proxy.listen in failed.stderr, failed.stderr[-3000:]
    assert "s3.read_timeout" in failed.stderr, failed.stderr[-3000:]
    assert bucket.keys("datasets/") == []
    a_proxy.clear()
    again = run_drtool(env, "--json", "export-chunks", "--all")
    assert again.code == 0, again.stderr[-3000:]
    assert dify_db.seed is not None
    assert _exported(bucket, dify_db) == {d.id: len(d.index_nodes) for d in dify_db.seed.datasets}


# --- replication status ----------------------------------------------------------------------------------


def _status_env(minio_pair: MinioSites, site_a: str, site_b: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRTOOL_")}
    env.update({
        "DRTOOL_REPLICATION_SITES": f"A={site_a},B={site_b}",
        "DRTOOL_REPLICATION_ACCESS_KEY": minio_pair.a.access_key,
        "DRTOOL_REPLICATION_SECRET_KEY": minio_pair.a.secret_key,
        "DRTOOL_REPLICATION_SETTLE_SECONDS": "0", "DRTOOL_REPLICATION_TIMEOUT": "2",
        "DRTOOL_REPLICATION_MAX_FAILED_LAST_HOUR": "1000000",
    })
    return env


def _reasons(run: ProcessRun) -> set[tuple[str, str]]:
    result = next(e for e in run.events() if e.get("event") == "result")
    return {(str(r["code"]), str(r.get("site"))) for r in result["reasons"]}


def test_replication_status_with_latency_is_healthy(minio_pair: MinioSites, toxiproxy: Toxiproxy) -> None:
    wait_peers_online(minio_pair)  # another file may just have restarted site B
    b = toxiproxy.proxy("minio_b_status", host_port(minio_pair.b.endpoint))
    b.latency(200, jitter_ms=50)
    run = run_drtool(_status_env(minio_pair, minio_pair.a.endpoint, b.url()), "--json", "replication", "status",
                     "--no-bucket-check")
    assert run.code in (0, 3), run.stderr[-3000:]
    assert not any(code == "site_unreachable" for code, _ in _reasons(run))


def test_replication_status_site_that_hangs_is_critical_not_a_hang(minio_pair: MinioSites,
                                                                    toxiproxy: Toxiproxy) -> None:
    """Site B accepts connections and never answers: status must not wait forever (replication.timeout)."""
    b = toxiproxy.proxy("minio_b_status", host_port(minio_pair.b.endpoint))
    b.blackhole()
    env = _status_env(minio_pair, minio_pair.a.endpoint, b.url())
    run = run_drtool(env, "--json", "replication", "status", "--no-bucket-check", timeout=120)
    assert run.code == 4, run.stderr[-3000:]
    assert run.no_traceback, run.stderr[-3000:]
    assert ("site_unreachable", "B") in _reasons(run)
    b.clear()
    again = run_drtool(env, "--json", "replication", "status", "--no-bucket-check")
    assert again.code in (0, 3), again.stderr[-3000:]
    assert ("site_unreachable", "B") not in _reasons(again)

