"""Shared by the export and verify tests: drtool's settings for a real Dify database and a real MinIO bucket, and
the CLI run in-process (exit code + JSON events) or as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from drtool.core.chunks import Chunk, Rejection, compression_for, iter_lines, parse_lines
from tests.foundation.cli_runner import RunCli, make_run_cli  # noqa: F401  (re-exported for tests/export)
from tests.helpers import buckets, cli
from tests.stack.process import interruptible

DRTOOL = str(Path(sys.executable).with_name("drtool"))


@dataclass
class Bucket:
    client: Any
    name: str
    endpoint: str
    access_key: str
    secret_key: str

    def keys(self, prefix: str = "") -> list[str]:
        out: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix):
            out.extend(o["Key"] for o in page.get("Contents", []))
        return out

    def get(self, key: str) -> bytes:
        return bytes(self.client.get_object(Bucket=self.name, Key=key)["Body"].read())

    def chunks(self, key: str) -> list[Chunk]:
        """The file parsed back by rebuild-index's own parser; any rejected line fails the test."""
        import io

        body = io.BytesIO(self.get(key))
        parsed = list(parse_lines(iter_lines(body, compression_for(key), key), key))
        rejected = [str(p) for p in parsed if isinstance(p, Rejection)]
        assert not rejected, rejected
        return [p for p in parsed if isinstance(p, Chunk)]


def new_bucket_on(site: Any) -> Bucket:
    """An unversioned bucket on `site` (tests.helpers.buckets names it), wrapped with the site's credentials."""
    client = site.s3_client()
    name = buckets.new_bucket(client, "export", versioned=False)
    return Bucket(client, name, site.endpoint, site.access_key, site.secret_key)


def drtool_env(pg: Any, dbname: str, bucket: Bucket, **extra: str) -> dict[str, str]:
    env = {
        "DRTOOL_S3_ENDPOINT": bucket.endpoint, "DRTOOL_S3_BUCKET": bucket.name,
        "DRTOOL_S3_ACCESS_KEY": bucket.access_key, "DRTOOL_S3_SECRET_KEY": bucket.secret_key,
        "DRTOOL_S3_ADDRESS_STYLE": "path",
        "DRTOOL_POSTGRES_HOST": pg.host, "DRTOOL_POSTGRES_PORT": str(pg.port), "DRTOOL_POSTGRES_USER": pg.user,
        "DRTOOL_POSTGRES_PASSWORD": pg.password, "DRTOOL_POSTGRES_DATABASE": dbname,
        "DRTOOL_POSTGRES_SSLMODE": "disable",
    }
    env.update(extra)
    return env


def apply_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for key in list(os.environ):
        if key.startswith("DRTOOL_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)




def spawn_json(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    """drtool as a real process (its own environment: only the given DRTOOL_* settings)."""
    return cli.spawn(["--json", *args], env, cwd=None, script=True, preexec_fn=interruptible)


def events_of(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e.get("event") == kind]
