"""A snapshot whose artifacts were damaged or edited after it was committed: `snapshots verify` exits 4 naming
what is wrong, `restore` exits 4 (or 10 when the commit marker is gone) before changing the target.

tests/snapshot/test_faults.py covers a truncated dump, a zeroed manifest byte and a missing SHA256SUMS; here are the
edits a person (or a bad disk) could make that keep the files looking valid."""

from __future__ import annotations

import hashlib
import io
import json
from datetime import UTC, datetime

import psycopg

from drtool.core import manifest as mf
from tests.badinput.strategies import error_message, flip
from tests.snapshot.conftest import SnapshotEnv, new_bucket


def _forged_manifest(original: bytes, which: str, **changes: object) -> bytes:
    """The same records, valid zstd and JSON, with one record's fields changed."""
    out = io.BytesIO()
    writer = mf.ManifestWriter(out)
    for rec in mf.read_manifest(io.BytesIO(original)):
        if rec.key == which:
            for name, value in changes.items():
                setattr(rec, name, value)
        writer.write(rec)
    writer.close()
    return out.getvalue()


def _sums(e: SnapshotEnv, folder: str, **override: bytes) -> bytes:
    current = mf.parse_sums(e.get_object(folder + mf.SUMS))
    for name, body in override.items():
        current[name.replace("_", ".", 1) if name != "manifest" else mf.MANIFEST] = hashlib.sha256(body).hexdigest()
    return mf.format_sums(current)


def _seal(e: SnapshotEnv, sid: str, sums: bytes) -> None:
    folder = f"drtool/snapshots/{sid}/"
    e.put_object(folder + mf.SUMS, sums)
    e.put_object(folder + mf.COMMITTED, mf.committed_marker(sid, hashlib.sha256(sums).hexdigest(), datetime.now(UTC)))


def _assert_restore_refused(e: SnapshotEnv, sid: str, expected: str, new_database: object) -> None:
    """Exit 4 naming `expected`; no database created; no object copied (the dump is checked before the first
    copy, so even a damaged dump leaves the target bucket as it was)."""
    verify = e.run("snapshots", "verify", sid)
    assert verify.code == 4 and expected in error_message(verify.stderr), verify.stderr
    target, dbname = new_bucket(e.client), new_database()  # type: ignore[operator]
    restore = e.run("restore", sid, "--target-db", dbname, "--objects-to", target)
    assert restore.code == 4, restore.stderr
    assert "Traceback" not in restore.stderr and "unexpected error" not in restore.stderr
    assert e.keys(target) == [], "a refused restore copied objects"
    with psycopg.connect(e.pg.admin_dsn) as conn:
        assert conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone() is None


def test_tampered_artifacts_detected_by_verify_and_refused_by_restore(minio_env: SnapshotEnv, new_database) -> None:
    e = minio_env
    run = e.run("snapshot", "create", "--json")
    assert run.code == 0, run.stderr
    sid = run.result()["snapshot"]
    folder = f"drtool/snapshots/{sid}/"
    originals = {name: e.get_object(folder + name) for name in (mf.DUMP, mf.MANIFEST, mf.META, mf.SUMS, mf.COMMITTED)}

    def repair() -> None:
        for name, body in originals.items():
            e.put_object(folder + name, body)

    # 1. One bit flipped in the middle of the dump.
    e.put_object(folder + mf.DUMP, flip(originals[mf.DUMP], len(originals[mf.DUMP]) // 2, 3))
    _assert_restore_refused(e, sid, "db.dump: checksum mismatch", new_database)
    repair()

    # 1b. A dump replaced by something pg_restore cannot read, resealed so the checksums agree.
    junk = b"PGDMP" + bytes(range(256)) * 64
    e.put_object(folder + mf.DUMP, junk)
    _seal(e, sid, _sums(e, folder, db_dump=junk))
    target, dbname = new_bucket(e.client), new_database()
    restore = e.run("restore", sid, "--target-db", dbname, "--objects-to", target)
    assert restore.code == 4 and "is not a dump pg_restore can read" in error_message(restore.stderr), \
        restore.stderr
    assert e.keys(target) == [], "a refused restore copied objects"
    repair()

    # 2. A valid-looking manifest whose first pinned object points at another (existing) version.
    upload = next(k for k in e.files if k.startswith("upload_files/"))
    e.client.put_object(Bucket=e.source_bucket, Key=upload, Body=b"written after the snapshot")
    newer = e.client.head_object(Bucket=e.source_bucket, Key=upload)["VersionId"]
    forged = _forged_manifest(originals[mf.MANIFEST], upload, version_id=newer)
    assert forged != originals[mf.MANIFEST] and len(list(mf.read_manifest(io.BytesIO(forged)))) > 1
    e.put_object(folder + mf.MANIFEST, forged)
    _assert_restore_refused(e, sid, f"{mf.MANIFEST}: checksum mismatch", new_database)

    # 3. ... and SHA256SUMS edited to match it, but not the digest COMMITTED carries.
    e.put_object(folder + mf.SUMS, _sums(e, folder, manifest=forged))
    _assert_restore_refused(e, sid, "SHA256SUMS does not match the digest in COMMITTED", new_database)
    repair()

    # 4. meta.json edited (an earlier fence) with SHA256SUMS to match, COMMITTED untouched.
    meta = json.loads(originals[mf.META])
    meta["fence"] = "2020-01-01T00:00:00+00:00"
    edited = json.dumps(meta).encode()
    e.put_object(folder + mf.META, edited)
    e.put_object(folder + mf.SUMS, _sums(e, folder, meta_json=edited))
    _assert_restore_refused(e, sid, "SHA256SUMS does not match the digest in COMMITTED", new_database)
    repair()

    # 5. Truncated manifest; COMMITTED replaced by garbage; meta.json nested too deeply to parse.
    e.put_object(folder + mf.MANIFEST, originals[mf.MANIFEST][: len(originals[mf.MANIFEST]) // 2])
    _assert_restore_refused(e, sid, f"{mf.MANIFEST}: checksum mismatch", new_database)
    repair()
    e.put_object(folder + mf.COMMITTED, b"[" * 100_000)
    _assert_restore_refused(e, sid, "SHA256SUMS does not match the digest in COMMITTED", new_database)
    repair()
    e.put_object(folder + mf.META, b'{"fence":' * 50_000)
    _assert_restore_refused(e, sid, "meta.json: checksum mismatch", new_database)
    repair()

    # 6. A full forgery, resealed: checksums agree, so only --deep and restore itself can see it.
    fake = _forged_manifest(originals[mf.MANIFEST], upload, version_id="00000000-0000-0000-0000-000000000000")
    e.put_object(folder + mf.MANIFEST, fake)
    _seal(e, sid, _sums(e, folder, manifest=fake))
    assert e.run("snapshots", "verify", sid).code == 0
    deep = e.run("snapshots", "verify", sid, "--deep")
    assert deep.code == 4 and f"object {upload} (version 00000000-0000-0000-0000-000000000000): missing" in \
        error_message(deep.stderr), deep.stderr
    target = new_bucket(e.client)
    restore = e.run("restore", sid, "--objects-to", target)
    assert restore.code == 4 and upload in error_message(restore.stderr), restore.stderr

    # 7. COMMITTED removed: the snapshot no longer exists for list, verify and restore.
    repair()
    assert e.run("snapshots", "verify", sid, "--deep").code == 0  # the repairs restored it exactly
    e.client.delete_object(Bucket=e.dest_bucket, Key=folder + mf.COMMITTED)
    assert sid not in [s["id"] for s in e.run("snapshots", "list", "--json").result()["snapshots"]]
    for args in (("snapshots", "verify", sid), ("restore", sid, "--objects-to", new_bucket(e.client))):
        gone = e.run(*args)
        assert gone.code == 10 and "never committed" in error_message(gone.stderr), gone.stderr


def test_escaping_keys_are_refused_at_snapshot_and_restore(minio_env: SnapshotEnv, new_database) -> None:
    """Rows name keys that would escape their folder; a forged manifest pins one. Neither reaches a target."""
    e = minio_env
    hostile = ["../outside.txt", "upload_files/../../etc/passwd", "/absolute/key", "upload_files/t/a\x01b.txt",
               "upload_files/t/nel\x85.txt", "upload_files\\t\\win.txt", "upload_files/./t/dot.txt"]
    with psycopg.connect(e.db.dsn, autocommit=True) as conn:
        creator = conn.execute("SELECT created_by FROM upload_files LIMIT 1").fetchone()[0]
        for key in hostile:
            conn.execute("INSERT INTO upload_files (id, tenant_id, storage_type, key, name, size, extension,"
                         " created_by) VALUES (gen_random_uuid(), %s, 's3', %s, 'f', 1, 'txt', %s)",
                         (e.db.tenant_id, key, creator))
    run = e.run("snapshot", "create", "--json")
    assert run.code == 3, run.stderr  # a warning, and the snapshot is still taken
    assert f"{len(hostile)} key(s) were refused" in error_message(run.stderr) + run.stdout
    sid = run.result()["snapshot"]
    folder = f"drtool/snapshots/{sid}/"
    records = list(mf.read_manifest(io.BytesIO(e.get_object(folder + mf.MANIFEST))))
    refused = {r.key for r in records if r.state == mf.STATE_REFUSED}
    assert refused == set(hostile)
    assert not [k for k in e.keys(e.dest_bucket, folder) if "outside" in k or "passwd" in k]

    target = new_bucket(e.client)
    ok = e.run("restore", sid, "--objects-to", target)
    assert ok.code == 0, ok.stderr
    assert not set(e.keys(target)) & set(hostile)

    # A forged, resealed manifest pinning an escaping key at a real version id: restore refuses it (exit 4).
    upload = next(k for k in e.files if k.startswith("upload_files/"))
    forged = _forged_manifest(e.get_object(folder + mf.MANIFEST), upload, key="../../escaped.txt")
    e.put_object(folder + mf.MANIFEST, forged)
    _seal(e, sid, _sums(e, folder, manifest=forged))
    target = new_bucket(e.client)
    bad = e.run("restore", sid, "--objects-to", target)
    assert bad.code == 4, bad.stderr
    assert "could escape their folder" in error_message(bad.stderr) and "escaped.txt" in error_message(bad.stderr)
    assert "../../escaped.txt" not in e.keys(target)
