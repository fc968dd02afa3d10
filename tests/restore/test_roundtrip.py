"""Create, list, verify and restore against real MinIO and Postgres."""

from __future__ import annotations

import psycopg

from tests.snapshot.conftest import SnapshotEnv, new_bucket


def test_create_list_verify_restore(minio_env: SnapshotEnv, new_database) -> None:
    e = minio_env
    run = e.run("snapshot", "create")
    assert run.code == 0, run.stderr
    assert run.stdout == "" and run.stderr == ""  # cron: silence on success
    counted = e.run("snapshot", "create", "--json").result()["counts"]
    assert counted["listed_versions"] == len(e.files) - 1  # website_files/ is neither referenced nor included
    assert e.run("snapshots", "prune", "--keep-last", "1").code == 0
    listed = e.run("snapshots", "list", "--json")
    assert listed.code == 0, listed.stderr
    snaps = listed.result()["snapshots"]
    assert len(snaps) == 1
    sid = snaps[0]["id"]
    assert snaps[0]["pinned"] == len(e.files) - 1  # everything but website_files/
    assert snaps[0]["dangling"] == 0
    v = e.run("snapshots", "verify", sid, "--deep", "--json")
    assert v.code == 0, v.stderr
    target_bucket = new_bucket(e.client)
    dbname = new_database()
    r = e.run("restore", sid, "--target-db", dbname, "--objects-to", target_bucket, "--json")
    assert r.code == 0, r.stderr
    res = r.result()
    assert res["objects"]["copied"] == len(e.files) - 1
    assert res["database"]["action"] == "create and restore"
    for key, body in e.files.items():
        if key.startswith("website_files/"):
            continue
        assert e.client.get_object(Bucket=target_bucket, Key=key)["Body"].read() == body
    with psycopg.connect(e.pg.dsn(dbname)) as conn:
        keys = {k for (k,) in conn.execute("SELECT key FROM upload_files")}
    assert keys and keys <= set(e.files)
    again = e.run("restore", sid, "--target-db", dbname, "--objects-to", target_bucket, "--json")
    assert again.code == 0, again.stderr
    assert again.result()["objects"]["copied"] == 0
    assert again.result()["objects"]["already_current"] == len(e.files) - 1
    assert again.result()["database"]["action"] == "already restored"
