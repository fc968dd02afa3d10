"""A well-configured stack gets exit 0 and no warning or critical finding: without this, every other audit test
could pass with an audit that flags everything."""

from __future__ import annotations

from tests.audit.conftest import AuditWorld


def test_well_configured_stack_has_no_problem(world: AuditWorld) -> None:
    done = world.audit("audit", "--json")
    assert done.problems() == {}, done.findings
    assert done.code == 0
    result = done.result
    assert result["score"] == 100
    assert result["counts"]["critical"] == 0 and result["counts"]["warning"] == 0
    checked = " ".join(result["checked"])
    for what in ("write/delete probe", "versioning", "object lock", "lifecycle", "site replication",
                 "newest snapshot", "last successful drill", "chunk files", "pg_dump version"):
        assert what in checked, (what, result["checked"])
    # loopback http is not a risk on the wire: reported, as info only
    assert {f["id"]: f["severity"] for f in done.findings}.get("s3.plain_http") == "info"
    # the probe left nothing behind in either bucket, not even a version
    for bucket in (world.dify_bucket, world.snap_bucket):
        listing = world.client.list_object_versions(Bucket=bucket, Prefix="drtool/audit/")
        assert not listing.get("Versions") and not listing.get("DeleteMarkers"), listing


def test_probe_in_a_bucket_with_default_retention_is_not_a_failure(world: AuditWorld) -> None:
    """A default retention locks the probe's version as well: deleting that version is refused by design, so the
    audit leaves a delete marker instead and reports no problem (the locked version expires with the retention)."""
    world.client.put_object_lock_configuration(Bucket=world.snap_bucket, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}})
    done = world.audit("audit", "--json")
    assert done.problems() == {} and done.code == 0, done.findings
    assert any("kept by the default retention" in c for c in done.result["checked"])
    listing = world.client.list_object_versions(Bucket=world.snap_bucket, Prefix="drtool/audit/")
    assert [m["IsLatest"] for m in listing.get("DeleteMarkers", [])] == [True]
