"""Objects planted in the chunk bucket by whoever can write it must not grow drtool's memory: a rebuild ledger
or marker larger than drtool ever writes is refused after 8 MiB, a ranged read stops at its range, and a cache
segment claiming more records than drtool writes is skipped before its hash part is read. Real MinIO."""

from __future__ import annotations

import hashlib
import logging
import uuid
from typing import Any

import pytest

from drtool.adapters.s3 import SMALL_OBJECT_MAX_BYTES, BucketStore
from drtool.config import S3Settings
from drtool.errors import DrtoolError
from drtool.ops.rebuild.ledger import Ledger
from drtool.ops.rebuild.sidecar import HEADER, MAGIC, MAX_SEGMENT_RECORDS, VectorSidecar, encode_segment

DIM = 4


@pytest.fixture
def fresh_bucket_store(minio_pair: Any) -> BucketStore:
    site = minio_pair.a
    bucket = f"planted-{uuid.uuid4().hex[:10]}"
    site.s3_client().create_bucket(Bucket=bucket)
    return BucketStore(S3Settings(endpoint=site.endpoint, bucket=bucket, access_key=site.access_key,
                                  secret_key=site.secret_key, address_style="path", max_attempts=1))


def test_an_oversized_ledger_is_refused_not_read(fresh_bucket_store: BucketStore) -> None:
    ledger = Ledger(fresh_bucket_store, "drtool/rebuild", "milvus", "Vector_index_x_Node")
    fresh_bucket_store.put(ledger.key, b'{"version": 1, "pad": "' + b"x" * (SMALL_OBJECT_MAX_BYTES + 10) + b'"}')
    with pytest.raises(DrtoolError, match=f"more than the {SMALL_OBJECT_MAX_BYTES} drtool reads"):
        ledger.load()


def test_a_ranged_read_stops_at_its_range(fresh_bucket_store: BucketStore) -> None:
    fresh_bucket_store.put("blob", b"0123456789" * 100)
    assert fresh_bucket_store.get("blob", byte_range=(10, 19)) == b"0123456789"
    assert fresh_bucket_store.get("blob") == b"0123456789" * 100


def test_a_segment_claiming_too_many_records_is_skipped(fresh_bucket_store: BucketStore,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    good = VectorSidecar(fresh_bucket_store, "ds1", "model-a", DIM)
    digest = hashlib.sha256(b"text").digest()
    fresh_bucket_store.put(good.prefix + "seg-good.vec", encode_segment(DIM, [(digest, [0.5, 0.5, 0.5, 0.5])]))
    count = MAX_SEGMENT_RECORDS + 1
    record = 32 + 4 * DIM
    huge = HEADER.pack(MAGIC, DIM, count) + b"\0" * (record * count)  # ~5 MiB, sized to pass the listing check
    fresh_bucket_store.put(good.prefix + "seg-huge.vec", huge)
    with caplog.at_level(logging.WARNING, logger="drtool.rebuild"):
        held = VectorSidecar(fresh_bucket_store, "ds1", "model-a", DIM).open()
    assert held == 1
    assert any("seg-huge.vec" in r.getMessage() and "more than drtool ever writes" in r.getMessage()
               for r in caplog.records)
