"""`drtool replication verify` and `probe` against the MinIO pair (site replication) and the SeaweedFS pair
(`weed filer.sync` A -> B). Differences are made on the real servers: an object deleted, added or overwritten
directly on the SeaweedFS replica, which filer.sync (one-directional) never corrects."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.foundation.metrics_check import parse_metrics
from tests.replication.conftest import CliRun, all_versions, keys, unique, wait_for


def _in_sync(drtool: Callable[..., CliRun], *args: str, timeout: float = 90) -> CliRun:
    runs: list[CliRun] = []

    def ok() -> bool:
        runs.append(drtool("replication", "verify", "--json", *args))
        return runs[-1].code == 0

    wait_for(ok, timeout, f"verify {' '.join(args)} to report no difference", interval=1)
    return runs[-1]


@pytest.fixture
def seaweed_bucket(seaweed_replication_env: Any) -> tuple[str, Any, Any]:
    """A bucket on SeaweedFS A with 40 objects, synced to B."""
    bucket = unique("verify")
    a, b = seaweed_replication_env.a.s3_client(), seaweed_replication_env.b.s3_client()
    a.create_bucket(Bucket=bucket)
    for i in range(40):
        a.put_object(Bucket=bucket, Key=f"datasets/d{i % 4}/raw/file-{i:03d}.txt", Body=f"file {i}".encode() * (i + 1))

    def synced() -> bool:
        # B's ListBuckets does not show buckets that filer.sync created (seen with SeaweedFS 4.x): ask for keys.
        try:
            return len(keys(b, bucket)) == 40
        except b.exceptions.NoSuchBucket:
            return False

    wait_for(synced, 60, "filer.sync to copy the bucket")
    return bucket, a, b


def test_verify_seaweed_pair_in_sync(drtool: Callable[..., CliRun], seaweed_bucket: tuple[str, Any, Any]) -> None:
    bucket, _, _ = seaweed_bucket
    res = _in_sync(drtool, "--bucket", bucket)
    result = res.event("result")
    [b] = result["buckets"]
    assert b["mode"] == "latest"  # unversioned buckets: compare each key's current object
    assert (b["source_entries"], b["target_entries"], b["matched"]) == (40, 40, 40)
    assert b["missing"] == b["extra"] == b["mismatch"] == 0


def test_verify_seaweed_differences(drtool: Callable[..., CliRun], seaweed_bucket: tuple[str, Any, Any],
                                    tmp_path: Any) -> None:
    bucket, _, b = seaweed_bucket
    b.delete_object(Bucket=bucket, Key="datasets/d1/raw/file-005.txt")
    b.put_object(Bucket=bucket, Key="datasets/d9/only-on-b.txt", Body=b"extra")
    b.put_object(Bucket=bucket, Key="datasets/d2/raw/file-010.txt", Body=b"changed on the replica")

    res = drtool("replication", "verify", "--bucket", bucket, "--settle", "0", "--json")
    assert res.code == 4
    diffs = [e for e in res.events if e["event"] == "replication.difference"]
    assert sorted((d["kind"], d["key"]) for d in diffs) == [
        ("extra", "datasets/d9/only-on-b.txt"),
        ("mismatch", "datasets/d2/raw/file-010.txt"),
        ("missing", "datasets/d1/raw/file-005.txt"),
    ]
    mismatch = next(d for d in diffs if d["kind"] == "mismatch")
    assert mismatch["fields"] == ["etag", "size"]
    [summary] = res.event("result")["buckets"]
    assert (summary["missing"], summary["extra"], summary["mismatch"], summary["matched"]) == (1, 1, 1, 38)

    # Human output: summary line and the examples.
    metrics = tmp_path / "verify.prom"
    human = drtool("replication", "verify", "--bucket", bucket, "--settle", "0", "--metrics-file", str(metrics))
    assert human.code == 4
    assert "missing 1, extra 1, mismatched 1" in human.out
    assert "missing  datasets/d1/raw/file-005.txt" in human.out and "(etag, size)" in human.out
    assert "verdict: CRITICAL" in human.out
    assert f'drtool_replication_verify_missing_objects{{bucket="{bucket}",source="A",target="B"}} 1' in \
        metrics.read_text()
    assert parse_metrics(metrics)["drtool_replication_verify_last_exit_code"][()] == 4

    # Inside a settle window of an hour every one of these changes is recent: reported as unsettled, exit 0.
    res = drtool("replication", "verify", "--bucket", bucket, "--settle", "3600", "--json")
    [summary] = res.event("result")["buckets"]
    assert res.code == 0
    assert (summary["missing"], summary["extra"], summary["mismatch"], summary["unsettled"]) == (0, 0, 0, 3)
    assert summary["unsettled_by_kind"] == {"missing": 1, "extra": 1, "mismatch": 1}

    # --examples bounds the human list, --json still streams everything.
    short = drtool("replication", "verify", "--bucket", bucket, "--settle", "0", "--examples", "1")
    assert "... 2 more (use --json for all)" in short.out


def test_verify_sample_finds_missing_and_changed(drtool: Callable[..., CliRun],
                                                 seaweed_bucket: tuple[str, Any, Any]) -> None:
    bucket, _, b = seaweed_bucket
    b.delete_object(Bucket=bucket, Key="datasets/d3/raw/file-007.txt")
    b.put_object(Bucket=bucket, Key="datasets/d0/raw/file-000.txt", Body=b"different")
    res = drtool("replication", "verify", "--bucket", bucket, "--settle", "0", "--sample", "1000", "--json")
    assert res.code == 4
    [summary] = res.event("result")["buckets"]
    assert summary["sampled"] == 40 and summary["missing"] == 1 and summary["mismatch"] == 1
    assert summary["bad_fraction_upper_bound_95"] > 2 / 40
    human = drtool("replication", "verify", "--bucket", bucket, "--settle", "0", "--sample", "1000")
    assert "sampled 40 of 40" in human.out and "with 95% confidence, at most" in human.out
    small = drtool("replication", "verify", "--bucket", bucket, "--settle", "0", "--sample", "5", "--json")
    [summary] = small.event("result")["buckets"]
    assert summary["sampled"] == 5 and summary["matched"] + summary["missing"] + summary["mismatch"] == 5


def test_read_data_on_seaweed_latest_mode(drtool: Callable[..., CliRun],
                                          seaweed_bucket: tuple[str, Any, Any]) -> None:
    """--read-data on unversioned buckets (latest mode): every object read on both sides, ETags are MD5s."""
    bucket, _, _ = seaweed_bucket
    res = drtool("replication", "verify", "--bucket", bucket, "--settle", "0", "--read-data", "100", "--json")
    assert res.code == 0, res.out + res.err
    [summary] = res.event("result")["buckets"]
    rd = summary["read_data"]
    assert summary["mode"] == "latest" and (rd["selected"], rd["read"], rd["unreadable"], rd["differing"]) == (
        40, 40, 0, 0)
    assert rd["bytes_read"] == 2 * sum(len(f"file {i}") * (i + 1) for i in range(40))


def test_verify_bucket_missing_on_target(drtool: Callable[..., CliRun], seaweed_pair: Any,
                                         minio_replication_env: Any) -> None:
    """Any two S3 endpoints can be compared (SeaweedFS accepts MinIO's keys); a bucket the target lacks is named."""
    bucket = unique("only-on-seaweed")
    seaweed_pair.a.s3_client().create_bucket(Bucket=bucket)
    res = drtool("replication", "verify", "--source", f"S={seaweed_pair.a.endpoint}",
                 "--target", f"M={minio_replication_env.a.endpoint}", "--bucket", bucket)
    assert res.code == 4 and f"bucket {bucket} is missing on site M" in res.out


def test_verify_minio_versions(drtool: Callable[..., CliRun], minio_replication_env: Any) -> None:
    bucket = unique("versions")
    a = minio_replication_env.a.s3_client()
    a.create_bucket(Bucket=bucket)
    for i in range(10):
        a.put_object(Bucket=bucket, Key=f"k{i}", Body=f"v1 {i}".encode())
    a.put_object(Bucket=bucket, Key="k0", Body=b"v2")
    a.put_object(Bucket=bucket, Key="k0", Body=b"v3 longer")
    a.delete_object(Bucket=bucket, Key="k1")  # a delete marker
    res = _in_sync(drtool, "--bucket", bucket)
    [summary] = res.event("result")["buckets"]
    assert summary["mode"] == "versions"
    assert summary["source_entries"] == summary["target_entries"] == summary["matched"] == 13
    assert all_versions(a, bucket) == all_versions(minio_replication_env.b.s3_client(), bucket)  # same version ids
    latest = drtool("replication", "verify", "--json", "--bucket", bucket, "--mode", "latest")
    [summary] = latest.event("result")["buckets"]
    assert latest.code == 0 and summary["mode"] == "latest" and summary["matched"] == 9  # k1 is deleted


# --- probe ---------------------------------------------------------------------------------------------------

def _no_canary(client: Any, bucket: str) -> bool:
    return all_versions(client, bucket, ".drtool/") == []


def test_probe_minio(drtool: Callable[..., CliRun], minio_replication_env: Any, tmp_path: Any) -> None:
    bucket = unique("probe")
    minio_replication_env.a.s3_client().create_bucket(Bucket=bucket)
    wait_for(lambda: bucket in {x["Name"] for x in minio_replication_env.b.s3_client().list_buckets()["Buckets"]}, 60,
             "the bucket on B")
    metrics = tmp_path / "probe.prom"
    res = drtool("replication", "probe", "--bucket", bucket, "--json", "--timeout", "60", "--metrics-file",
                 str(metrics))
    assert res.code == 0, res.out + res.err
    event = res.event("result")
    assert event["ok"] and event["verdict"] == "OK" and event["cleaned_up"]
    assert 0 < event["put_lag_seconds"] < 60 and 0 <= event["delete_lag_seconds"] < 60
    probed = parse_metrics(metrics)  # prometheus_client's parser
    assert probed["drtool_replication_probe_last_exit_code"][()] == 0
    assert 0 < probed["drtool_replication_probe_put_lag_seconds"][(("source", "A"), ("target", "B"))] < 60
    for site in (minio_replication_env.a, minio_replication_env.b):
        client = site.s3_client()
        wait_for(lambda c=client: _no_canary(c, bucket), 30, f"no canary left on {site.alias}")
    # --max-lag as an SLO: any real lag is above 0 s.
    slow = drtool("replication", "probe", "--bucket", bucket, "--max-lag", "0")
    assert slow.code == 3 and "verdict: WARNING" in slow.out and "put lag" in slow.out


def test_probe_seaweed(drtool: Callable[..., CliRun], seaweed_bucket: tuple[str, Any, Any]) -> None:
    bucket, a, b = seaweed_bucket
    res = drtool("replication", "probe", "--bucket", bucket, "--json", "--timeout", "60")
    assert res.code == 0, res.out + res.err
    event = res.event("result")
    assert event["ok"] and event["put_lag_seconds"] > 0 and event["delete_lag_seconds"] >= 0
    assert not [k for k in keys(a, bucket) + keys(b, bucket) if k.startswith(".drtool/")]


def test_probe_timeout_still_cleans_up(drtool: Callable[..., CliRun], seaweed_bucket: tuple[str, Any, Any]) -> None:
    """filer.sync copies A -> B only: a canary written on B never reaches A, so the probe must time out."""
    bucket, a, b = seaweed_bucket
    res = drtool("replication", "probe", "--bucket", bucket, "--source", "B", "--target", "A", "--timeout", "3")
    assert res.code == 4
    assert "did not appear on site A within 3 s" in res.out and "canary removed from both sites" in res.out
    assert not [k for k in keys(a, bucket) + keys(b, bucket) if k.startswith(".drtool/")]


# --- the fast listing verify uses, against boto3's own parser --------------------------------------------------

_TRICKY = ["a b.txt", "plus+sign", "percent%20encoded", "ü/ñandú.txt", "tab\there", "z/deep/key", "&amp;<x>"]


def _flat(pages: Any) -> list[tuple[Any, ...]]:
    items = [i for page in pages for i in page]
    keys_in_order = [i["Key"] for i in items]
    assert keys_in_order == sorted(keys_in_order)  # key order, whatever the page boundaries
    return sorted((i["Key"], i["VersionId"] or "null", (i["ETag"] or "").strip('"'), i["Size"],
                   i["LastModified"].timestamp(), i["IsDeleteMarker"], i["IsLatest"]) for i in items)


@pytest.mark.parametrize("backend", ["minio", "seaweed"])
def test_fast_listing_equals_boto3(backend: str, request: pytest.FixtureRequest) -> None:
    from drtool.adapters.s3 import iter_listing_pages, iter_listing_pages_fast, make_client
    from drtool.config import S3Settings

    pair = request.getfixturevalue("minio_pair" if backend == "minio" else "seaweed_pair")
    client = make_client(S3Settings(endpoint=pair.a.endpoint, access_key=pair.a.access_key,
                                    secret_key=pair.a.secret_key, address_style="path"))
    bucket = unique("listing")
    client.create_bucket(Bucket=bucket)
    if backend == "minio":
        client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    for key in _TRICKY:
        client.put_object(Bucket=bucket, Key=key, Body=key.encode())
    client.put_object(Bucket=bucket, Key="a b.txt", Body=b"second version")
    client.delete_object(Bucket=bucket, Key="plus+sign")
    for versions in (True, False):
        for page_size in (2, 1000):
            fast = _flat(iter_listing_pages_fast(client, bucket, versions=versions, page_size=page_size))
            slow = _flat(iter_listing_pages(client, bucket, versions=versions, page_size=page_size))
            assert fast == slow and fast


def test_probe_with_the_target_down_is_critical_and_cleans_up(drtool: Callable[..., CliRun],
                                                              minio_replication_env: Any) -> None:
    bucket = unique("probe-down")
    a = minio_replication_env.a.s3_client()
    a.create_bucket(Bucket=bucket)
    wait_for(lambda: bucket in {x["Name"] for x in minio_replication_env.b.s3_client().list_buckets()["Buckets"]}, 60,
             "the bucket on B")
    minio_replication_env.b.stop()
    try:
        res = drtool("replication", "probe", "--bucket", bucket, "--timeout", "3", "--json")
    finally:
        minio_replication_env.b.start()
    assert res.code == 4
    event = res.event("result")
    assert event["verdict"] == "CRITICAL" and event["put_lag_seconds"] is None
    assert "did not appear on site B within 3 s (site B could not be reached: EndpointConnectionError)" in \
        event["error"]
    # Removed from A; B was down, so drtool says it could not check there.
    assert _no_canary(a, bucket)
    assert event["cleaned_up"] is False and event["leftovers"][0].startswith(f"B:s3://{bucket}/.drtool/")
