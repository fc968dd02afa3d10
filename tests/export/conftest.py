"""Export tests: a seeded Dify database in the session's Postgres and a fresh bucket on MinIO site A."""

from __future__ import annotations

from typing import Any

import pytest

from tests.export.helpers import Bucket, apply_env, drtool_env, new_bucket_on


@pytest.fixture
def bucket(minio_pair: Any) -> Bucket:
    return new_bucket_on(minio_pair.a)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, pg: Any, dify_db: Any, bucket: Bucket) -> dict[str, str]:
    values = drtool_env(pg, dify_db.dbname, bucket)
    apply_env(monkeypatch, values)
    return values
