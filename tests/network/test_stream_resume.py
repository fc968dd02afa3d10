"""A long read cut mid-transfer is read on from where it stopped (drtool/adapters/s3/resume.py ResumingBody).

A rebuild reads its chunk file only as fast as it embeds, so on a large dataset one GET stays open for hours and
meets idle timeouts and resets (seen in the warm-rebuild bench: SeaweedFS cut a slowly read file after ten
minutes). toxiproxy's limit_data closes every connection after N bytes: the body must come out whole and
byte-identical, a file replaced meanwhile must never be stitched onto the old one, and past s3.max_attempts the
cut is the error it always was.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import pytest

from drtool.adapters.s3 import BucketStore
from drtool.config import S3Settings
from drtool.errors import PreconditionFailed, UnavailableError
from tests.helpers.buckets import new_bucket
from tests.stack.toxiproxy import Proxy

CUT_AFTER = 256 * 1024  # bytes per connection, headers included


def _proxied_store(site: Any, proxy: Proxy, bucket: str, attempts: int) -> BucketStore:
    return BucketStore(S3Settings(endpoint=proxy.url(), bucket=bucket, access_key=site.access_key,
                                  secret_key=site.secret_key, address_style="path", max_attempts=attempts))


@pytest.fixture
def cut_store(minio_pair: Any, s3_proxy: Proxy) -> Any:
    site = minio_pair.a
    client = site.s3_client()
    bucket = new_bucket(client, "resume")
    body = os.urandom(5 * CUT_AFTER + 12345)  # ~1.3 MiB: several cuts
    key = f"datasets/{uuid.uuid4()}/processed/chunks.jsonl"
    client.put_object(Bucket=bucket, Key=key, Body=body)
    yield site, client, bucket, key, body
    s3_proxy.clear()


def test_a_cut_body_is_read_on_and_comes_out_whole(cut_store: Any, s3_proxy: Proxy) -> None:
    site, _, bucket, key, body = cut_store
    s3_proxy.limit_data(CUT_AFTER)
    stream = _proxied_store(site, s3_proxy, bucket, attempts=20).open(key)
    read = b"".join(iter(lambda: stream.read(64 * 1024), b""))
    stream.close()
    assert read == body
    assert stream.resumed >= len(body) // CUT_AFTER  # every connection was really cut


def test_readline_is_resumed_too(cut_store: Any, s3_proxy: Proxy) -> None:
    site, client, bucket, _, _ = cut_store
    lines = [f'{{"id": "{i}", "text": "{"x" * (i % 97)}"}}\n'.encode() for i in range(20000)]
    key = "datasets/lines.jsonl"
    client.put_object(Bucket=bucket, Key=key, Body=b"".join(lines))
    s3_proxy.limit_data(CUT_AFTER)
    stream = _proxied_store(site, s3_proxy, bucket, attempts=20).open(key)
    got = list(iter(stream.readline, b""))
    assert got == lines and stream.resumed >= 2


def test_a_file_replaced_between_cuts_is_refused_not_stitched(cut_store: Any, s3_proxy: Proxy) -> None:
    site, client, bucket, key, body = cut_store
    s3_proxy.limit_data(CUT_AFTER)
    stream = _proxied_store(site, s3_proxy, bucket, attempts=20).open(key)
    first = stream.read(64 * 1024)
    assert first == body[:64 * 1024]
    client.put_object(Bucket=bucket, Key=key, Body=os.urandom(len(body)))  # on the server, not via the proxy
    with pytest.raises(PreconditionFailed) as changed:
        while stream.read(64 * 1024):
            pass
    assert "changed while it was being read" in str(changed.value)


def test_past_max_attempts_the_cut_is_reported(cut_store: Any, s3_proxy: Proxy) -> None:
    site, _, bucket, key, _ = cut_store
    s3_proxy.limit_data(CUT_AFTER)
    stream = _proxied_store(site, s3_proxy, bucket, attempts=2).open(key)
    with pytest.raises(UnavailableError) as cut:
        while stream.read(64 * 1024):
            pass
    assert "cut mid-transfer" in str(cut.value) and stream.resumed == 1
