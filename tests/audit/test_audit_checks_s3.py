"""The object-storage checks of issue #15's third part, on the real MinIO pair of the well-configured `world`:
the key's policy against docs/iam.md (MinIO accountinfo), the multipart-upload probe, and default encryption with
the KMS behind it (a MinIO with a static KMS key of its own). Each test breaks one thing and expects exactly that
finding; what a test changes on the audit's pair (a policy attached to the audit user) is undone in teardown."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from drtool.core import iam
from tests.audit.conftest import AUDIT_USER, AuditWorld, grant_documented
from tests.audit.test_audit_findings import only
from tests.stack.minio_sites import MinioSite, MinioSites

IAM_DOC = Path(__file__).resolve().parents[2] / "docs" / "iam.md"


def _no_leftovers(world: AuditWorld) -> None:
    """Nothing of the probes is left: no unfinished upload, no version, no delete marker under drtool/audit/."""
    for bucket in (world.dify_bucket, world.snap_bucket):
        uploads = world.client.list_multipart_uploads(Bucket=bucket, Prefix="drtool/audit/")
        assert not uploads.get("Uploads"), uploads
        listing = world.client.list_object_versions(Bucket=bucket, Prefix="drtool/audit/")
        assert not listing.get("Versions") and not listing.get("DeleteMarkers"), listing


# --- the table of documented policies and the comparison rule (pure) ------------------------------------------

def test_code_table_equals_the_policies_of_iam_md() -> None:
    """The audit cannot read docs/iam.md when installed: its table must be the document's JSON, block for block."""
    blocks = iam.parse_policy_blocks(IAM_DOC.read_text())
    assert set(blocks) == set(iam.POLICIES)
    for name, body in blocks.items():
        assert json.loads(body) == iam.document(name), name


def test_excess_names_wildcards_foreign_actions_and_resources() -> None:
    documented = iam.documented_policy("dify", "snaps")
    assert not iam.excess(documented, documented)
    readwrite = {"Statement": [{"Effect": "Allow", "Action": ["s3:*"], "Resource": ["arn:aws:s3:::*"]}]}
    assert iam.excess(readwrite, documented).actions == ("s3:*",)
    wide = {"Statement": [
        {"Effect": "Allow", "Action": ["admin:*", "s3:PutBucketPolicy"]},
        {"Effect": "Allow", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::*"},
        {"Effect": "Allow", "Action": ["S3:GETOBJECT"], "Resource": ["arn:aws:s3:::snaps/drtool/x"]},  # covered
        {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": ["arn:aws:s3:::snaps/*"]},
        {"Effect": "Deny", "Action": ["s3:*"], "Resource": ["arn:aws:s3:::*"]},  # a Deny never widens
        {"Effect": "Allow", "NotAction": ["s3:DeleteBucket"], "Resource": ["arn:aws:s3:::*"]},
        {"Effect": "Allow", "Action": ["s3:ListBucket"]}]}  # no Resource: every bucket
    found = iam.excess(wide, documented)
    assert found.actions == ("NotAction s3:DeleteBucket", "admin:*", "s3:PutBucketPolicy")
    assert found.grants == (("s3:GetObject", "arn:aws:s3:::snaps/*"), ("s3:ListBucket", "*"),
                            ("s3:PutObject", "arn:aws:s3:::*"))
    # a glob is covered only by a wider glob, never by a literal: `?` and `*` in the value are not characters
    assert iam.covers("arn:aws:s3:::b/*", "arn:aws:s3:::b/drtool/*")
    assert not iam.covers("arn:aws:s3:::b/drtool/*", "arn:aws:s3:::b/*")
    assert not iam.covers("arn:aws:s3:::b/x?", "arn:aws:s3:::b/x*")
    assert iam.covers("arn:aws:s3:::b/x*", "arn:aws:s3:::b/x?")
    # another snapshot.prefix moves every drtool-owned resource with it
    moved = iam.documented_policy("dify", "snaps", prefix="/backups/dr/")
    text = json.dumps(moved)
    assert "snaps/backups/dr/audit/*" in text and "/drtool/" not in text


def test_hostile_policy_text_is_bounded_and_inert() -> None:
    from drtool.ops.audit.checks_s3 import MAX_ITEM, _listed

    evil = "arn:aws:s3:::x/\x1b[31m\nFAKE finding " + "A" * 500
    policy = {"Statement": [{"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": [evil, f"{evil}2"]}] +
              [{"Effect": "Allow", "Action": [f"s3:Made{i}"]} for i in range(20)]}
    found = iam.excess(policy, iam.documented_policy("dify", "snaps"))
    shown = _listed([f"{a} on {r}" for a, r in found.grants])
    assert "\x1b" not in shown and "\n" not in shown and len(shown) < 2 * (MAX_ITEM + 2)
    assert _listed(list(found.actions)).endswith("(+12 more)")


# --- the key's policy against docs/iam.md ------------------------------------------------------------------------

def test_readwrite_policy_is_too_wide(world: AuditWorld, isolated_minio_pair: MinioSites) -> None:
    """The built-in `readwrite` (s3:* on every bucket) attached next to the documented policy: a warning naming
    s3:* and the policies to detach; detached again afterwards."""
    clean = world.audit("audit", "--json", "--no-probe")
    assert "s3.policy_too_wide" not in {f["id"] for f in clean.findings}, clean.findings
    assert any(c.startswith("s3: IAM policy of the key of the dify bucket") for c in clean.result["checked"])
    isolated_minio_pair.mc("admin", "policy", "attach", "A", "readwrite", "--user", AUDIT_USER)
    try:
        done = world.audit("audit", "--json", "--no-probe")
        assert set(done.problems()) == {"s3.policy_too_wide"} and done.code == 3, done.findings
        mine = [f for f in done.findings if f["id"] == "s3.policy_too_wide"]
        assert len(mine) == 1, mine  # one credential, two buckets: one finding
        evidence, fix = str(mine[0]["evidence"]), str(mine[0]["fix"])
        assert f"accountinfo on {isolated_minio_pair.a.endpoint}: the key's policy allows beyond" in evidence
        assert "actions s3:*" in evidence and world.dify_bucket in evidence
        assert "mc admin policy detach ALIAS" in fix and "readwrite" in fix and "--user <the access key>" in fix
        assert world.env["DRTOOL_S3_SECRET_KEY"] not in done.out + done.err
        assert AUDIT_USER not in done.out  # drtool treats access keys as secrets too
    finally:
        isolated_minio_pair.mc("admin", "policy", "detach", "A", "readwrite", "--user", AUDIT_USER)


def test_documented_action_on_every_bucket_is_too_wide(world: AuditWorld, isolated_minio_pair: MinioSites) -> None:
    """Only documented actions, but s3:PutObject and s3:DeleteObject on every bucket: the resources are named."""
    grant_documented(isolated_minio_pair, world.dify_bucket, world.snap_bucket, extra=[
        {"Effect": "Allow", "Action": ["s3:PutObject", "s3:DeleteObject"], "Resource": ["arn:aws:s3:::*"]}])
    finding = only(world, "s3.policy_too_wide", "warning", "--no-probe")
    evidence = str(finding["evidence"])
    assert "resources s3:DeleteObject on arn:aws:s3:::*, s3:PutObject on arn:aws:s3:::*" in evidence
    assert "actions" not in evidence.split("allows beyond", 1)[1]


# --- the multipart-upload probe ----------------------------------------------------------------------------------

def test_refused_multipart_upload_is_critical(world: AuditWorld, isolated_minio_pair: MinioSites) -> None:
    """A Deny on the multipart probe's key in the Dify bucket: the plain PUT probe still works (it is another key),
    CreateMultipartUpload is refused (MinIO authorises it as s3:PutObject). --no-probe sends no upload at all."""
    deny = {"Effect": "Deny", "Action": ["s3:PutObject"],
            "Resource": [f"arn:aws:s3:::{world.dify_bucket}/drtool/audit/multipart-*"]}
    clean = world.audit("audit", "--json")
    assert any("multipart probe" in c for c in clean.result["checked"]), clean.result["checked"]
    grant_documented(isolated_minio_pair, world.dify_bucket, world.snap_bucket, extra=[deny])
    finding = only(world, "s3.multipart_refused", "critical")
    assert world.dify_bucket in str(finding["target"]) and finding["target"].startswith("dify bucket")
    evidence = str(finding["evidence"])
    assert evidence.startswith(f"CreateMultipartUpload of s3://{world.dify_bucket}/drtool/audit/multipart-probe")
    assert "needs s3:PutObject" in evidence and "grant s3:PutObject" in str(finding["fix"])
    skipped = world.audit("audit", "--json", "--no-probe")
    assert "s3.multipart_refused" not in {f["id"] for f in skipped.findings}
    assert not any("multipart probe" in c for c in skipped.result["checked"])
    _no_leftovers(world)


def test_refused_abort_is_a_warning_and_leaves_nothing(world: AuditWorld, isolated_minio_pair: MinioSites) -> None:
    """The documented policy without s3:AbortMultipartUpload: uploads work, an abort is refused. The probe then
    completes its upload and deletes that version, so neither bucket keeps a part, an upload or a version."""
    grant_documented(isolated_minio_pair, world.dify_bucket, world.snap_bucket, leave_out=("s3:AbortMultipartUpload",))
    done = world.audit("audit", "--json")
    assert set(done.problems()) == {"s3.multipart_refused"} and done.code == 3, done.findings
    mine = [f for f in done.findings if f["id"] == "s3.multipart_refused"]
    assert sorted(str(f["target"]).split()[0] for f in mine) == ["dify", "snapshot"]
    for f in mine:
        assert f["severity"] == "warning" and str(f["evidence"]).startswith("AbortMultipartUpload of s3://")
        assert "needs s3:AbortMultipartUpload" in str(f["evidence"]) and "could not be completed" not in f["evidence"]
        assert "grant s3:AbortMultipartUpload" in str(f["fix"])
    _no_leftovers(world)
    # the completed probe version was replicated before it was deleted: no failed replication on the pair (which
    # would be a minio.replication_warning in every audit for an hour)
    grant_documented(isolated_minio_pair, world.dify_bucket, world.snap_bucket)
    again = world.audit("audit", "--json", "--no-probe")
    assert again.problems() == {}, again.findings


# --- default encryption and the KMS ------------------------------------------------------------------------------

def test_pair_without_kms_reports_encryption_off_as_info(world: AuditWorld) -> None:
    """The pair has no KMS: each bucket is `s3.encryption_off` (info, so the clean stack stays clean) and the fix
    starts with setting up a KMS, since MinIO refuses `mc encrypt set` without one."""
    done = world.audit("audit", "--json", "--no-probe")
    mine = {str(f["target"]).split()[0]: f for f in done.findings if f["id"] == "s3.encryption_off"}
    assert set(mine) == {"dify", "snapshot"} and done.code == 0, done.findings
    for f in mine.values():
        assert f["severity"] == "info" and "the MinIO server has no KMS configured" in str(f["evidence"])
        assert str(f["fix"]).startswith("configure a KMS first") and "MINIO_KMS_SECRET_KEY" in str(f["fix"])


@pytest.fixture(scope="module")
def kms_minio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MinioSite]:
    """One MinIO with a static KMS key (MINIO_KMS_SECRET_KEY), a server of its own: the audit's pair keeps none."""
    from tests.stack.minio_sites import local_minio_site

    key = "drtool-audit-key:" + base64.b64encode(os.urandom(32)).decode()
    with local_minio_site(tmp_path_factory.mktemp("audit-kms"), extra_env={"MINIO_KMS_SECRET_KEY": key}) as site:
        yield site


def _encryption_findings(site: MinioSite, bucket: str, monkeypatch: pytest.MonkeyPatch) -> tuple[list[Any], Any]:
    from drtool.config import load_settings
    from drtool.ops.audit.context import AuditOptions
    from drtool.ops.audit.runner import run_audit

    for name, value in (("S3_ENDPOINT", site.endpoint), ("S3_BUCKET", bucket), ("SNAPSHOT_BUCKET", bucket),
                        ("S3_ACCESS_KEY", site.access_key), ("S3_SECRET_KEY", site.secret_key),
                        ("REPLICATION_SITES", ""), ("REPLICATION_ACCESS_KEY", site.access_key),
                        ("REPLICATION_SECRET_KEY", site.secret_key)):
        monkeypatch.setenv(f"DRTOOL_{name}", value)
    result = run_audit(load_settings(), AuditOptions(probe=False))
    return [f for f in result.findings if f.id == "s3.encryption_off"], result


def test_encryption_on_a_kms_minio(world: AuditWorld, kms_minio: MinioSite, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a KMS, a bucket without default encryption is reported with the KMS seen and the one command that
    fixes it; after `PutBucketEncryption` (what `mc encrypt set sse-s3` sends) the finding is gone."""
    import uuid

    client = kms_minio.s3_client()
    bucket = f"audit-kms-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    mine, _ = _encryption_findings(kms_minio, bucket, monkeypatch)
    assert len(mine) == 1 and mine[0].level.label == "info", mine
    assert "the MinIO server has a KMS (" in mine[0].evidence and " online)" in mine[0].evidence
    assert mine[0].fix.startswith(f"mc encrypt set sse-s3 ALIAS/{bucket}") and "lost key" in mine[0].fix
    client.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={
        "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
    mine, result = _encryption_findings(kms_minio, bucket, monkeypatch)
    assert mine == [] and any(c.endswith("default encryption AES256") for c in result.checked), result.checked
