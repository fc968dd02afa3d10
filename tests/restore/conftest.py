"""Restore tests: `drtool restore` brings a snapshot's database and objects back. They restore what the snapshot
fixtures make (a seeded Dify database, its files in a versioned MinIO bucket, a separate snapshot bucket), into
targets each test names itself (`new_database`, tests.helpers; `new_bucket`)."""

from tests.snapshot.conftest import minio_env  # noqa: F401  (fixture)
