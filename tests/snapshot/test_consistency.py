"""The consistency test of issue 3: rows and objects change while a snapshot runs; the restore must agree with
itself at the fence.

A writer thread behaves as Dify does: an upload puts the object, then inserts its upload_files row; a delete
removes the row, then the object; processed chunks and the tenant's private key are overwritten in place. It runs
from before the snapshot starts until after it commits, so operations land on both sides of the fence. Each
operation is bracketed by the database clock (before, and after its commit), which tells for most of them which
side of the fence they are on; the server's own version listing is the ground truth for overwrites.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from tests.snapshot.conftest import SnapshotEnv, new_bucket


@dataclass
class ObjectOp:
    kind: str  # upload | delete | overwrite
    key: str
    row_id: str | None
    body: bytes | None
    before: datetime  # database clock before the operation started
    after: datetime  # database clock after it committed / completed


def _clock(conn: psycopg.Connection[Any]) -> datetime:
    return conn.execute("SELECT clock_timestamp()").fetchone()[0]


def _writer(e: SnapshotEnv, stop: threading.Event, ops: list[ObjectOp], errors: list[BaseException]) -> None:
    try:
        tenant = e.db.tenant_id
        overwrite_keys = [f"privkeys/{tenant}/private.pem"] + [
            f"datasets/{ds}/processed/chunks.jsonl" for ds in e.db.dataset_ids]
        mine: list[tuple[str, str]] = []  # (row id, key) uploaded by the writer and not deleted yet
        with psycopg.connect(e.db.dsn, autocommit=True) as conn:
            creator = conn.execute("SELECT created_by FROM upload_files LIMIT 1").fetchone()[0]
            i = 0
            while not stop.is_set():
                i += 1
                kind = ("upload", "overwrite", "upload", "delete")[i % 4]
                before = _clock(conn)
                if kind == "upload":
                    row_id, key = str(uuid.uuid4()), f"upload_files/{tenant}/{uuid.uuid4()}.txt"
                    body = f"upload {i} {key}".encode()
                    e.client.put_object(Bucket=e.source_bucket, Key=key, Body=body)
                    conn.execute(
                        "INSERT INTO upload_files (id, tenant_id, storage_type, key, name, size, extension,"
                        " created_by, hash) VALUES (%s, %s, 's3', %s, 'f.txt', %s, 'txt', %s, %s)",
                        (row_id, tenant, key, len(body), creator, hashlib.sha3_256(body).hexdigest()))
                    mine.append((row_id, key))
                    ops.append(ObjectOp("upload", key, row_id, body, before, _clock(conn)))
                elif kind == "delete" and mine:
                    row_id, key = mine.pop(0)
                    conn.execute("DELETE FROM upload_files WHERE id = %s", (row_id,))
                    e.client.delete_object(Bucket=e.source_bucket, Key=key)
                    ops.append(ObjectOp("delete", key, row_id, None, before, _clock(conn)))
                else:
                    key = overwrite_keys[i % len(overwrite_keys)]
                    body = f"overwrite {i} of {key}".encode()
                    e.client.put_object(Bucket=e.source_bucket, Key=key, Body=body)
                    ops.append(ObjectOp("overwrite", key, None, body, before, _clock(conn)))
                time.sleep(0.01)
    except BaseException as exc:  # reported by the test
        errors.append(exc)


def test_writes_during_snapshot_restore_consistent_at_fence(minio_env: SnapshotEnv, new_database) -> None:
    e = minio_env
    ops: list[ObjectOp] = []
    errors: list[BaseException] = []
    stop = threading.Event()
    writer = threading.Thread(target=_writer, args=(e, stop, ops, errors), daemon=True)
    writer.start()
    time.sleep(1.0)
    run = e.run("snapshot", "create", "--json")
    time.sleep(0.5)
    stop.set()
    writer.join(30)
    assert not errors, errors
    assert run.code == 0, run.stderr  # no dangling reference: rows never point at an object written later
    result = run.result()
    sid, fence = result["snapshot"], datetime.fromisoformat(result["fence"])
    # The snapshot was taken between these two database times (the fence is never before it).
    start = datetime.fromisoformat(result["fence_window_start"])
    assert start <= fence

    # The test only means something if the writer was busy on both sides of the fence.
    for kind in ("upload", "overwrite", "delete"):
        assert any(o.kind == kind and o.after < start for o in ops), f"no {kind} before the fence"
        assert any(o.kind == kind and o.before > fence for o in ops), f"no {kind} after the fence"

    target, dbname = new_bucket(e.client), new_database()
    r = e.run("restore", sid, "--target-db", dbname, "--objects-to", target, "--json")
    assert r.code == 0, r.stderr
    restored_keys = set(e.keys(target))

    with psycopg.connect(e.pg.dsn(dbname)) as conn:
        rows = {rid: (key, h) for rid, key, h in conn.execute("SELECT id::text, key, hash FROM upload_files")}
    # Every restored row finds its object, with the bytes the row describes.
    for rid, (key, digest) in rows.items():
        assert key in restored_keys, f"row {rid} has no object {key}"
        body = e.client.get_object(Bucket=target, Key=key)["Body"].read()
        if digest and rid in {o.row_id for o in ops}:
            assert hashlib.sha3_256(body).hexdigest() == digest
    # Rows: committed before the fence -> present; started after it -> absent.
    for o in ops:
        if o.kind == "upload":
            if o.after < start:  # committed before the snapshot: present, unless a delete may have been too
                assert o.row_id in rows or any(d.row_id == o.row_id and d.before <= fence for d in ops
                                               if d.kind == "delete"), f"upload before the fence lost: {o.key}"
            if o.before > fence:
                assert o.row_id not in rows and o.key not in restored_keys, f"upload after the fence: {o.key}"
        if o.kind == "delete":
            if o.before > fence:  # deleted after the fence: row and object are in the snapshot
                assert o.row_id in rows and o.key in restored_keys, f"delete after the fence leaked: {o.key}"
            if o.after < start:
                assert o.row_id not in rows and o.key not in restored_keys, f"deleted row came back: {o.key}"
    # Overwritten objects: the restored bytes are those of the newest version not after the fence.
    for key in {o.key for o in ops if o.kind == "overwrite"}:
        versions = [v for page in e.client.get_paginator("list_object_versions").paginate(
            Bucket=e.source_bucket, Prefix=key) for v in page.get("Versions", ()) if v["Key"] == key]
        at_fence = max((v for v in versions if v["LastModified"] <= fence), key=lambda v: v["LastModified"])
        expected = e.client.get_object(Bucket=e.source_bucket, Key=key, VersionId=at_fence["VersionId"])["Body"]
        assert e.client.get_object(Bucket=target, Key=key)["Body"].read() == expected.read()
        later = [o for o in ops if o.kind == "overwrite" and o.key == key and o.before > fence]
        restored = e.client.get_object(Bucket=target, Key=key)["Body"].read()
        assert all(o.body != restored for o in later), f"{key}: restored a version written after the fence"
