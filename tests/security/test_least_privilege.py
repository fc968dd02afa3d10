"""Least privilege against a real MinIO: each command runs with a user holding exactly the policy docs/iam.md gives
for it (parsed from the document, so the document cannot drift), and then once per (statement, action) with that
one action removed: every removal must make drtool exit 12 naming the missing permission. An action whose removal
does not break the command is not needed, and the test says so. By default a seeded sample of SAMPLE removals per
command runs (DRTOOL_TEST_SEED picks it); DRTOOL_TEST_IAM_ALL=1 runs every removal."""

from __future__ import annotations

import copy
import json
import os
import random
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from drtool.core.iam import parse_policy_blocks, render
from tests.rebuild.conftest import make_chunks
from tests.security.conftest import REPO, ProcessRun, add_minio_user, new_bucket, run_module
from tests.snapshot.conftest import fill_source
from tests.stack.dify_db import DifyDatabase
from tests.stack.minio_sites import MinioSites
from tests.stack.pg_server import PostgresServer

pytestmark = pytest.mark.own_servers("minio_pair")  # replication status's verdict covers every bucket of the pair

IAM_DOC = REPO / "docs" / "iam.md"
SAMPLE = 3  # removals per command by default


def doc_policies() -> dict[str, str]:
    """Policy templates of docs/iam.md by name (placeholders still in); every block is valid JSON."""
    return parse_policy_blocks(IAM_DOC.read_text())


def without(policy: dict[str, Any], index: int, action: str) -> dict[str, Any]:
    reduced = copy.deepcopy(policy)
    statement = reduced["Statement"][index]
    statement["Action"] = [a for a in statement["Action"] if a != action]
    if not statement["Action"]:
        del reduced["Statement"][index]
    return reduced


def removals(policy: dict[str, Any]) -> list[tuple[int, str]]:
    return [(i, action) for i, st in enumerate(policy["Statement"]) for action in st["Action"]]


def check_policy(sites: MinioSites, name: str, attempt: Callable[[dict[str, Any], str, str], ProcessRun],
                 works: frozenset[int] = frozenset({0}), parallel: int = 3) -> None:
    """`attempt(with_policy)` runs the command in a fresh scenario (its own buckets and user) and returns the run;
    scenarios that share nothing run `parallel` at a time."""
    from concurrent.futures import ThreadPoolExecutor

    template = doc_policies()[name]
    first = attempt_with(sites, template, attempt, None)
    assert first.code in works, f"{name}: the documented policy is not enough (exit {first.code}):\n{first.stderr}"
    problems: list[str] = []
    policy_probe = json.loads(template)
    cases = removals(policy_probe)
    if os.environ.get("DRTOOL_TEST_IAM_ALL") != "1" and len(cases) > SAMPLE:
        # A seeded sample keeps the suite fast; DRTOOL_TEST_IAM_ALL=1 removes every action in turn.
        seed = int(os.environ.get("DRTOOL_TEST_SEED", "7"))
        cases = sorted(random.Random(f"{seed}:{name}").sample(cases, SAMPLE))
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        runs = list(pool.map(lambda case: attempt_with(sites, template, attempt, case), cases))
    for (index, action), run in zip(cases, runs, strict=True):
        print(f"{name} without {action}: exit {run.code}: {run.stderr.strip().splitlines()[-1:]}")
        sid = policy_probe["Statement"][index].get("Sid", index)
        if run.code in works:
            problems.append(f"{name}: {action} in statement {sid} is not needed (still exit {run.code})")
        elif run.code != 12:
            problems.append(f"{name} without {action} ({sid}): exit {run.code}, not 12:\n{run.stderr[-800:]}")
        elif action not in run.stderr + run.stdout:  # rebuild-index reports per dataset on stdout
            problems.append(f"{name} without {action} ({sid}): the message does not name it:\n{run.stderr[-800:]}")
    assert not problems, "\n\n".join(problems)


def attempt_with(sites: MinioSites, template: str, attempt: Callable[..., ProcessRun],
                 removal: tuple[int, str] | None) -> ProcessRun:
    def with_policy(**buckets: str) -> tuple[str, str]:
        policy = render(template, **buckets)
        if removal is not None:
            policy = without(policy, *removal)
        return add_minio_user(sites, policy)

    return attempt(with_policy)


def _base_env(sites: MinioSites, pg: PostgresServer, db: DifyDatabase | None) -> dict[str, str]:
    env = {"DRTOOL_S3_ENDPOINT": sites.a.endpoint, "DRTOOL_S3_ADDRESS_STYLE": "path", "DRTOOL_S3_MAX_ATTEMPTS": "2"}
    if db is not None:
        env.update({"DRTOOL_SNAPSHOT_PG_BIN_DIR": str(pg.bin_dir), "DRTOOL_POSTGRES_HOST": pg.host,
                    "DRTOOL_POSTGRES_PORT": str(pg.port), "DRTOOL_POSTGRES_USER": pg.user,
                    "DRTOOL_POSTGRES_PASSWORD": pg.password, "DRTOOL_POSTGRES_DATABASE": db.dbname,
                    "DRTOOL_POSTGRES_SSLMODE": "disable"})
    return env


def _creds(access: str, secret: str) -> dict[str, str]:
    return {"DRTOOL_S3_ACCESS_KEY": access, "DRTOOL_S3_SECRET_KEY": secret}


# The tests below run on a pair of this module's own (own_minio_pair): replication status's verdict covers every
# bucket of the pair, and buckets other modules made around a site restart (one missing on a site for a while)
# would decide it, not the policy.


def test_documented_policies_are_complete() -> None:
    assert {"snapshot-create", "snapshot-create-object-lock", "restore", "replication-status", "rebuild-index",
            "export-chunks", "snapshots-verify"} <= set(doc_policies())


def test_snapshot_create(own_minio_pair: MinioSites, pg: PostgresServer, dify_db: DifyDatabase,
                         tmp_path: Path) -> None:
    client = own_minio_pair.a.s3_client()
    source = new_bucket(client, "iamsrc")
    fill_source(client, source, dify_db)
    env = _base_env(own_minio_pair, pg, dify_db)

    def attempt(with_policy: Callable[..., tuple[str, str]]) -> ProcessRun:
        dest = new_bucket(client, "iamdst")
        access, secret = with_policy(SOURCE_BUCKET=source, SNAPSHOT_BUCKET=dest)
        return run_module("snapshot", "create", env=dict(env, DRTOOL_S3_BUCKET=source, DRTOOL_SNAPSHOT_BUCKET=dest,
                                                     **_creds(access, secret)), cwd=tmp_path)

    check_policy(own_minio_pair, "snapshot-create", attempt)


def test_snapshot_create_object_lock(own_minio_pair: MinioSites, pg: PostgresServer, dify_db: DifyDatabase,
                                     tmp_path: Path) -> None:
    """`--retain-until` into a bucket created with Object Lock: the lock configuration is read, retention put."""
    client = own_minio_pair.a.s3_client()
    source = new_bucket(client, "iamsrc")
    fill_source(client, source, dify_db)
    env = _base_env(own_minio_pair, pg, dify_db)

    def attempt(with_policy: Callable[..., tuple[str, str]]) -> ProcessRun:
        dest = f"iamlock-{uuid.uuid4().hex[:10]}"
        client.create_bucket(Bucket=dest, ObjectLockEnabledForBucket=True)
        access, secret = with_policy(SOURCE_BUCKET=source, SNAPSHOT_BUCKET=dest)
        return run_module("snapshot", "create", "--retain-until", "1d",
                      env=dict(env, DRTOOL_S3_BUCKET=source, DRTOOL_SNAPSHOT_BUCKET=dest, **_creds(access, secret)),
                      cwd=tmp_path)

    check_policy(own_minio_pair, "snapshot-create-object-lock", attempt)


def _root_env(sites: MinioSites) -> dict[str, str]:
    return _creds(sites.a.access_key, sites.a.secret_key)


def _drop_locks(client: Any, bucket: str) -> None:
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            if obj["Key"].endswith(".lock") or "/locks/" in obj["Key"]:
                client.delete_object(Bucket=bucket, Key=obj["Key"])


def _snapshot_made(sites: MinioSites, pg: PostgresServer, dify_db: DifyDatabase,
                   tmp_path: Path) -> tuple[Any, str, str, dict[str, str]]:
    """A Dify source bucket and a snapshot of it taken with root credentials: (client, source, dest, env)."""
    client = sites.a.s3_client()
    source, dest = new_bucket(client, "iamsrc"), new_bucket(client, "iamdst")
    fill_source(client, source, dify_db)
    env = dict(_base_env(sites, pg, dify_db), DRTOOL_S3_BUCKET=source, DRTOOL_SNAPSHOT_BUCKET=dest)
    made = run_module("snapshot", "create", env=dict(env, **_root_env(sites)), cwd=tmp_path)
    assert made.code == 0, made.stderr
    return client, source, dest, env


def test_restore(own_minio_pair: MinioSites, pg: PostgresServer, dify_db: DifyDatabase, tmp_path: Path,
                 new_database: Callable[[], str]) -> None:
    client, source, dest, env = _snapshot_made(own_minio_pair, pg, dify_db, tmp_path)

    def attempt(with_policy: Callable[..., tuple[str, str]]) -> ProcessRun:
        target = new_bucket(client, "iamtgt")
        access, secret = with_policy(SOURCE_BUCKET=source, SNAPSHOT_BUCKET=dest, TARGET_BUCKET=target)
        user_env = dict(env, **_creds(access, secret))
        run = run_module("restore", "latest", "--target-db", new_database(), "--objects-to", target, env=user_env,
                     cwd=tmp_path)
        if run.code == 0:  # what a re-run and an audit do: HEAD what is already in the target
            run = run_module("restore", "latest", "--objects-to", target, "--verify-only", env=user_env, cwd=tmp_path)
        _drop_locks(client, dest)  # a run refused before it could release its lock leaves it behind
        return run

    check_policy(own_minio_pair, "restore", attempt, parallel=1)  # the runs share the snapshot bucket's lock


def test_restore_without_put_on_the_target_names_the_action(own_minio_pair: MinioSites, pg: PostgresServer,
                                                           dify_db: DifyDatabase, tmp_path: Path,
                                                           new_database: Callable[[], str]) -> None:
    """The one removal the sampled test may not draw, always: the copy loop's refusal (translated once, in
    drtool/adapters/s3/errors.py) says what was being restored and which action is missing, and copies nothing."""
    client, source, dest, env = _snapshot_made(own_minio_pair, pg, dify_db, tmp_path)
    target = new_bucket(client, "iamtgt")
    template = doc_policies()["restore"]
    index = next(i for i, st in enumerate(json.loads(template)["Statement"]) if st.get("Sid") == "WriteTargetObjects")
    policy = without(render(template, SOURCE_BUCKET=source, SNAPSHOT_BUCKET=dest, TARGET_BUCKET=target), index,
                     "s3:PutObject")
    access, secret = add_minio_user(own_minio_pair, policy)
    run = run_module("restore", "latest", "--target-db", new_database(), "--objects-to", target,
                     env=dict(env, **_creds(access, secret)), cwd=tmp_path)
    _drop_locks(client, dest)
    assert run.code == 12, run.stderr[-800:]
    assert "s3:PutObject" in run.stderr and f"restoring objects into {target}" in run.stderr, run.stderr[-800:]
    assert client.list_objects_v2(Bucket=target).get("KeyCount") == 0


def test_snapshots_verify(own_minio_pair: MinioSites, pg: PostgresServer, dify_db: DifyDatabase,
                          tmp_path: Path) -> None:
    _, _, dest, env = _snapshot_made(own_minio_pair, pg, dify_db, tmp_path)

    def attempt(with_policy: Callable[..., tuple[str, str]]) -> ProcessRun:
        access, secret = with_policy(SNAPSHOT_BUCKET=dest)
        return run_module("snapshots", "verify", "--latest", env=dict(env, **_creds(access, secret)), cwd=tmp_path)

    check_policy(own_minio_pair, "snapshots-verify", attempt)


def test_export_chunks(own_minio_pair: MinioSites, pg: PostgresServer, dify_db: DifyDatabase, tmp_path: Path) -> None:
    client = own_minio_pair.a.s3_client()
    env = _base_env(own_minio_pair, pg, dify_db)

    def attempt(with_policy: Callable[..., tuple[str, str]]) -> ProcessRun:
        bucket = new_bucket(client, "iamexp", versioned=False)
        access, secret = with_policy(SOURCE_BUCKET=bucket)
        user_env = dict(env, DRTOOL_S3_BUCKET=bucket, **_creds(access, secret))
        run = run_module("export-chunks", "--all", env=user_env, cwd=tmp_path)
        if run.code == 0:  # the nightly re-run: read the stored files, replace .jsonl by .jsonl.gz
            run = run_module("export-chunks", "--all", "--compression", "gzip", env=user_env, cwd=tmp_path)
        return run

    check_policy(own_minio_pair, "export-chunks", attempt)


def test_rebuild_index(own_minio_pair: MinioSites, embedding_server: Any, tmp_path: Path) -> None:
    client = own_minio_pair.a.s3_client()
    dataset = str(uuid.uuid4())
    body = b"".join(json.dumps(c).encode() + b"\n" for c in make_chunks(dataset, 12))
    env = dict(_base_env(own_minio_pair, None, None), DRTOOL_VECTOR_STORE="milvus", DRTOOL_EMBEDDING_PROVIDER="openai",
               DRTOOL_EMBEDDING_BASE_URL=embedding_server.base_url, DRTOOL_EMBEDDING_API_KEY=embedding_server.api_key,
               DRTOOL_EMBEDDING_MODEL=embedding_server.model_name,
               DRTOOL_EMBEDDING_DIMENSIONS=str(embedding_server.dimensions), DRTOOL_REBUILD_SAMPLE="5")

    def attempt(with_policy: Callable[..., tuple[str, str]]) -> ProcessRun:
        bucket = new_bucket(client, "iamreb", versioned=False)
        client.put_object(Bucket=bucket, Key=f"datasets/{dataset}/processed/chunks.jsonl", Body=body)
        access, secret = with_policy(SOURCE_BUCKET=bucket)
        milvus = tmp_path / f"{bucket}.db"
        return run_module("rebuild-index", "--dataset", dataset,
                      env=dict(env, DRTOOL_S3_BUCKET=bucket, DRTOOL_MILVUS_URI=str(milvus), **_creds(access, secret)),
                      cwd=tmp_path)

    check_policy(own_minio_pair, "rebuild-index", attempt)


def test_replication_status(own_minio_pair: MinioSites, tmp_path: Path) -> None:
    """Both sites are asked; the user and policy made on site A reach site B through site replication.

    A replicated bucket of its own: the per-bucket checks (lifecycle, backlog) only run when a bucket exists, so
    without one the test's verdict would depend on what earlier tests left behind.
    """
    import time
    import uuid

    bucket = f"lp-repl-{uuid.uuid4().hex[:8]}"
    own_minio_pair.a.s3_client().create_bucket(Bucket=bucket)
    # Old failed versions other modules' outages left on the shared pair would be CRITICAL: this test is about the
    # policy, so they may only warn (a year of max_failed_age).
    env = {"DRTOOL_REPLICATION_SITES": f"A={own_minio_pair.a.endpoint},B={own_minio_pair.b.endpoint}",
           "DRTOOL_S3_MAX_ATTEMPTS": "2", "DRTOOL_REPLICATION_MAX_FAILED_AGE": "31536000"}

    def attempt(with_policy: Callable[..., tuple[str, str]]) -> ProcessRun:
        access, secret = with_policy()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # wait until site B knows the user (IAM is replicated)
            info = own_minio_pair.mc("admin", "user", "info", "B", access, "--json", check=False)
            if info.returncode == 0 and '"policyName"' in info.stdout:
                break
            time.sleep(0.5)
        return run_module("replication", "status", env=dict(env, DRTOOL_REPLICATION_ACCESS_KEY=access,
                                                        DRTOOL_REPLICATION_SECRET_KEY=secret), cwd=tmp_path)

    try:
        check_policy(own_minio_pair, "replication-status", attempt, works=frozenset({0, 3}))
    finally:
        own_minio_pair.a.s3_client().delete_bucket(Bucket=bucket)
