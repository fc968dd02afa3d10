"""verify --snapshot: file references checked at the object versions a real `drtool snapshot create` pinned."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from tests.export.helpers import Bucket, RunCli, apply_env, drtool_env
from tests.foundation.cli_runner import run_json
from tests.verify.conftest import summary


def test_pinned_versions_outlive_a_deleted_object_until_the_version_is_gone(
        pg: Any, dify_db_factory: Callable[..., Any], minio_pair: Any, monkeypatch: Any, run_cli: RunCli,
        capsys: Any) -> None:
    db = dify_db_factory()
    client = minio_pair.a.s3_client()
    source, dest = (f"verify-{uuid.uuid4().hex[:10]}" for _ in range(2))
    for name in (source, dest):
        client.create_bucket(Bucket=name)
        client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    for key, data in db.seed.files.items():
        client.put_object(Bucket=source, Key=key, Body=data)
    bucket = Bucket(client, source, minio_pair.a.endpoint, minio_pair.a.access_key, minio_pair.a.secret_key)
    apply_env(monkeypatch, drtool_env(pg, db.dbname, bucket, DRTOOL_SNAPSHOT_BUCKET=dest,
                                      DRTOOL_SNAPSHOT_PG_BIN_DIR=str(pg.bin_dir)))
    code, events = run_cli("snapshot", "create")
    assert code == 0, events

    key = next(k for k in db.seed.files if k.startswith("upload_files/"))
    pinned_version = client.head_object(Bucket=source, Key=key)["VersionId"]
    client.delete_object(Bucket=source, Key=key)  # a delete marker: the current object is gone

    code, events, records = run_json(capsys, "-v", "verify", "--skip-vectors")
    assert code == 4 and summary(events)["counts"] == {"missing_object": 1}
    said = " ".join(str(r.get("message", r)) for r in records)
    assert "vectors not checked" in said and "None vectors" not in said

    code, events = run_cli("verify", "--skip-vectors", "--snapshot", "latest")
    assert code == 0, events
    files = summary(events)["files"]
    assert files["checked"] == len(db.seed.files) and files["missing"] == 0 and files["snapshot"]

    client.delete_object(Bucket=source, Key=key, VersionId=pinned_version)  # the pinned bytes are lost for good
    code, events = run_cli("verify", "--skip-vectors", "--snapshot", "latest")
    assert code == 4
    example = summary(events)["examples"]["missing_object"][0]
    assert example["key"] == key and example["version_id"] == pinned_version
    assert example["problem"] == f"pinned version {pinned_version} is gone"

    assert run_cli("verify", "--skip-vectors", "--snapshot", "20200101T000000Z-abcdef")[0] == 10
