"""A wrong S3 secret is named as such by every command that reaches the bucket, not as a missing permission.

HEAD answers have no body, so botocore reports every refused HEAD as a bare 403, and `config check`, `verify`
and `export-chunks` (which start with HeadBucket) used to say "HeadBucket needs s3:ListBucket" to an operator
whose secret was mistyped. Real MinIO throughout.
"""

from __future__ import annotations

from pathlib import Path

import botocore.exceptions
import pytest

from drtool.adapters.s3 import translate_error
from tests.security.conftest import run_module
from tests.snapshot.conftest import SnapshotEnv, minio_env  # noqa: F401 - minio_env: fixture

FAST = {"DRTOOL_S3_MAX_ATTEMPTS": "1"}
COMMANDS = [
    ("config", "check"),
    ("verify", "--skip-vectors"),
    ("export-chunks", "--all"),
    ("snapshot", "create"),
]


@pytest.mark.parametrize("args", COMMANDS, ids=[" ".join(a) for a in COMMANDS])
def test_a_wrong_secret_is_named(minio_env: SnapshotEnv, tmp_path: Path, args: tuple[str, ...]) -> None:  # noqa: F811
    run = run_module(*args, env={**minio_env.env, **FAST, "DRTOOL_S3_SECRET_KEY": "not-the-secret-key"}, cwd=tmp_path)
    text = run.stderr + run.stdout
    assert run.code == 12, (run.code, text[-2000:])
    assert "secret key does not match" in text, text[-2000:]
    assert "needs s3:ListBucket" not in text, text[-2000:]
    assert "not-the-secret-key" not in text


def test_an_unknown_access_key_is_named(minio_env: SnapshotEnv, tmp_path: Path) -> None:  # noqa: F811
    env = {**minio_env.env, **FAST, "DRTOOL_S3_ACCESS_KEY": "nobody-has-this-key"}
    run = run_module("export-chunks", "--all", env=env, cwd=tmp_path)
    assert run.code == 12, run.stderr[-2000:]
    assert "does not know the access key" in run.stderr, run.stderr[-2000:]


def test_a_bare_403_names_both_causes() -> None:
    """Servers that send no reason on a refused HEAD (AWS S3 does not add MinIO's header): both causes are named,
    the credentials first. (The real-MinIO AccessDenied case is tests/security/test_least_privilege.py.)"""
    bare = botocore.exceptions.ClientError(
        {"Error": {"Code": "403", "Message": "Forbidden"}, "ResponseMetadata": {"HTTPStatusCode": 403}}, "HeadBucket")
    err = translate_error(bare, what="bucket b", endpoint=None)
    assert err.exit_code == 12
    assert "secret key" in (err.hint or "") and "s3:ListBucket" in (err.hint or "")


def test_rebuild_reaches_the_bucket_before_loading_a_model(minio_env: SnapshotEnv, tmp_path: Path) -> None:  # noqa: F811
    """A model that cannot load (a path that does not exist) is never reached: the bucket answers first, so bad
    credentials fail in a second, not after the model's imports and weights."""
    env = {**minio_env.env, **FAST, "DRTOOL_S3_SECRET_KEY": "not-the-secret-key", "DRTOOL_VECTOR_STORE": "milvus",
           "DRTOOL_MILVUS_URI": str(tmp_path / "milvus.db"), "DRTOOL_EMBEDDING_PROVIDER": "local",
           "DRTOOL_EMBEDDING_MODEL": str(tmp_path / "no-such-model")}
    run = run_module("rebuild-index", "--all", env=env, cwd=tmp_path)
    assert run.code == 12 and "secret key does not match" in run.stderr, run.stderr[-2000:]
    missing = run_module("rebuild-index", "--all", "--bucket", "no-such-bucket-here",
                     env={**env, "DRTOOL_S3_SECRET_KEY": minio_env.env["DRTOOL_S3_SECRET_KEY"]}, cwd=tmp_path)
    assert missing.code == 10 and "no-such-bucket-here" in missing.stderr, missing.stderr[-2000:]
