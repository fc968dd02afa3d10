"""Corrupt chunk files end to end: `drtool rebuild-index --dry-run` reads them from a real MinIO bucket and
answers with an exit code from the table and a message naming the file and line, never a traceback."""

from __future__ import annotations

import gzip
import uuid
from pathlib import Path
from typing import Any

import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drtool.core.chunks import dumps_chunk
from tests.badinput.strategies import error_message, flip
from tests.foundation.cli_runner import run_script

DATASET = "5b1f4a34-6a0c-4c63-9a55-0d7c7c0e0001"
KEY = f"datasets/{DATASET}/processed/chunks.jsonl"


def _chunk_file(n: int) -> bytes:
    return b"".join(dumps_chunk({"id": f"n{i}", "text": f"chunk {i}", "dataset_id": DATASET,
                                 "document_id": "doc"}) for i in range(n))


def _rebuild_env(site: Any, bucket: str, tmp: Path) -> dict[str, str]:
    return {"DRTOOL_S3_ENDPOINT": site.endpoint, "DRTOOL_S3_BUCKET": bucket, "DRTOOL_S3_ACCESS_KEY": site.access_key,
            "DRTOOL_S3_SECRET_KEY": site.secret_key, "DRTOOL_S3_ADDRESS_STYLE": "path",
            "DRTOOL_VECTOR_STORE": "milvus", "DRTOOL_MILVUS_URI": str(tmp / "milvus.db"),
            "DRTOOL_EMBEDDING_PROVIDER": "openai", "DRTOOL_EMBEDDING_BASE_URL": "http://127.0.0.1:9/v1",
            "DRTOOL_EMBEDDING_MODEL": "m", "DRTOOL_EMBEDDING_DIMENSIONS": "8", "DRTOOL_REBUILD_MAX_REJECTS": "0"}


CASES: dict[str, tuple[str, bytes, int, str]] = {
    # name: (suffix, body, exit code, text the message must contain)
    "bad json": ("", _chunk_file(3) + b'{"id": "x", \n', 2, f"{KEY}:4: malformed JSON"),
    "missing field": ("", _chunk_file(2) + b'{"id": "x", "text": "t", "dataset_id": "' + DATASET.encode() + b'"}\n', 2,
                      f"{KEY}:3: missing required field 'document_id'"),
    "not utf-8": ("", _chunk_file(1) + b'{"id": "\xff"}\n', 2, f"{KEY}:2: invalid UTF-8"),
    "too deep": ("", b"[" * 200_000 + b"\n", 2, f"{KEY}:1: malformed JSON: nested too deeply"),
    "wrong dataset": ("", dumps_chunk({"id": "a", "text": "t", "dataset_id": "other", "document_id": "d"}), 2,
                      f"{KEY}:1: dataset_id 'other' does not match"),
    "truncated gzip": (".gz", gzip.compress(_chunk_file(50))[:-20], 2, f"{KEY}.gz:"),
    "truncated zstd": (".zst", zstandard.ZstdCompressor().compress(_chunk_file(50))[:-9], 2, f"{KEY}.zst:"),
    "gzip of garbage": (".gz", b"\x1f\x8b\x08\x00garbage", 2, f"{KEY}.gz:1: gzip stream is corrupt or truncated"),
}


def _dry_run_rebuild(env: dict[str, str]) -> Any:
    return run_script("rebuild-index", "--dataset", DATASET, "--dry-run", env=env)


def test_corrupt_chunk_files_exit_2_naming_file_and_line(minio_pair: Any, tmp_path: Path) -> None:
    site = minio_pair.a
    client = site.s3_client()
    bucket = f"bad-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    env = _rebuild_env(site, bucket, tmp_path)
    for name, (suffix, body, code, expected) in CASES.items():
        for old in ("", ".gz", ".zst"):
            client.delete_object(Bucket=bucket, Key=KEY + old)
        client.put_object(Bucket=bucket, Key=KEY + suffix, Body=body)
        run = _dry_run_rebuild(env)
        message = error_message(run.stderr) + "\n" + run.stdout
        assert run.code == code, (name, run.stderr)
        assert expected in message, (name, message)
        assert "Traceback" not in run.stderr and "unexpected error" not in message, (name, run.stderr)


@settings(max_examples=6, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(["", ".gz", ".zst"]), st.integers(min_value=0), st.integers(min_value=0, max_value=7),
       st.booleans())
def test_generated_damage_never_crashes_the_cli(minio_pair: Any, tmp_path_factory: Any, suffix: str, at: int,
                                                bit: int, truncate: bool) -> None:
    site = minio_pair.a
    client = site.s3_client()
    bucket = f"bad-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    plain = _chunk_file(40)
    body = {"": plain, ".gz": gzip.compress(plain), ".zst": zstandard.ZstdCompressor().compress(plain)}[suffix]
    body = body[: at % len(body)] if truncate else flip(body, at, bit)
    client.put_object(Bucket=bucket, Key=KEY + suffix, Body=body)
    run = _dry_run_rebuild(_rebuild_env(site, bucket, tmp_path_factory.mktemp("m")))
    message = error_message(run.stderr) + "\n" + run.stdout
    assert run.code in (0, 2), run.stderr  # 0: the damage left every line valid (e.g. a flipped letter)
    assert "Traceback" not in run.stderr and "unexpected error" not in message
    if run.code == 2:
        assert f"{KEY}{suffix}:" in message, message
