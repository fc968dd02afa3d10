"""Issue 16: the parallel version listing gives the serial listing's manifest, byte for byte; the request-rate cap
holds (real MinIO, tiny buckets, small pages so that pagination and page boundaries are exercised)."""

from __future__ import annotations

import hashlib
import io
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from drtool.adapters import s3 as s3a
from drtool.config import S3Settings
from drtool.core import manifest as mf
from drtool.core.keys import KeyPatterns, ReferenceIndex
from drtool.ops.snapshot import listing as snapshot_listing
from drtool.ops.snapshot.pinning import write_manifest
from tests.snapshot.conftest import SnapshotEnv, new_bucket
from tests.stack.minio_sites import MinioSites

# Awkward on purpose: direct keys next to sub-prefixes that sort around them ('t1' < 't1-x/' < 't1.txt' < 't1/'
# < 't10/'), non-ASCII, characters that URL encoding must carry (+ % & ? space), a folder-like key, a key whose
# newest entry is a delete marker, one whose only entry is a delete marker, several versions of one key.
KEYS = [
    "upload_files/t1", "upload_files/t1-x/c.txt", "upload_files/t1.txt", "upload_files/t1/a.txt",
    "upload_files/t1/b.txt", "upload_files/t10/d.txt", "upload_files/t2/e f+g%h&i?j.txt", "upload_files/t3/x/",
    "upload_files/t3/x/y.txt", "upload_files/ü/é.txt", "upload_files/zz/1.txt", "upload_files/zz/2.txt",
    "upload_files/zz/3.txt", "upload_files/zz/4.txt", "upload_files/zz/5.txt",
    "datasets/d1/processed/chunks.jsonl", "datasets/d1/raw/doc.pdf", "datasets/d2/processed/chunks.jsonl",
    "privkeys/t1/private.pem", "website_files/unlisted.html",
]


@pytest.fixture(scope="module")
def awkward_bucket(minio_pair: MinioSites) -> tuple[Any, str]:
    client = drtool_client(minio_pair)
    bucket = new_bucket(client)
    for key in KEYS:
        client.put_object(Bucket=bucket, Key=key, Body=key.encode())
    for _ in range(3):  # versions of one key, split across pages of 2
        client.put_object(Bucket=bucket, Key="upload_files/t1/a.txt", Body=b"again")
    client.delete_object(Bucket=bucket, Key="upload_files/t1/b.txt")  # a delete marker on top
    client.put_object(Bucket=bucket, Key="upload_files/gone.txt", Body=b"x")
    client.delete_object(Bucket=bucket, Key="upload_files/gone.txt")
    return client, bucket


PREFIXES = ["datasets/", "privkeys/", "upload_files/"]


def drtool_client(minio_pair: MinioSites) -> Any:
    """The client a snapshot makes (signature v4: its listing pages are presigned GETs)."""
    site = minio_pair.a
    return s3a.make_client(S3Settings(endpoint=site.endpoint, access_key=site.access_key,
                                      secret_key=site.secret_key, address_style="path"))


def _listing(client: Any, bucket: str, **kwargs: Any) -> list[tuple[Any, ...]]:
    return [(v.key, v.version_id, v.last_modified, v.is_latest, v.is_delete_marker, v.etag, v.size)
            for v in snapshot_listing.iter_versions(client, bucket, PREFIXES, page_size=2, **kwargs)]


@pytest.mark.parametrize("memory_pages", [8, 0], ids=["in-memory", "spooled-to-disk"])
def test_parallel_listing_is_the_serial_listing(awkward_bucket: tuple[Any, str], memory_pages: int,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    client, bucket = awkward_bucket
    monkeypatch.setattr(snapshot_listing, "MEMORY_PAGES_PER_WORKER", memory_pages)
    serial = _listing(client, bucket, workers=1)
    # The ground truth: boto3's own paginator, prefix after prefix (the order S3 defines).
    expected_keys = []
    for prefix in PREFIXES:
        for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
            entries = sorted([*page.get("Versions", []), *page.get("DeleteMarkers", [])], key=lambda e: e["Key"])
            expected_keys += [e["Key"] for e in entries]
    assert [s[0] for s in serial] == expected_keys
    assert _listing(client, bucket, workers=4) == serial
    assert _listing(client, bucket, workers=2) == serial


def _listed_manifest(client: Any, bucket: str, fence: datetime, workers: int) -> bytes:
    out = io.BytesIO()
    writer = mf.ManifestWriter(out)
    with ReferenceIndex() as index:
        index.add_many([("upload_files/t1/a.txt", "upload_files.key"), ("upload_files/t1.txt", "upload_files.key"),
                        ("upload_files/ü/é.txt", "upload_files.key"), ("upload_files/gone.txt", "upload_files.key"),
                        ("upload_files/t1/b.txt", "upload_files.key"), ("upload_files/missing.txt", "upload_files.key"),
                        ("upload_files/t2/e f+g%h&i?j.txt", "tool_files.file_key")])
        patterns = KeyPatterns.parse("privkeys/,datasets/*/processed/,upload_files/zz/")
        write_manifest(writer, index, patterns, client, bucket, "", fence, "Enabled", None, "", workers=workers)
    writer.close()
    return out.getvalue()


def test_parallel_manifest_is_byte_identical(awkward_bucket: tuple[Any, str], monkeypatch: pytest.MonkeyPatch
                                             ) -> None:
    client, bucket = awkward_bucket
    monkeypatch.setattr(snapshot_listing, "PAGE_SIZE", 2)
    fence = datetime.now(UTC) + timedelta(seconds=5)
    serial = _listed_manifest(client, bucket, fence, workers=1)
    records = list(mf.read_manifest(io.BytesIO(serial)))
    states = {r.key: r.state for r in records}
    assert states["upload_files/t1/b.txt"] == mf.STATE_DANGLING and states["upload_files/zz/5.txt"] == mf.STATE_PINNED
    assert "website_files/unlisted.html" not in states and len(records) >= 12
    for workers in (4, 3):
        parallel = _listed_manifest(client, bucket, fence, workers=workers)
        assert hashlib.sha256(parallel).hexdigest() == hashlib.sha256(serial).hexdigest()


def test_request_cap_is_honoured(minio_pair: MinioSites) -> None:
    """30 one-object pages at 10 requests/s (one second of burst) cannot finish in under ~2 s; uncapped they take
    a fraction of that. The pacer is what every listing request of a snapshot goes through."""
    client = drtool_client(minio_pair)
    bucket = new_bucket(client)
    for i in range(30):
        client.put_object(Bucket=bucket, Key=f"upload_files/t/{i:02d}", Body=b"x")
    stamps: list[float] = []
    pacer = snapshot_listing.request_pacer(10)
    assert pacer is not None and snapshot_listing.request_pacer(0) is None

    def counted() -> None:
        pacer()
        stamps.append(time.monotonic())

    t0 = time.monotonic()
    listed = list(snapshot_listing.iter_versions(client, bucket, ["upload_files/"], workers=4, pace=counted,
                                                 page_size=1))
    elapsed = time.monotonic() - t0
    assert len(listed) == 30 and len(stamps) >= 30
    assert elapsed >= (len(stamps) - 11) / 10 * 0.9, (elapsed, len(stamps))
    # No second holds more than the rate plus the one-second burst.
    assert max(sum(1 for s in stamps if a <= s < a + 1.0) for a in stamps) <= 21


def test_snapshot_create_honours_max_requests_per_second(minio_env: SnapshotEnv) -> None:
    """End to end: the setting reaches the listing. The seeded bucket needs about five listing requests (one per
    listed prefix); at 1 request/s they take >= 3 s, uncapped well under one."""
    run = minio_env.run("snapshot", "create", "--json", "--max-requests-per-second", "1")
    assert run.code in (0, 3), run.stderr
    snap_id = run.result()["snapshot"]
    meta = minio_env.client.get_object(Bucket=minio_env.dest_bucket,
                                       Key=f"drtool/snapshots/{snap_id}/meta.json")["Body"].read()
    assert json.loads(meta)["durations"]["listing_s"] >= 3.0
