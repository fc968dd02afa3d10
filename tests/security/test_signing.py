"""Authenticated restore points: `snapshot create` signs what it commits with Ed25519, and with
snapshot.trusted_keys set `snapshots verify`, `restore` and `drill` refuse (exit 4) a snapshot no trusted key signed,
before anything is copied; without a trusted key they proceed and say so on stderr. Also: every key a restore writes
or copies from stays inside its snapshot folder or the source, whatever a resealed manifest says.

The attacker here can write the snapshot bucket (not the production bucket, not the cron host): they rewrite the
manifest, recompute SHA256SUMS and COMMITTED, and keep or drop the old signature. Real MinIO and Postgres."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from drtool.core import manifest as mf
from tests.badinput.strategies import error_message
from tests.security.conftest import REPO, run_module
from tests.snapshot.conftest import SnapshotEnv, minio_env, new_bucket, new_database  # noqa: F401  (fixtures)

NOT_AUTHENTICATED = "is not authenticated: no trusted key configured (snapshot.trusted_keys)"


# --- helpers ---------------------------------------------------------------------------------------------------------

def _generate(path: Path) -> tuple[str, str]:
    """What `drtool keys generate --out path` does (tested as a command below), in process: two fewer subprocesses
    per test -> (public key line, key id)."""
    from drtool.core import signing
    from drtool.ops.snapshot.auth import write_private_key

    key = signing.generate()
    write_private_key(path, key)
    return signing.public_of(key).text, signing.public_of(key).key_id


@pytest.fixture
def signing_keys(tmp_path: Path) -> dict[str, Any]:
    """A signing key (the cron host's), its public line, and an unrelated key pair (someone else's)."""
    signing, other = tmp_path / "signing.key", tmp_path / "other.key"
    public, key_id = _generate(signing)
    other_public, _ = _generate(other)
    return {"file": signing, "public": public, "key_id": key_id, "other_public": other_public,
            "sign": {"DRTOOL_SNAPSHOT_SIGNING_KEY_FILE": str(signing)},
            "trust": {"DRTOOL_SNAPSHOT_TRUSTED_KEYS": public},
            "trust_other": {"DRTOOL_SNAPSHOT_TRUSTED_KEYS": other_public},
            "secret": signing.read_text()}


def _versions(e: SnapshotEnv, bucket: str) -> list[tuple[str, str, bool]]:
    """Every version and delete marker of a bucket: a restore that changed anything changes this list."""
    out: list[tuple[str, str, bool]] = []
    for page in e.client.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for v in page.get("Versions", []) + page.get("DeleteMarkers", []):
            out.append((v["Key"], v["VersionId"], bool(v.get("IsLatest"))))
    return sorted(out)


def _create_snapshot(e: SnapshotEnv, *args: str, extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    run = e.run("snapshot", "create", "--json", *args, extra_env=extra_env)
    assert run.code == 0, run.stderr
    return run.result()


def _rewrite_manifest(plain: bytes, edit: Any) -> bytes:
    """The same records as valid zstd JSON lines, each passed through `edit(record)`."""
    out = io.BytesIO()
    writer = mf.ManifestWriter(out)
    for rec in mf.read_manifest(io.BytesIO(plain)):
        edit(rec)
        writer.write(rec)
    writer.close()
    return out.getvalue()


def _reseal_artifacts(e: SnapshotEnv, sid: str, artifacts: dict[str, bytes], *, keep_signature: bool = True) -> None:
    """What an attacker with write access to the snapshot bucket does: replace artifacts, recompute SHA256SUMS and
    the digest in COMMITTED (keeping the old signature, or dropping it)."""
    folder = f"drtool/snapshots/{sid}/"
    sums = mf.parse_sums(e.get_object(folder + mf.SUMS))
    for name, body in artifacts.items():
        e.put_object(folder + name, body)
        sums[name] = hashlib.sha256(body).hexdigest()
    sums_bytes = mf.format_sums(sums)
    e.put_object(folder + mf.SUMS, sums_bytes)
    committed = json.loads(e.get_object(folder + mf.COMMITTED))
    committed["sha256sums"] = hashlib.sha256(sums_bytes).hexdigest()
    if not keep_signature:
        committed.pop("signature", None)
    e.put_object(folder + mf.COMMITTED, json.dumps(committed, indent=1).encode())


def _plant_copy(e: SnapshotEnv, sid: str, key: str) -> tuple[str, bytes]:
    """The attacker's bytes, uploaded where a copy of `key` would live inside the snapshot (a confined copy_key)."""
    evil = b"attacker's bytes, restored over production\n"
    copy_key = f"drtool/snapshots/{sid}/objects/{key}"
    e.put_object(copy_key, evil)
    return copy_key, evil


# --- keys ------------------------------------------------------------------------------------------------------------

def test_keys_generate_writes_a_0600_file_prints_the_public_key_and_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "drtool-signing.key"
    run = run_module("keys", "generate", "--out", str(path), env={}, cwd=REPO)
    assert run.code == 0, run.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = path.read_text()
    assert secret.startswith("-----BEGIN PRIVATE KEY-----")
    lines = run.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith("drtool-ed25519:") and len(lines[0]) == len("drtool-ed25519:") + 44
    assert lines[1].startswith("# key id ") and len(lines[1].split()[-1]) == 16
    body = "".join(secret.strip().splitlines()[1:-1])
    assert body not in run.stdout + run.stderr

    again = run_module("keys", "generate", "--out", str(path), env={}, cwd=REPO)
    assert again.code == 2 and "already exists" in error_message(again.stderr), again.stderr
    assert path.read_text() == secret  # untouched

    public = run_module("keys", "public", "--key", str(path), env={}, cwd=REPO)
    assert public.code == 0 and public.stdout == run.stdout, public.stderr
    # The same key from the environment (a secret injected by the orchestrator) gives the same public key.
    from_env = run_module("keys", "public", env={"DRTOOL_SNAPSHOT_SIGNING_KEY": secret}, cwd=REPO)
    assert from_env.code == 0 and from_env.stdout == run.stdout, from_env.stderr
    assert body not in public.stderr + from_env.stderr + from_env.stdout
    junk = tmp_path / "junk.key"
    junk.write_text("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
    bad = run_module("keys", "public", "--key", str(junk), env={}, cwd=REPO)
    assert bad.code == 2 and "not an unencrypted Ed25519 private key" in error_message(bad.stderr), bad.stderr
    assert "bm90IGEga2V5" not in bad.stderr + bad.stdout


# --- signed snapshots ------------------------------------------------------------------------------------------------

def test_a_signed_snapshot_verifies_only_against_its_trusted_key(
        minio_env: SnapshotEnv, signing_keys: dict[str, Any], new_database, tmp_path: Path) -> None:  # noqa: F811
    e = minio_env
    created = e.run("snapshot", "create", "--json", "-v", extra_env=signing_keys["sign"])
    assert created.code == 0, created.stderr
    result = created.result()
    sid, digest = result["snapshot"], result["digest"]
    folder = f"drtool/snapshots/{sid}/"
    assert digest == hashlib.sha256(e.get_object(folder + mf.SUMS)).hexdigest()
    assert result["signed_by"] == signing_keys["key_id"]
    signature = json.loads(e.get_object(folder + mf.COMMITTED))["signature"]
    assert signature["algorithm"] == "ed25519" and signature["key_id"] == signing_keys["key_id"]

    trusted = e.run("snapshots", "verify", sid, "--deep", "--json", extra_env=signing_keys["trust"])
    assert trusted.code == 0, trusted.stderr
    [event] = [ev for ev in trusted.events() if ev["event"] == "snapshot.verified"]
    assert event["authenticated"] is True and event["signed_by"] == signing_keys["key_id"] and event["digest"] == digest
    assert "not authenticated" not in trusted.stderr
    # A trusted-keys file (what `drtool keys public` prints, comment line included) works as well.
    pub_file = tmp_path / "trusted.pub"
    pub_file.write_text(run_module("keys", "public", "--key", str(signing_keys["file"]), env={}, cwd=REPO).stdout)
    assert e.run("snapshots", "verify", sid, extra_env={"DRTOOL_SNAPSHOT_TRUSTED_KEYS": str(pub_file)}).code == 0

    # --expect-digest: the digest create printed passes; any other is exit 4; a malformed one is usage (2).
    assert e.run("snapshots", "verify", sid, "--expect-digest", digest.upper(),
                 extra_env=signing_keys["trust"]).code == 0
    wrong = e.run("snapshots", "verify", sid, "--expect-digest", "ab" * 32, extra_env=signing_keys["trust"])
    assert wrong.code == 4 and "not the expected" in error_message(wrong.stderr), wrong.stderr
    assert e.run("snapshots", "verify", sid, "--expect-digest", "xyz").code == 2

    # Someone else's key only: exit 4, for verify, restore and drill alike, before anything is written.
    other = e.run("snapshots", "verify", sid, extra_env=signing_keys["trust_other"])
    assert other.code == 4 and "not a trusted key" in error_message(other.stderr), other.stderr
    target, dbname = new_bucket(e.client), new_database()
    refused = e.run("restore", sid, "--target-db", dbname, "--objects-to", target,
                    extra_env=signing_keys["trust_other"])
    assert refused.code == 4 and "not authenticated" in error_message(refused.stderr), refused.stderr
    assert e.keys(target) == [] and not e.database_exists(dbname)
    drill_env = {"DRTOOL_VECTOR_STORE": "milvus", "DRTOOL_MILVUS_URI": str(tmp_path / "milvus.db")}
    scratch = f"drtool_drill_{os.getpid()}"
    drill = e.run("drill", "--snapshot", sid, "--scratch-db", scratch, "--report-dir", str(tmp_path / "r"),
                  extra_env={**drill_env, **signing_keys["trust_other"]})
    assert drill.code == 4 and "not authenticated" in error_message(drill.stderr), drill.stderr
    pinned = e.run("drill", "--snapshot", sid, "--scratch-db", scratch, "--report-dir", str(tmp_path / "r"),
                   "--expect-digest", "cd" * 32, extra_env={**drill_env, **signing_keys["trust"]})
    assert pinned.code == 4 and "not the expected" in error_message(pinned.stderr), pinned.stderr
    assert not e.database_exists(scratch) and not (tmp_path / "r").exists()

    # No trusted key configured: it proceeds, and says loudly that nothing authenticated it.
    open_run = e.run("snapshots", "verify", sid, "--json")
    assert open_run.code == 0, open_run.stderr
    assert f"snapshot {sid} {NOT_AUTHENTICATED}" in error_message(open_run.stderr)
    assert [ev["authenticated"] for ev in open_run.events() if ev["event"] == "snapshot.verified"] == [False]

    restored = e.run("restore", sid, "--objects-to", target, "--expect-digest", digest, "--json",
                     extra_env=signing_keys["trust"])
    assert restored.code == 0, restored.stderr
    assert restored.result()["authenticated"] is True and restored.result()["objects"]["copied"] > 0

    # The private key is nowhere: not in any output, not in any object of the snapshot bucket.
    body = "".join(signing_keys["secret"].strip().splitlines()[1:-1])
    for run in (created, trusted, wrong, other, refused, drill, pinned, open_run, restored):
        assert body not in run.stdout + run.stderr
    for key in e.keys(e.dest_bucket):
        assert body.encode() not in e.get_object(key), key


def test_a_resealed_forgery_is_refused_and_production_is_untouched(
        minio_env: SnapshotEnv, signing_keys: dict[str, Any]) -> None:  # noqa: F811
    """The forgery stays inside the snapshot (a copy_key under its own objects/, sizes that agree), so checksums,
    confinement and --deep all pass: only the signature tells it from the real one."""
    e = minio_env
    sid = _create_snapshot(e, extra_env=signing_keys["sign"])["snapshot"]
    folder = f"drtool/snapshots/{sid}/"
    original = e.get_object(folder + mf.MANIFEST)
    upload = next(k for k in e.files if k.startswith("upload_files/"))
    copy_key, evil = _plant_copy(e, sid, upload)

    def forge(rec: mf.ManifestRecord) -> None:
        if rec.key == upload:
            rec.copy_key, rec.size = copy_key, len(evil)

    _reseal_artifacts(e, sid, {mf.MANIFEST: _rewrite_manifest(original, forge)})
    before = _versions(e, e.source_bucket)
    unguarded = e.run("snapshots", "verify", sid, "--deep")
    assert unguarded.code == 0, unguarded.stderr  # consistent: without a trusted key nothing can tell
    assert NOT_AUTHENTICATED in error_message(unguarded.stderr)

    deep = e.run("snapshots", "verify", sid, "--deep", extra_env=signing_keys["trust"])
    assert deep.code == 4 and "does not match its contents" in error_message(deep.stderr), deep.stderr
    restore = e.run("restore", sid, extra_env=signing_keys["trust"])  # into production: s3.bucket
    assert restore.code == 4 and "not authenticated" in error_message(restore.stderr), restore.stderr
    assert _versions(e, e.source_bucket) == before

    # The same forgery with the signature dropped: "not signed", still exit 4, still nothing written.
    _reseal_artifacts(e, sid, {}, keep_signature=False)
    unsigned = e.run("restore", sid, extra_env=signing_keys["trust"])
    assert unsigned.code == 4 and "it is not signed" in error_message(unsigned.stderr), unsigned.stderr
    assert e.run("snapshots", "verify", sid, "--deep", extra_env=signing_keys["trust"]).code == 4
    assert _versions(e, e.source_bucket) == before
    assert "Traceback" not in deep.stderr + restore.stderr + unsigned.stderr


def test_a_forged_manifest_reencrypted_to_the_age_recipient_is_refused(
        minio_env: SnapshotEnv, signing_keys: dict[str, Any], tmp_path: Path) -> None:  # noqa: F811
    """age is no authentication: the recipient is public (meta.json), so anyone can encrypt a new manifest to it."""
    import pyrage

    e = minio_env
    identity = pyrage.x25519.Identity.generate()
    identity_file = tmp_path / "age.key"
    identity_file.write_text(f"{identity}\n")
    sid = _create_snapshot(e, "--encrypt-to", str(identity.to_public()), extra_env=signing_keys["sign"])["snapshot"]
    folder = f"drtool/snapshots/{sid}/"
    name = mf.MANIFEST + mf.AGE_SUFFIX
    meta = json.loads(e.get_object(folder + mf.META))
    recipient = pyrage.x25519.Recipient.from_str(meta["encryption"]["age_recipients"][0])
    plain = pyrage.decrypt(e.get_object(folder + name), [identity])  # the test's shortcut; an attacker writes records
    upload = next(k for k in e.files if k.startswith("upload_files/"))
    copy_key, evil = _plant_copy(e, sid, upload)

    def forge(rec: mf.ManifestRecord) -> None:
        if rec.key == upload:
            rec.copy_key, rec.size = copy_key, len(evil)

    _reseal_artifacts(e, sid, {name: pyrage.encrypt(_rewrite_manifest(plain, forge), [recipient])})
    before = _versions(e, e.source_bucket)
    unguarded = e.run("snapshots", "verify", sid, "--deep", "--identity", str(identity_file))
    assert unguarded.code == 0, unguarded.stderr  # decrypts, checksums agree, objects exist

    deep = e.run("snapshots", "verify", sid, "--deep", "--identity", str(identity_file),
                 extra_env=signing_keys["trust"])
    assert deep.code == 4 and "not authenticated" in error_message(deep.stderr), deep.stderr
    restore = e.run("restore", sid, "--identity", str(identity_file), extra_env=signing_keys["trust"])
    assert restore.code == 4 and "not authenticated" in error_message(restore.stderr), restore.stderr
    assert _versions(e, e.source_bucket) == before


def test_an_unsigned_snapshot_is_refused_when_a_key_is_trusted(
        minio_env: SnapshotEnv, signing_keys: dict[str, Any], new_database) -> None:  # noqa: F811
    e = minio_env
    result = _create_snapshot(e)
    sid = result["snapshot"]
    assert result["signed_by"] is None and len(result["digest"]) == 64
    listed = e.run("snapshots", "list", "--json").result()["snapshots"]
    assert [s["signed_by"] for s in listed] == [None]

    verify = e.run("snapshots", "verify", sid, "--json", extra_env=signing_keys["trust"])
    assert verify.code == 4 and "it is not signed" in error_message(verify.stderr), verify.stderr
    assert [ev["authenticated"] for ev in verify.events() if ev["event"] == "snapshot.verified"] == [False]
    target, dbname = new_bucket(e.client), new_database()
    restore = e.run("restore", sid, "--target-db", dbname, "--objects-to", target, extra_env=signing_keys["trust"])
    assert restore.code == 4, restore.stderr
    assert e.keys(target) == [] and not e.database_exists(dbname)
    # `verify --snapshot` reads the pins of the manifest: the same refusal, before it trusts them.
    checked = e.run("verify", "--skip-vectors", "--snapshot", sid, extra_env=signing_keys["trust"])
    assert checked.code == 4 and "it is not signed" in error_message(checked.stderr), checked.stderr
    checked = e.run("verify", "--skip-vectors", "--snapshot", sid)
    assert checked.code == 0 and f"snapshot {sid} {NOT_AUTHENTICATED}" in error_message(checked.stderr), \
        checked.stderr

    # Without a trusted key: allowed, with the warning on every run and authenticated: false in the JSON result.
    dry = e.run("restore", sid, "--objects-to", target, "--dry-run", "--json")
    assert dry.code == 0, dry.stderr
    assert dry.result()["authenticated"] is False and f"snapshot {sid} {NOT_AUTHENTICATED}" in \
        error_message(dry.stderr)

    signed = _create_snapshot(e, extra_env=signing_keys["sign"])["snapshot"]
    by_id = {s["id"]: s["signed_by"] for s in e.run("snapshots", "list", "--json").result()["snapshots"]}
    assert by_id == {sid: None, signed: signing_keys["key_id"]}


# --- confinement -----------------------------------------------------------------------------------------------------

def test_a_copy_key_pointing_at_another_snapshots_dump_is_found_and_refused(minio_env: SnapshotEnv) -> None:  # noqa: F811
    """No keys configured: confinement alone stops a resealed manifest from copying another snapshot's dump (or
    anything else in the snapshot bucket) over a production key."""
    e = minio_env
    first = _create_snapshot(e)["snapshot"]
    second = _create_snapshot(e)["snapshot"]
    other_dump = f"drtool/snapshots/{first}/{mf.DUMP}"
    dump_size = e.client.head_object(Bucket=e.dest_bucket, Key=other_dump)["ContentLength"]
    folder = f"drtool/snapshots/{second}/"
    upload = next(k for k in e.files if k.startswith("upload_files/"))

    def forge(rec: mf.ManifestRecord) -> None:
        if rec.key == upload:
            rec.copy_key, rec.size = other_dump, dump_size

    _reseal_artifacts(e, second, {mf.MANIFEST: _rewrite_manifest(e.get_object(folder + mf.MANIFEST), forge)})
    before = _versions(e, e.source_bucket)
    verify = e.run("snapshots", "verify", second)
    assert verify.code == 4, verify.stderr
    message = error_message(verify.stderr)
    assert "tampered record" in message and other_dump in message, message
    assert e.run("snapshots", "verify", second, "--deep").code == 4
    restore = e.run("restore", second)  # into production
    assert restore.code == 4 and "nothing was copied" in error_message(restore.stderr), restore.stderr
    assert _versions(e, e.source_bucket) == before

    # A copy_key that walks out of objects/ is no better than one that names the dump outright.
    def walk_out(rec: mf.ManifestRecord) -> None:
        if rec.key == upload:
            rec.copy_key = f"{folder}objects/../../{first}/{mf.DUMP}"

    _reseal_artifacts(e, second, {mf.MANIFEST: _rewrite_manifest(e.get_object(folder + mf.MANIFEST), walk_out)})
    assert e.run("snapshots", "verify", second).code == 4
    assert e.run("restore", second).code == 4
    assert _versions(e, e.source_bucket) == before


def test_an_escaping_key_is_found_by_verify_and_nothing_is_copied(minio_env: SnapshotEnv) -> None:  # noqa: F811
    e = minio_env
    sid = _create_snapshot(e)["snapshot"]
    folder = f"drtool/snapshots/{sid}/"
    uploads = sorted(k for k in e.files if k.startswith("upload_files/"))

    def forge(rec: mf.ManifestRecord) -> None:
        if rec.key == uploads[-1]:  # the last one: a restore that copied as it read would copy the others first
            rec.key = "../../escaped.txt"

    _reseal_artifacts(e, sid, {mf.MANIFEST: _rewrite_manifest(e.get_object(folder + mf.MANIFEST), forge)})
    verify = e.run("snapshots", "verify", sid)
    assert verify.code == 4 and "escaped.txt" in error_message(verify.stderr), verify.stderr
    target = new_bucket(e.client)
    restore = e.run("restore", sid, "--objects-to", target)
    assert restore.code == 4 and "could escape their folder" in error_message(restore.stderr), restore.stderr
    assert e.keys(target) == [], "a refused restore copied objects"


def test_confinement_rule() -> None:
    """The pure rule: pinned keys safe and under the source prefix; copy_key exactly `<folder>objects/<key>`;
    records restore skips may name hostile keys (they record what rows said)."""
    folder = "drtool/snapshots/20261206T000000Z-abcdef/"
    ok = mf.ManifestRecord(key="root/upload_files/a.txt", state=mf.STATE_PINNED, version_id="v1")
    assert mf.confinement_problem(ok, snapshot_folder=folder, key_prefix="root/") is None
    copied = mf.ManifestRecord(key="root/a.txt", state=mf.STATE_PINNED, version_id="null",
                               copy_key=folder + "objects/root/a.txt")
    assert mf.confinement_problem(copied, snapshot_folder=folder, key_prefix="root/") is None
    bad = [
        mf.ManifestRecord(key="other/a.txt", state=mf.STATE_PINNED, version_id="v1"),
        mf.ManifestRecord(key="root/../a.txt", state=mf.STATE_PINNED, version_id="v1"),
        mf.ManifestRecord(key="root/a.txt", state=mf.STATE_PINNED, version_id="v1",
                          copy_key="drtool/snapshots/20261205T000000Z-000000/db.dump"),
        mf.ManifestRecord(key="root/a.txt", state=mf.STATE_PINNED, version_id="v1",
                          copy_key=folder + "objects/root/b.txt"),
        mf.ManifestRecord(key="root/a.txt", state=mf.STATE_DANGLING, copy_key=folder + "db.dump"),
    ]
    for rec in bad:
        assert mf.confinement_problem(rec, snapshot_folder=folder, key_prefix="root/"), rec
    hostile = mf.ManifestRecord(key="../../etc/passwd", state=mf.STATE_REFUSED, reason="escapes")
    assert mf.confinement_problem(hostile, snapshot_folder=folder, key_prefix="root/") is None
