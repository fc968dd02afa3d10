"""SeaweedFS as a second S3 backend: a versioned bucket end to end, and an unversioned one with
--copy-unversioned (MinIO's site replication forces versioning on, so that case can only run here)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from tests.snapshot.conftest import SnapshotEnv, fill_source, make_env, new_bucket
from tests.stack.dify_db import DifyDatabase
from tests.stack.pg_server import PostgresServer
from tests.stack.seaweed_clusters import SeaweedClusters


@pytest.fixture
def seaweed_env(seaweed_pair: SeaweedClusters, dify_db: DifyDatabase, pg: PostgresServer) -> Iterator[SnapshotEnv]:
    cluster = seaweed_pair.a
    client = cluster.s3_client()
    source, dest = new_bucket(client), new_bucket(client)
    files = fill_source(client, source, dify_db)
    env = make_env(endpoint=cluster.endpoint, access_key=cluster.access_key, secret_key=cluster.secret_key,
                   source_bucket=source, dest_bucket=dest, db=dify_db, pg=pg)
    yield SnapshotEnv(env=env, client=client, source_bucket=source, dest_bucket=dest, db=dify_db, pg=pg,
                      files=files)


def test_seaweedfs_create_verify_restore(seaweed_env: SnapshotEnv, new_database) -> None:
    e = seaweed_env
    run = e.run("snapshot", "create", "--json")
    assert run.code == 0, run.stderr
    sid = run.result()["snapshot"]
    assert run.result()["counts"]["pinned"] == len(e.files) - 1
    key = next(k for k in e.files if k.startswith("privkeys/"))
    e.client.put_object(Bucket=e.source_bucket, Key=key, Body=b"rotated after the snapshot")
    assert e.run("snapshots", "verify", sid, "--deep").code == 0
    target, dbname = new_bucket(e.client), new_database()
    r = e.run("restore", sid, "--target-db", dbname, "--objects-to", target, "--json")
    assert r.code == 0, r.stderr
    for k, body in e.files.items():
        if not k.startswith("website_files/"):
            assert e.client.get_object(Bucket=target, Key=k)["Body"].read() == body
    with psycopg.connect(e.pg.dsn(dbname)) as conn:
        assert conn.execute("SELECT count(*) FROM upload_files").fetchone()[0] > 0
    # In place: only the rotated key goes back to its pinned version; a second run changes nothing.
    inplace = e.run("restore", sid, "--json")
    assert inplace.code == 0 and inplace.result()["objects"]["copied"] == 1, inplace.stderr
    assert e.client.get_object(Bucket=e.source_bucket, Key=key)["Body"].read() == e.files[key]
    again = e.run("restore", sid, "--json")
    assert again.result()["objects"]["copied"] == 0


def test_unversioned_bucket_refused_then_copied(seaweed_env: SnapshotEnv, new_database) -> None:
    e = seaweed_env
    plain = new_bucket(e.client, versioned=False)
    for key, body in e.files.items():
        e.client.put_object(Bucket=plain, Key=key, Body=body)
    env = {"DRTOOL_S3_BUCKET": plain}
    refused = e.run("snapshot", "create", extra_env=env)
    assert refused.code == 2 and "is not versioned" in refused.stderr and "--copy-unversioned" in refused.stderr
    run = e.run("snapshot", "create", "--copy-unversioned", "--json", extra_env=env)
    assert run.code == 3 and "not versioned" in run.stderr  # committed, with the warning
    sid = run.result()["snapshot"]
    copies = e.keys(e.dest_bucket, f"drtool/snapshots/{sid}/objects/")
    assert len(copies) == len(e.files) - 1
    key = next(k for k in e.files if k.startswith("upload_files/"))
    e.client.put_object(Bucket=plain, Key=key, Body=b"overwritten later")  # the original is gone now
    assert e.run("snapshots", "verify", sid, "--deep").code == 0
    target = new_bucket(e.client)
    r = e.run("restore", sid, "--objects-to", target, "--json", extra_env=env)
    assert r.code == 0, r.stderr
    assert e.client.get_object(Bucket=target, Key=key)["Body"].read() == e.files[key]


