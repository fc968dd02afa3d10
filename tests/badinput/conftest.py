"""Fixtures of the bad-input tests: the snapshot tests' MinIO source/destination buckets and database names."""

from tests.snapshot.conftest import minio_env, new_database  # noqa: F401
