"""An encrypted snapshot (age) is unreadable without the identity, and a flipped byte in an encrypted artifact is
detected: by the checksums (`snapshots verify`, exit 4; `restore` refuses), and, when an attacker also rewrites the
checksums, by age's own authentication on decryption. tests/snapshot/test_faults.py covers the wrong identity and
decrypting with the standard `age` tool; this file covers what an attacker with the bucket but not the key sees."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.snapshot.conftest import SnapshotEnv, minio_env, new_bucket, new_database  # noqa: F401  (fixtures)


@pytest.fixture
def encrypted(minio_env: SnapshotEnv, tmp_path: Path) -> tuple[SnapshotEnv, str, Path]:  # noqa: F811
    import pyrage

    identity = pyrage.x25519.Identity.generate()
    key = tmp_path / "key.txt"
    key.write_text(f"{identity}\n")
    run = minio_env.run("snapshot", "create", "--encrypt-to", str(identity.to_public()), "--json")
    assert run.code == 0, run.stderr
    return minio_env, run.result()["snapshot"], key


def test_nothing_readable_without_the_identity(encrypted: tuple[SnapshotEnv, str, Path], new_database) -> None:  # noqa: F811
    e, sid, _ = encrypted
    folder = f"drtool/snapshots/{sid}/"
    dump, manifest = e.get_object(folder + "db.dump.age"), e.get_object(folder + "manifest.jsonl.zst.age")
    assert dump.startswith(b"age-encryption.org/v1\n") and manifest.startswith(b"age-encryption.org/v1\n")
    # Neither the dump (pg_dump's PGDMP header, table names, object keys in rows) nor the manifest's keys leak.
    pinned = [k for k in e.files if k.startswith("upload_files/")]
    for body in (dump, manifest):
        assert b"PGDMP" not in body and b"upload_files" not in body and b"CREATE TABLE" not in body
        assert not any(k.encode() in body for k in pinned)
    # The clear-text files hold no object key, row or credential either: only ids, sizes, counts and checksums.
    for name in ("meta.json", "SHA256SUMS", "COMMITTED"):
        body = e.get_object(folder + name)
        assert not any(k.encode() in body for k in pinned), name
        assert e.pg.password.encode() not in body and e.env["DRTOOL_S3_SECRET_KEY"].encode() not in body

    target, dbname = new_bucket(e.client), new_database()
    refused = e.run("restore", sid, "--target-db", dbname, "--objects-to", target)
    assert refused.code == 2 and "--identity" in refused.stderr, refused.stderr
    assert not e.database_exists(dbname)
    deep = e.run("snapshots", "verify", sid, "--deep")
    assert deep.code == 2 and "--identity" in deep.stderr
    pinned_check = e.run("verify", "--snapshot", sid, "--skip-vectors")
    assert pinned_check.code == 2 and "--identity" in pinned_check.stderr, pinned_check.stderr


@pytest.mark.parametrize("artifact", ["db.dump.age", "manifest.jsonl.zst.age"])
def test_flipped_byte_detected_and_restore_refuses(encrypted: tuple[SnapshotEnv, str, Path], artifact: str,
                                                   new_database) -> None:  # noqa: F811
    e, sid, key = encrypted
    name = f"drtool/snapshots/{sid}/{artifact}"
    original = e.get_object(name)
    middle = len(original) // 2
    e.put_object(name, original[:middle] + bytes([original[middle] ^ 0x01]) + original[middle + 1:])

    verify = e.run("snapshots", "verify", sid, "--json")
    assert verify.code == 4, verify.stderr
    assert f"{artifact}: checksum mismatch" in verify.stderr
    target, dbname = new_bucket(e.client), new_database()
    restore = e.run("restore", sid, "--target-db", dbname, "--objects-to", target, "--identity", str(key))
    assert restore.code == 4, restore.stderr
    assert artifact.removesuffix(".age") in restore.stderr and "Traceback" not in restore.stderr
    if artifact == "manifest.jsonl.zst.age":  # checked before the first copy: not one object written
        assert e.keys(target) == []
    else:  # objects come first (they are the manifest's verified versions); the dump is checked in full before
        assert not e.database_exists(dbname)  # the database is even created

    e.put_object(name, original)
    assert e.run("snapshots", "verify", sid, "--deep", "--identity", str(key)).code == 0


def test_tampering_that_rewrites_the_checksums_is_caught_by_age(encrypted: tuple[SnapshotEnv, str, Path],
                                                                new_database) -> None:  # noqa: F811
    """An attacker who can write the bucket flips a byte and recomputes SHA256SUMS and COMMITTED: the plain
    checksum check passes, but age's authenticated encryption refuses the modified ciphertext."""
    e, sid, key = encrypted
    folder = f"drtool/snapshots/{sid}/"
    original = e.get_object(folder + "db.dump.age")
    middle = len(original) // 2
    forged = original[:middle] + bytes([original[middle] ^ 0x01]) + original[middle + 1:]
    e.put_object(folder + "db.dump.age", forged)
    sums = e.get_object(folder + "SHA256SUMS").decode()
    sums = sums.replace(hashlib.sha256(original).hexdigest(), hashlib.sha256(forged).hexdigest())
    e.put_object(folder + "SHA256SUMS", sums.encode())
    committed = json.loads(e.get_object(folder + "COMMITTED"))
    committed["sha256sums"] = hashlib.sha256(sums.encode()).hexdigest()
    e.put_object(folder + "COMMITTED", json.dumps(committed, indent=1).encode())

    assert e.run("snapshots", "verify", sid).code == 0  # the forgery is consistent at checksum level
    deep = e.run("snapshots", "verify", sid, "--deep", "--identity", str(key))
    assert deep.code == 4, deep.stderr
    assert "db.dump.age" in deep.stderr
    assert "modified or truncated" in deep.stderr
    target, dbname = new_bucket(e.client), new_database()
    restore = e.run("restore", sid, "--target-db", dbname, "--objects-to", target, "--identity", str(key))
    assert restore.code == 4, restore.stderr
    assert "db.dump.age: decryption failed" in restore.stderr and "modified or truncated" in restore.stderr
    assert not e.database_exists(dbname)
    assert "Traceback" not in deep.stderr + restore.stderr
