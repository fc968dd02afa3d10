"""Extra stores (issue 13): Dify's plugin storage in a bucket of its own, reached with its own IAM user, and archive
storage, pinned in every snapshot by prefix, checked by `verify --deep`, brought back by `restore --stores`.

Real MinIO (site A of the pair), real Postgres, the real CLI. The plugin bucket's user may touch only that bucket, so
a snapshot that pinned it with drtool's own s3.* credentials would not prove anything: a wrong plugin secret is
refused with exit 12.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from drtool.core import manifest as mf
from tests.snapshot.conftest import SnapshotEnv, new_bucket
from tests.snapshot.test_plugin_database import reseal_meta
from tests.stack.minio_sites import MinioSites
from tests.stack.seaweed_clusters import SeaweedClusters

PLUGIN_FILES = {
    "plugin/langgenius/openai-0.2.1.difypkg": b"PK\x03\x04 an installed plugin package",
    "persistence/tenant-1/plugin-1/oauth.json": b'{"token": "kv state"}',
    "plugin_packages/upload-1.difypkg": b"PK\x03\x04 an uploaded package",
}
ARCHIVE_FILES = {
    "tenant-1/app_id=app-1/year=2026/month=11/workflow_run_id=run-1/workflow_runs.jsonl.gz": b"\x1f\x8b archived run",
}


@dataclass
class Stores:
    e: SnapshotEnv
    plugin_bucket: str
    archive_bucket: str
    plugin_user: str
    plugin_secret: str

    def body(self, bucket: str, key: str) -> bytes:
        return bytes(self.e.client.get_object(Bucket=bucket, Key=key)["Body"].read())

    def meta(self, sid: str) -> dict[str, Any]:
        return json.loads(self.body(self.e.dest_bucket, f"drtool/snapshots/{sid}/meta.json"))


@pytest.fixture
def stores(minio_env: SnapshotEnv, minio_pair: MinioSites, tmp_path: Path) -> Iterator[Stores]:
    e = minio_env
    plugin_bucket, archive_bucket = new_bucket(e.client), new_bucket(e.client)
    user, secret, policy = f"plug{uuid.uuid4().hex[:8]}", f"plugin-secret-{uuid.uuid4().hex[:8]}", "drtool-plugin-only"
    doc = tmp_path / "policy.json"
    doc.write_text(json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": ["s3:*"],
        "Resource": [f"arn:aws:s3:::{plugin_bucket}", f"arn:aws:s3:::{plugin_bucket}/*"]}]}))
    policy = f"{policy}-{user}"
    minio_pair.mc("admin", "policy", "create", "A", policy, str(doc))
    minio_pair.mc("admin", "user", "add", "A", user, secret)
    minio_pair.mc("admin", "policy", "attach", "A", policy, "--user", user)
    for key, body in PLUGIN_FILES.items():
        e.client.put_object(Bucket=plugin_bucket, Key=key, Body=body)
    e.client.put_object(Bucket=plugin_bucket, Key="cwd/unpacked/cache.bin", Body=b"not pinned: a cache")
    for key, body in ARCHIVE_FILES.items():
        e.client.put_object(Bucket=archive_bucket, Key=key, Body=body)
    e.env.update({"DRTOOL_SNAPSHOT_PLUGIN_STORAGE_BUCKET": plugin_bucket,
                  "DRTOOL_SNAPSHOT_PLUGIN_STORAGE_ACCESS_KEY": user,
                  "DRTOOL_SNAPSHOT_PLUGIN_STORAGE_SECRET_KEY": secret,
                  "DRTOOL_SNAPSHOT_ARCHIVE_STORAGE_BUCKET": archive_bucket})  # archive: s3.* credentials
    try:
        yield Stores(e, plugin_bucket, archive_bucket, user, secret)
    finally:
        minio_pair.mc("admin", "user", "remove", "A", user, check=False)
        minio_pair.mc("admin", "policy", "remove", "A", policy, check=False)


def _snapshot(s: Stores) -> str:
    run = s.e.run("snapshot", "create", "--json")
    assert run.code == 0, run.stdout + run.stderr
    return str(run.result()["snapshot"])


def test_stores_are_pinned_and_restore_brings_them_back_byte_identical(stores: Stores) -> None:
    s, e = stores, stores.e
    sid = _snapshot(s)
    meta = s.meta(sid)
    by_name = {st["name"]: st for st in meta["stores"]}
    assert set(by_name) == {"plugin", "archive"}
    assert by_name["plugin"]["bucket"] == s.plugin_bucket and by_name["plugin"]["count"] == len(PLUGIN_FILES)
    assert by_name["archive"]["prefixes"] == ["*"] and by_name["archive"]["count"] == len(ARCHIVE_FILES)
    assert meta["plugin_storage"]["pinned"] is True and meta["plugin_storage"]["store"] == "plugin"
    sums = mf.parse_sums(s.body(e.dest_bucket, f"drtool/snapshots/{sid}/SHA256SUMS"))
    for st in by_name.values():  # covered by SHA256SUMS, so by COMMITTED and a signature
        stored = s.body(e.dest_bucket, f"drtool/snapshots/{sid}/{st['artifact']}")
        assert sums[st["artifact"]] == hashlib.sha256(stored).hexdigest()
    assert e.run("snapshots", "verify", sid, "--deep").code == 0

    # Lose them: an overwrite, a delete, a deleted archive object.
    e.client.put_object(Bucket=s.plugin_bucket, Key="plugin/langgenius/openai-0.2.1.difypkg", Body=b"corrupted")
    e.client.delete_object(Bucket=s.plugin_bucket, Key="persistence/tenant-1/plugin-1/oauth.json")
    (archived,) = ARCHIVE_FILES
    e.client.delete_object(Bucket=s.archive_bucket, Key=archived)
    check = e.run("restore", sid, "--no-objects", "--stores", "--verify-only")
    assert check.code == 4, check.stdout + check.stderr
    run = e.run("restore", sid, "--no-objects", "--stores", "--json")
    assert run.code == 0, run.stdout + run.stderr
    restored = {st["name"]: st for st in run.result()["stores"]}
    assert restored["plugin"]["copied"] == 2 and restored["plugin"]["already_current"] == 1
    assert restored["archive"]["copied"] == 1
    for key, body in PLUGIN_FILES.items():
        assert s.body(s.plugin_bucket, key) == body, key
    for key, body in ARCHIVE_FILES.items():
        assert s.body(s.archive_bucket, key) == body, key
    again = e.run("restore", sid, "--no-objects", "--stores", "--json")
    assert again.code == 0 and all(st["copied"] == 0 for st in again.result()["stores"])
    assert e.run("restore", sid, "--no-objects", "--stores", "--verify-only").code == 0


def test_the_plugin_store_is_read_with_its_own_credentials(stores: Stores) -> None:
    s, e = stores, stores.e
    run = e.run("snapshot", "create", extra_env={"DRTOOL_SNAPSHOT_PLUGIN_STORAGE_SECRET_KEY": "wrong-plugin-secret"})
    assert run.code == 12, run.stdout + run.stderr
    assert "wrong-plugin-secret" not in run.stdout + run.stderr and s.plugin_secret not in run.stderr
    assert e.keys(e.dest_bucket) == []


def test_verify_deep_reports_a_deleted_pinned_store_version(stores: Stores) -> None:
    s, e = stores, stores.e
    sid = _snapshot(s)
    (archived,) = ARCHIVE_FILES
    version = e.client.head_object(Bucket=s.archive_bucket, Key=archived)["VersionId"]
    e.client.delete_object(Bucket=s.archive_bucket, Key=archived, VersionId=version)  # gone for good
    assert e.run("snapshots", "verify", sid).code == 0  # checksums alone cannot see it
    run = e.run("snapshots", "verify", sid, "--deep")
    assert run.code == 4, run.stdout + run.stderr
    assert "archive storage object" in run.stdout + run.stderr and "missing" in run.stdout + run.stderr
    # A verify host that does not configure the stores still checks those on s3.endpoint, with s3.* credentials.
    bare = e.run("snapshots", "verify", sid, "--deep", extra_env=UNCONFIGURED)
    assert bare.code == 4 and "archive storage object" in bare.stdout + bare.stderr, bare.stdout + bare.stderr
    restore = e.run("restore", sid, "--no-objects", "--stores")
    assert restore.code == 4 and "no longer exist" in restore.stderr


UNCONFIGURED = {"DRTOOL_SNAPSHOT_PLUGIN_STORAGE_BUCKET": "", "DRTOOL_SNAPSHOT_PLUGIN_STORAGE_ACCESS_KEY": "",
                "DRTOOL_SNAPSHOT_PLUGIN_STORAGE_SECRET_KEY": "", "DRTOOL_SNAPSHOT_ARCHIVE_STORAGE_BUCKET": ""}


def test_a_snapshot_without_stores_and_an_older_one_verify_and_restore_as_before(stores: Stores) -> None:
    s, e = stores, stores.e
    run = e.run("snapshot", "create", "--json", extra_env=UNCONFIGURED)
    assert run.code == 0, run.stdout + run.stderr
    sid = str(run.result()["snapshot"])
    assert s.meta(sid)["stores"] == []
    reseal_meta(e.client, e.dest_bucket, f"drtool/snapshots/{sid}/", lambda meta: meta.pop("stores"))  # older
    assert e.run("snapshots", "verify", sid, "--deep").code == 0
    again = e.run("restore", sid, "--no-objects", "--stores", "--json")
    assert again.code == 0 and "stores" not in again.result(), again.stdout + again.stderr


def _forge_store_manifest(s: Stores, sid: str, artifact: str, keys: list[str]) -> None:
    """What a writer of the snapshot bucket could do to an unsigned snapshot: add pinned records with hostile keys
    to a store's manifest and reseal SHA256SUMS and COMMITTED."""
    e, folder = s.e, f"drtool/snapshots/{sid}/"
    records = list(mf.read_manifest(io.BytesIO(s.body(e.dest_bucket, folder + artifact))))
    out = io.BytesIO()
    writer = mf.ManifestWriter(out)
    for rec in records:
        writer.write(rec)
    for key in keys:
        writer.write(dataclasses.replace(records[0], key=key))
    writer.close()
    body = out.getvalue()
    e.client.put_object(Bucket=e.dest_bucket, Key=folder + artifact, Body=body)
    sums = mf.parse_sums(s.body(e.dest_bucket, folder + mf.SUMS))
    sums[artifact] = hashlib.sha256(body).hexdigest()
    sums_bytes = mf.format_sums(sums)
    e.client.put_object(Bucket=e.dest_bucket, Key=folder + mf.SUMS, Body=sums_bytes)
    committed = json.loads(s.body(e.dest_bucket, folder + mf.COMMITTED))
    committed["sha256sums"] = hashlib.sha256(sums_bytes).hexdigest()
    e.client.put_object(Bucket=e.dest_bucket, Key=folder + mf.COMMITTED, Body=json.dumps(committed).encode())


@pytest.mark.parametrize("hostile", ["plugin/../../escape", "plugin/a\x01b", "cwd/not-a-plugin-prefix"])
def test_a_hostile_key_in_a_store_manifest_is_refused_and_nothing_is_copied(stores: Stores, hostile: str) -> None:
    s, e = stores, stores.e
    sid = _snapshot(s)
    plugin = next(st for st in s.meta(sid)["stores"] if st["name"] == "plugin")
    _forge_store_manifest(s, sid, plugin["artifact"], [hostile])
    key = "plugin/langgenius/openai-0.2.1.difypkg"
    e.client.put_object(Bucket=s.plugin_bucket, Key=key, Body=b"changed after the snapshot")
    verify = e.run("snapshots", "verify", sid)
    assert verify.code == 4 and "tampered record" in verify.stdout + verify.stderr
    run = e.run("restore", sid, "--no-objects", "--stores")
    assert run.code == 4, run.stdout + run.stderr
    assert "nothing was copied" in run.stderr
    assert s.body(s.plugin_bucket, key) == b"changed after the snapshot"  # not even the legitimate records


def test_an_archive_store_on_another_endpoint_needs_its_credentials_and_versioning(
        stores: Stores, seaweed_pair: SeaweedClusters) -> None:
    """Archive storage on another server (SeaweedFS; MinIO's site replication forces versioning on, so the
    unversioned case can only run there): its own credentials are required, an unversioned bucket is refused as the
    main bucket is (exit 2, nothing written) and, with --copy-unversioned, left out with a warning (exit 3)."""
    s, e = stores, stores.e
    other = seaweed_pair.a
    client = other.s3_client()
    flat, versioned = new_bucket(client, versioned=False), new_bucket(client)
    (archived,) = ARCHIVE_FILES
    client.put_object(Bucket=versioned, Key=archived, Body=ARCHIVE_FILES[archived])
    there = {"DRTOOL_SNAPSHOT_ARCHIVE_STORAGE_ENDPOINT": other.endpoint}
    creds = {**there, "DRTOOL_SNAPSHOT_ARCHIVE_STORAGE_ACCESS_KEY": other.access_key,
             "DRTOOL_SNAPSHOT_ARCHIVE_STORAGE_SECRET_KEY": other.secret_key}
    anonymous = e.run("snapshot", "create", extra_env={**there, "DRTOOL_SNAPSHOT_ARCHIVE_STORAGE_BUCKET": versioned})
    assert anonymous.code == 2 and "no credentials of its own" in anonymous.stderr, anonymous.stderr
    refused = e.run("snapshot", "create", extra_env={**creds, "DRTOOL_SNAPSHOT_ARCHIVE_STORAGE_BUCKET": flat})
    assert refused.code == 2, refused.stdout + refused.stderr
    assert f"archive storage bucket {flat} is not versioned" in refused.stderr
    assert e.keys(e.dest_bucket) == []
    warned = e.run("snapshot", "create", "--copy-unversioned", "--json",
                   extra_env={**creds, "DRTOOL_SNAPSHOT_ARCHIVE_STORAGE_BUCKET": flat})
    assert warned.code == 3, warned.stdout + warned.stderr
    assert any("archive storage" in w and "NOT in this snapshot" in w for w in warned.result()["warnings"])
    run = e.run("snapshot", "create", "--json",
                extra_env={**creds, "DRTOOL_SNAPSHOT_ARCHIVE_STORAGE_BUCKET": versioned})
    assert run.code == 0, run.stdout + run.stderr
    sid = str(run.result()["snapshot"])
    archive = next(st for st in s.meta(sid)["stores"] if st["name"] == "archive")
    assert archive["endpoint"] == other.endpoint and archive["count"] == 1
    client.delete_object(Bucket=versioned, Key=archived)
    back = e.run("restore", sid, "--no-objects", "--stores",
                 extra_env={**creds, "DRTOOL_SNAPSHOT_ARCHIVE_STORAGE_BUCKET": versioned})
    assert back.code == 0, back.stdout + back.stderr
    assert client.get_object(Bucket=versioned, Key=archived)["Body"].read() == ARCHIVE_FILES[archived]


def test_an_encrypted_snapshot_encrypts_the_store_manifests_and_restores_them_with_the_identity(
        stores: Stores, tmp_path: Path) -> None:
    import pyrage

    s, e = stores, stores.e
    identity = pyrage.x25519.Identity.generate()
    key = tmp_path / "age.key"
    key.write_text(f"{identity}\n")
    run = e.run("snapshot", "create", "--encrypt-to", str(identity.to_public()), "--json")
    assert run.code == 0, run.stdout + run.stderr
    sid = str(run.result()["snapshot"])
    artifacts = [st["artifact"] for st in s.meta(sid)["stores"]]
    assert sorted(artifacts) == ["store-archive.manifest.jsonl.zst.age", "store-plugin.manifest.jsonl.zst.age"]
    stored = s.body(e.dest_bucket, f"drtool/snapshots/{sid}/{artifacts[0]}")
    assert stored.startswith(b"age-encryption.org/v1") and b"plugin/" not in stored and b"tenant-1" not in stored
    assert e.run("snapshots", "verify", sid, "--deep", "--identity", str(key)).code == 0
    (archived,) = ARCHIVE_FILES
    e.client.delete_object(Bucket=s.archive_bucket, Key=archived)
    assert e.run("restore", sid, "--no-objects", "--stores").code == 2  # encrypted: needs the identity
    back = e.run("restore", sid, "--no-objects", "--stores", "--identity", str(key))
    assert back.code == 0, back.stdout + back.stderr
    assert s.body(s.archive_bucket, archived) == ARCHIVE_FILES[archived]
