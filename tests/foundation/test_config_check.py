"""`drtool config check` against the real test servers: every verdict comes from a real answer."""

from __future__ import annotations

import socket
import uuid
from typing import Any

import boto3
import pytest

from tests.foundation.cli_runner import ProcessRun, run_script


@pytest.fixture()
def check_bucket(minio_pair: Any) -> str:
    site = minio_pair.a
    name = f"check-{uuid.uuid4().hex[:10]}"
    client = boto3.client("s3", endpoint_url=site.endpoint, aws_access_key_id=site.access_key,
                          aws_secret_access_key=site.secret_key, region_name="us-east-1")
    client.create_bucket(Bucket=name)
    return name


@pytest.fixture()
def all_systems(pg: Any, minio_pair: Any, check_bucket: str, weaviate_server: Any, redis_url: str,
                embedding_server: Any) -> dict[str, str]:
    site = minio_pair.a
    return {
        "DRTOOL_POSTGRES_HOST": pg.host, "DRTOOL_POSTGRES_PORT": str(pg.port), "DRTOOL_POSTGRES_USER": pg.user,
        "DRTOOL_POSTGRES_PASSWORD": pg.password, "DRTOOL_POSTGRES_DATABASE": "postgres",
        "DRTOOL_S3_ENDPOINT": site.endpoint, "DRTOOL_S3_BUCKET": check_bucket, "DRTOOL_S3_ADDRESS_STYLE": "path",
        "DRTOOL_S3_ACCESS_KEY": site.access_key, "DRTOOL_S3_SECRET_KEY": site.secret_key,
        "DRTOOL_VECTOR_STORE": "weaviate", "DRTOOL_WEAVIATE_ENDPOINT": weaviate_server.http_url,
        "DRTOOL_EMBEDDING_PROVIDER": "openai", "DRTOOL_EMBEDDING_BASE_URL": embedding_server.base_url,
        "DRTOOL_EMBEDDING_MODEL": embedding_server.model_name, "DRTOOL_EMBEDDING_API_KEY": embedding_server.api_key,
        "DRTOOL_REDIS_URL": redis_url,
    }


def result_systems(run: ProcessRun) -> dict[str, dict[str, Any]]:
    (event,) = run.json_lines()
    assert event["event"] == "result"
    return {s["system"]: s for s in event["systems"]}


def assert_no_secrets(run: ProcessRun, env: dict[str, str]) -> None:
    for key in ("DRTOOL_POSTGRES_PASSWORD", "DRTOOL_S3_SECRET_KEY", "DRTOOL_S3_ACCESS_KEY", "DRTOOL_EMBEDDING_API_KEY"):
        assert env[key] not in run.stdout + run.stderr, key


def test_every_configured_system_answers(all_systems: dict[str, str], weaviate_server: Any) -> None:
    run = run_script("config", "check", "--json", env=all_systems)
    assert run.code == 0, run.stdout + run.stderr
    found = result_systems(run)
    assert set(found) == {"postgres", "object store", "snapshot bucket", "weaviate", "embedding (openai)", "redis"}
    assert found["snapshot bucket"]["details"]["writable"] is True
    assert all(s["ok"] for s in found.values())
    assert found["postgres"]["details"]["version"].startswith(("15", "16", "17"))
    assert found["weaviate"]["details"]["version"] == weaviate_server.version
    assert found["embedding (openai)"]["details"]["dimension"] == 384
    assert found["object store"]["details"]["versioning"] in ("Enabled", "Suspended", "Unversioned")
    assert_no_secrets(run, all_systems)


def test_milvus_lite_is_checked(milvus_uri: str, local_model_path: Any) -> None:
    import subprocess
    import sys

    # An index file that exists (rebuild-index made it), made by a process that is gone: Lite locks its file.
    subprocess.run([sys.executable, "-c", f"from pymilvus import MilvusClient; MilvusClient({milvus_uri!r}).close()"],
                   check=True, timeout=120)
    env = {"DRTOOL_VECTOR_STORE": "milvus", "DRTOOL_MILVUS_URI": milvus_uri,
           "DRTOOL_EMBEDDING_MODEL": str(local_model_path)}
    run = run_script("config", "check", "--json", env=env)
    assert run.code == 0, run.stdout + run.stderr
    assert result_systems(run)["milvus"]["ok"]
    # The model rebuilds would use is checked too, although no embedding.* setting was given (the default).
    assert result_systems(run)["embedding (local)"]["details"]["dimension"] == 384


def test_a_missing_milvus_lite_file_is_reported_not_created(tmp_path: Any) -> None:
    path = tmp_path / "typo" / "milvsu.db"
    path.parent.mkdir()
    run = run_script("config", "check", "--json", env={"DRTOOL_VECTOR_STORE": "milvus", "DRTOOL_MILVUS_URI": str(path),
                                                    "DRTOOL_EMBEDDING_PROVIDER": "openai",
                                                    "DRTOOL_EMBEDDING_BASE_URL": "http://127.0.0.1:9/v1"})
    assert run.code == 10, run.stdout + run.stderr
    assert "does not exist" in result_systems(run)["milvus"]["problem"]
    assert not path.exists() and list(path.parent.iterdir()) == []


def test_wrong_postgres_password_exits_12_naming_the_system(all_systems: dict[str, str]) -> None:
    env = {**all_systems, "DRTOOL_POSTGRES_PASSWORD": "not-the-password-123"}
    run = run_script("config", "check", "--json", env=env)
    assert run.code == 12
    pg = result_systems(run)["postgres"]
    assert not pg["ok"] and "authentication failed" in pg["problem"]
    assert result_systems(run)["redis"]["ok"]  # one failure does not hide the others
    assert_no_secrets(run, env)


def test_wrong_s3_secret_exits_12(all_systems: dict[str, str]) -> None:
    env = {**all_systems, "DRTOOL_S3_SECRET_KEY": "wrong-secret-key-0000"}
    run = run_script("config", "check", "--json", env=env)
    assert run.code == 12
    assert "the secret key does not match the access key" in result_systems(run)["object store"]["problem"]
    assert_no_secrets(run, env)


def test_missing_bucket_exits_10(all_systems: dict[str, str]) -> None:
    run = run_script("config", "check", "--json", env={**all_systems, "DRTOOL_S3_BUCKET": "no-such-bucket-here"})
    assert run.code == 10
    assert "not found" in result_systems(run)["object store"]["problem"]


def test_wrong_embedding_key_exits_12(all_systems: dict[str, str]) -> None:
    env = {**all_systems, "DRTOOL_EMBEDDING_API_KEY": "sk-wrong-key-123456"}
    run = run_script("config", "check", "--json", env=env)
    assert run.code == 12
    assert "HTTP 401" in result_systems(run)["embedding (openai)"]["problem"]
    assert_no_secrets(run, env)


def test_unreachable_weaviate_exits_1_and_human_output_names_it(all_systems: dict[str, str]) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = run_script("config", "check", env={**all_systems, "DRTOOL_WEAVIATE_ENDPOINT": f"http://127.0.0.1:{port}"})
    assert run.code == 1
    line = next(line for line in run.stdout.splitlines() if line.startswith("weaviate"))
    assert "FAILED" in line and "cannot reach" in line


def test_extra_stores_are_checked_exist_readable_and_versioned(all_systems: dict[str, str], minio_pair: Any,
                                                               seaweed_pair: Any) -> None:
    """Plugin storage in another bucket of the pair (site replication versions it), archive storage on another
    endpoint (SeaweedFS) with credentials of its own: each is a row of its own."""
    site = minio_pair.a
    plugin = f"check-plugin-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=site.endpoint, aws_access_key_id=site.access_key,
                 aws_secret_access_key=site.secret_key, region_name="us-east-1").create_bucket(Bucket=plugin)
    other = seaweed_pair.a
    archive = f"check-archive-{uuid.uuid4().hex[:8]}"
    other.s3_client().create_bucket(Bucket=archive)
    env = {**all_systems, "DRTOOL_SNAPSHOT_PLUGIN_STORAGE_BUCKET": plugin,
           "DRTOOL_SNAPSHOT_ARCHIVE_STORAGE_BUCKET": archive,
           "DRTOOL_SNAPSHOT_ARCHIVE_STORAGE_ENDPOINT": other.endpoint}
    without_keys = run_script("config", "check", "--json", env=env)
    assert without_keys.code == 2, without_keys.stdout
    assert "no credentials of its own" in result_systems(without_keys)["extra store"]["problem"]

    env.update({"DRTOOL_SNAPSHOT_ARCHIVE_STORAGE_ACCESS_KEY": other.access_key,
                "DRTOOL_SNAPSHOT_ARCHIVE_STORAGE_SECRET_KEY": other.secret_key})
    run = run_script("config", "check", "--json", env=env)
    found = result_systems(run)
    assert found["plugin storage"]["ok"] and found["plugin storage"]["details"]["versioning"] == "Enabled"
    assert not found["archive storage"]["ok"] and "not versioned" in found["archive storage"]["problem"]
    assert run.code == 2, run.stdout
    assert other.secret_key not in run.stdout + run.stderr

    other.s3_client().put_bucket_versioning(Bucket=archive, VersioningConfiguration={"Status": "Enabled"})
    assert run_script("config", "check", "--json", env=env).code == 0
    missing = run_script("config", "check", "--json",
                         env={**env, "DRTOOL_SNAPSHOT_ARCHIVE_STORAGE_BUCKET": "no-such-b"})
    assert missing.code == 10 and "does not exist" in result_systems(missing)["archive storage"]["problem"]
