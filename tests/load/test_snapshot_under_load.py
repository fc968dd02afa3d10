"""Issue 7, Load: a snapshot taken while writers keep uploading (object, then upload_files row), overwriting objects
in place and deleting (row, then object) at a steady rate. The snapshot succeeds, and its restore is consistent:
every restored row finds its object at the version the manifest pinned, with the bytes written for that row;
nothing started after the fence is there; overwritten objects come back as they were at the fence.

Throughput figures are the benchmark's job (bench/load); this test asserts correctness only."""

from __future__ import annotations

import hashlib
import io
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import psycopg

from drtool.core import manifest as mf
from drtool.ops.snapshot.restore_objects import MARKER_META
from tests.load.workload import Op, Writer
from tests.snapshot.conftest import SnapshotEnv, new_bucket

WRITERS = 2
RATE = 15.0  # operations per second per writer
EXTRA_OBJECTS = 1500  # under datasets/*/processed/: the listing takes a while, so the writers overlap it


def _sha(body: bytes) -> str:
    return hashlib.sha3_256(body).hexdigest()


def test_snapshot_under_steady_writes_restores_consistently(minio_env: SnapshotEnv, new_database) -> None:
    e = minio_env
    ds = e.db.dataset_ids[0]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: e.client.put_object(Bucket=e.source_bucket, Body=b"part %d" % i,
                                                    Key=f"datasets/{ds}/processed/part-{i:05d}.jsonl"),
                      range(EXTRA_OBJECTS)))
    overwrite_keys = [f"privkeys/{e.db.tenant_id}/private.pem"] + [
        f"datasets/{d}/processed/chunks.jsonl" for d in e.db.dataset_ids]
    original = {k: _sha(e.files[k]) for k in overwrite_keys}
    writers = [Writer(e.client, e.source_bucket, e.db.dsn, str(e.db.tenant_id), overwrite_keys, rate=RATE,
                      seed=s + 1).start() for s in range(WRITERS)]
    time.sleep(2.0)
    run = e.run("snapshot", "create", "--json")
    time.sleep(1.0)
    for w in writers:
        w.stop()
    assert all(not w.errors for w in writers), [w.errors for w in writers]
    assert run.code == 0, run.stderr  # no dangling reference, no warning
    result = run.result()
    sid, fence = result["snapshot"], datetime.fromisoformat(result["fence"])
    start = datetime.fromisoformat(result["fence_window_start"])
    ops: list[Op] = [o for w in writers for o in w.ops]
    for kind in ("upload", "overwrite", "delete"):  # the writers were busy on both sides of the fence
        assert any(o.kind == kind and o.after < start for o in ops), f"no {kind} before the fence"
        assert any(o.kind == kind and o.before > fence for o in ops), f"no {kind} after the fence"

    target, dbname = new_bucket(e.client), new_database()
    restored = e.run("restore", sid, "--target-db", dbname, "--objects-to", target, "--json")
    assert restored.code == 0, restored.stderr
    folder = f"drtool/snapshots/{sid}/"
    manifest = e.client.get_object(Bucket=e.dest_bucket, Key=folder + mf.MANIFEST)["Body"].read()
    pinned = {r.key: r.version_id for r in mf.read_manifest(io.BytesIO(manifest)) if r.state == mf.STATE_PINNED}
    target_keys = set(e.keys(target))

    with psycopg.connect(e.pg.dsn(dbname)) as conn:
        rows = {rid: (key, h) for rid, key, h in conn.execute("SELECT id::text, key, hash FROM upload_files")}
    uploads = {o.row_id: o for o in ops if o.kind == "upload"}
    checked = 0
    for rid, (key, digest) in rows.items():
        # Every restored row finds its object, at the version the manifest pinned, with the row's bytes.
        assert key in target_keys and key in pinned, f"row {rid}: no object {key}"
        head = e.client.head_object(Bucket=target, Key=key)
        assert head["Metadata"].get(MARKER_META) == pinned[key], f"{key}: not the pinned version"
        body = e.client.get_object(Bucket=target, Key=key)["Body"].read()
        source = e.client.get_object(Bucket=e.source_bucket, Key=key, VersionId=pinned[key])["Body"].read()
        assert body == source
        if rid in uploads:
            assert digest == uploads[rid].digest and _sha(body) == digest, f"row {rid}: wrong bytes"
            checked += 1
        else:
            assert body == e.files[key], f"seeded row {rid}: wrong bytes"
    assert checked >= 10, f"only {checked} writer rows were restored"

    for o in ops:
        if o.kind == "upload" and o.before > fence:  # started after the fence: neither row nor object
            assert o.row_id not in rows and o.key not in target_keys, f"upload after the fence: {o.key}"
        if o.kind == "upload" and o.after < start and o.row_id not in rows:  # only a delete may explain it
            assert any(d.row_id == o.row_id and d.before <= fence for d in ops if d.kind == "delete"), o.key
        if o.kind == "delete" and o.before > fence and uploads[o.row_id].after < start:
            # uploaded before the fence, deleted after it: row and object are in the snapshot
            assert o.row_id in rows and o.key in target_keys, f"delete after the fence lost: {o.key}"
        if o.kind == "delete" and o.after < start:
            assert o.row_id not in rows and o.key not in target_keys, f"deleted before the fence: {o.key}"

    # Objects overwritten in place: the bytes current at the fence (server's own version listing), which are
    # the original or one the writers wrote; never one written after the fence.
    for key in overwrite_keys:
        versions = [v for page in e.client.get_paginator("list_object_versions").paginate(
            Bucket=e.source_bucket, Prefix=key) for v in page.get("Versions", ()) if v["Key"] == key]
        at_fence = max((v for v in versions if v["LastModified"] <= fence), key=lambda v: v["LastModified"])
        assert pinned[key] == at_fence["VersionId"]
        digest = _sha(e.client.get_object(Bucket=target, Key=key)["Body"].read())
        written = {o.digest for o in ops if o.kind == "overwrite" and o.key == key and o.before <= fence}
        assert digest in written | {original[key]}
        assert digest not in {o.digest for o in ops if o.kind == "overwrite" and o.key == key and o.before > fence}
