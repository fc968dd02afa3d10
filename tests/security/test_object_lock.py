"""Immutable restore points on a real MinIO: a snapshot written with --retain-until into a bucket with
Object Lock cannot be deleted or altered by the very key that wrote it, prune and gc keep it whole, and retention
asked of a bucket without Object Lock is refused before anything is written."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from drtool.core import manifest as mf
from tests.security.conftest import ProcessRun, add_minio_user, new_bucket, run_module
from tests.security.test_least_privilege import doc_policies, render
from tests.snapshot.conftest import fill_source
from tests.stack.dify_db import DifyDatabase
from tests.stack.minio_sites import MinioSites
from tests.stack.pg_server import PostgresServer
from tests.stack.s3_client import path_style_client


@dataclass
class Locked:
    root: Any  # boto3 client with the root credentials (sees retention, checks bytes)
    writer: Any  # boto3 client with the snapshot writer's own key
    source: str
    dest: str
    env: dict[str, str]  # drtool env with the writer's key
    root_env: dict[str, str]
    cwd: Path

    def run(self, *args: str, root: bool = False, **extra: str) -> ProcessRun:
        return run_module(*args, env=dict(self.root_env if root else self.env, **extra), cwd=self.cwd)

    def versions(self, prefix: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for page in self.root.get_paginator("list_object_versions").paginate(Bucket=self.dest, Prefix=prefix):
            out += page.get("Versions", [])
        return out


def _object_lock_env(sites: MinioSites, pg: PostgresServer, db: DifyDatabase, source: str, dest: str,
                     access: str, secret: str) -> dict[str, str]:
    return {"DRTOOL_S3_ENDPOINT": sites.a.endpoint, "DRTOOL_S3_ADDRESS_STYLE": "path", "DRTOOL_S3_MAX_ATTEMPTS": "2",
            "DRTOOL_S3_BUCKET": source, "DRTOOL_SNAPSHOT_BUCKET": dest, "DRTOOL_S3_ACCESS_KEY": access,
            "DRTOOL_S3_SECRET_KEY": secret, "DRTOOL_SNAPSHOT_PG_BIN_DIR": str(pg.bin_dir),
            "DRTOOL_POSTGRES_HOST": pg.host, "DRTOOL_POSTGRES_PORT": str(pg.port), "DRTOOL_POSTGRES_USER": pg.user,
            "DRTOOL_POSTGRES_PASSWORD": pg.password, "DRTOOL_POSTGRES_DATABASE": db.dbname,
            "DRTOOL_POSTGRES_SSLMODE": "disable"}


@pytest.fixture
def locked(minio_pair: MinioSites, pg: PostgresServer, dify_db: DifyDatabase, tmp_path: Path) -> Locked:
    """A filled source bucket, a lock-enabled snapshot bucket and a writer holding exactly the documented policy."""
    root = minio_pair.a.s3_client()
    source = new_bucket(root, "olsrc")
    fill_source(root, source, dify_db)
    dest = new_bucket(root, "lock", lock=True)  # Object Lock turns versioning on for good: `mc mb --with-lock`
    policy = render(doc_policies()["snapshot-create-object-lock"], SOURCE_BUCKET=source, SNAPSHOT_BUCKET=dest)
    access, secret = add_minio_user(minio_pair, policy)
    writer = path_style_client(minio_pair.a.endpoint, access, secret)
    return Locked(root=root, writer=writer, source=source, dest=dest,
                  env=_object_lock_env(minio_pair, pg, dify_db, source, dest, access, secret),
                  root_env=_object_lock_env(minio_pair, pg, dify_db, source, dest, minio_pair.a.access_key,
                                minio_pair.a.secret_key), cwd=tmp_path)


def _retention(client: Any, bucket: str, key: str, version: str) -> dict[str, Any] | None:
    try:
        return dict(client.get_object_retention(Bucket=bucket, Key=key, VersionId=version)["Retention"])
    except botocore.exceptions.ClientError as exc:
        if exc.response["Error"]["Code"] == "NoSuchObjectLockConfiguration":
            return None
        raise


def _create_locked(lk: Locked, *args: str, root: bool = False) -> dict[str, Any]:
    run = lk.run("snapshot", "create", "--json", *args, root=root)
    assert run.code == 0, run.stderr
    return run.events()[-1]


def test_every_artifact_is_locked_and_survives_its_writer(locked: Locked) -> None:
    lk = locked
    before = datetime.now(UTC)
    result = _create_locked(lk, "--retain-until", "1d")
    sid = result["snapshot"]
    assert result["retention"]["mode"] == "COMPLIANCE"
    until = datetime.fromisoformat(result["retention"]["retain_until"])
    assert timedelta(hours=23) < until - before < timedelta(hours=25)

    folder = f"drtool/snapshots/{sid}/"
    artifacts = lk.versions(folder)
    names = {v["Key"][len(folder):] for v in artifacts}
    assert {mf.COMMITTED, mf.SUMS, mf.META, mf.DUMP, mf.MANIFEST} <= names, names
    for v in artifacts:  # every artifact, whatever its name: a new artifact must be locked as well
        got = _retention(lk.root, lk.dest, v["Key"], v["VersionId"])
        assert got is not None, f"{v['Key']} has no retention"
        assert got["Mode"] == "COMPLIANCE" and got["RetainUntilDate"] == until, (v["Key"], got)
    meta = json.loads(lk.root.get_object(Bucket=lk.dest, Key=folder + mf.META)["Body"].read())
    assert meta["retention"] == {"mode": "COMPLIANCE", "retain_until": until.isoformat()}
    listed = lk.run("snapshots", "list", "--json", root=True)
    assert listed.code == 0, listed.stderr
    assert listed.events()[-1]["snapshots"][0]["retain_until"] == until.isoformat()
    lock_versions = lk.versions("drtool/locks/")
    assert lock_versions and all(_retention(lk.root, lk.dest, v["Key"], v["VersionId"]) is None
                                 for v in lock_versions)  # the lock stays mutable

    # The writer's own key cannot delete a locked version (MinIO: 400 InvalidRequest, "WORM protected")...
    for v in artifacts:
        with pytest.raises(botocore.exceptions.ClientError) as refused:
            lk.writer.delete_object(Bucket=lk.dest, Key=v["Key"], VersionId=v["VersionId"])
        assert refused.value.response["Error"]["Code"] == "InvalidRequest", refused.value.response
        assert "WORM" in refused.value.response["Error"]["Message"]
    # ... nor shorten its retention; an overwrite only adds a newer version: the locked bytes stay readable.
    meta_version = next(v for v in artifacts if v["Key"] == folder + mf.META)
    original = lk.root.get_object(Bucket=lk.dest, Key=folder + mf.META, VersionId=meta_version["VersionId"])
    original_bytes = original["Body"].read()
    with pytest.raises(botocore.exceptions.ClientError):
        lk.writer.put_object_retention(Bucket=lk.dest, Key=folder + mf.META, VersionId=meta_version["VersionId"],
                                       Retention={"Mode": "COMPLIANCE", "RetainUntilDate": before})
    lk.writer.put_object(Bucket=lk.dest, Key=folder + mf.META, Body=b'{"fence": "forged"}')
    again = lk.root.get_object(Bucket=lk.dest, Key=folder + mf.META, VersionId=meta_version["VersionId"])
    assert again["Body"].read() == original_bytes
    # drtool reads the newest version by key: the forgery is refused, not used (docs/snapshots.md: how to recover).
    verify = lk.run("snapshots", "verify", sid, root=True)
    assert verify.code == 4 and "meta.json: checksum mismatch" in verify.stderr, verify.stderr


def test_prune_keeps_a_locked_snapshot_whole(locked: Locked) -> None:
    lk = locked
    locked_sid = _create_locked(lk, "--retain-until", "1d")["snapshot"]
    plain_sid = _create_locked(lk)["snapshot"]  # no retention: prune may delete it
    newest = _create_locked(lk)["snapshot"]
    folder = f"drtool/snapshots/{locked_sid}/"
    kept_versions = sorted((v["Key"], v["VersionId"]) for v in lk.versions(folder))
    args = ("snapshots", "prune", "--keep-last", "1", "--keep-daily", "0", "--keep-weekly", "0", "--keep-monthly",
            "0")
    dry = lk.run(*args, "--dry-run", "--json", root=True)
    assert dry.code == 0, dry.stderr
    assert dry.events()[-1]["remove"] == [plain_sid]
    prune = lk.run(*args, "--json", root=True)
    assert prune.code == 0, prune.stderr
    result = prune.events()[-1]
    assert result["removed"] == [plain_sid]
    assert locked_sid in result["locked"] and result["keep"][locked_sid][0].startswith("locked until ")
    assert sorted((v["Key"], v["VersionId"]) for v in lk.versions(folder)) == kept_versions
    listed = [s["id"] for s in lk.run("snapshots", "list", "--json", root=True).events()[-1]["snapshots"]]
    assert listed == [newest, locked_sid]
    human = lk.run(*args, root=True)
    assert human.code == 0 and f"kept {locked_sid}: Object Lock retention until" in human.stdout


def test_gc_leaves_locked_leftovers(locked: Locked) -> None:
    """A killed run's uncommitted folder whose artifacts are already locked: gc keeps it, says why, exits 0."""
    lk = locked
    sid = mf.new_snapshot_id(datetime.now(UTC) - timedelta(days=2))
    key = f"drtool/snapshots/{sid}/{mf.DUMP}"
    lk.root.put_object(Bucket=lk.dest, Key=key, Body=b"half a dump", ObjectLockMode="COMPLIANCE",
                       ObjectLockRetainUntilDate=datetime.now(UTC) + timedelta(days=1))
    run = lk.run("snapshots", "gc", "--json", root=True)
    assert run.code == 0, run.stderr
    result = run.events()[-1]
    assert result["removed"] == [] and sid in result["kept_locked"], result
    assert len(lk.versions(key)) == 1


def test_retention_refused_on_a_bucket_without_object_lock(minio_pair: MinioSites, pg: PostgresServer,
                                                           dify_db: DifyDatabase, tmp_path: Path) -> None:
    root = minio_pair.a.s3_client()
    source, dest = new_bucket(root, "olsrc"), new_bucket(root, "olnolock")
    fill_source(root, source, dify_db)
    env = _object_lock_env(minio_pair, pg, dify_db, source, dest, minio_pair.a.access_key, minio_pair.a.secret_key)
    for args, extra in ((("--retain-until", "1d"), {}), ((), {"DRTOOL_SNAPSHOT_OBJECT_LOCK_DAYS": "1"})):
        run = run_module("snapshot", "create", *args, env=dict(env, **extra), cwd=tmp_path)
        assert run.code == 2, run.stderr
        assert "does not have Object Lock enabled" in run.stderr and "mc mb --with-lock" in run.stderr
        listing = root.list_object_versions(Bucket=dest)
        assert not listing.get("Versions") and not listing.get("DeleteMarkers")  # nothing written, not even a lock
    bad = run_module("snapshot", "create", "--retain-until", "2001-01-01", env=env, cwd=tmp_path)
    assert bad.code == 2 and "not in the future" in bad.stderr


def test_retain_until_forms() -> None:
    """The pure rules: durations, dates (midnight UTC), the flag over the setting, past and absurd dates refused."""
    from drtool.core.object_lock import locked_until, parse_retain_until, retention_for

    now = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    assert parse_retain_until("30d", now) == now + timedelta(days=30)
    assert parse_retain_until("12h", now) == now + timedelta(hours=12)
    assert parse_retain_until("2w", now) == now + timedelta(weeks=2)
    assert parse_retain_until("2027-01-31", now) == datetime(2027, 1, 31, tzinfo=UTC)
    assert parse_retain_until("2027-01-31T12:00:00+02:00", now) == datetime(2027, 1, 31, 10, tzinfo=UTC)
    for bad in ("yesterday", "2026-12-06", "0d", "99999d", "-3d"):
        with pytest.raises(ValueError):
            parse_retain_until(bad, now)
    assert retention_for("compliance", retain_until=None, days=0, now=now) is None
    flag = retention_for("governance", retain_until="1d", days=30, now=now)
    assert flag is not None and flag.mode == "GOVERNANCE" and flag.until == now + timedelta(days=1)
    assert locked_until([None, now - timedelta(days=1)], legal_hold=False, now=now) is None
    assert locked_until([now + timedelta(days=1)], legal_hold=False, now=now) == now + timedelta(days=1)
    assert locked_until([], legal_hold=True, now=now) is not None
