"""Run locks across PID namespaces: two runs that share a host name but not a PID namespace (host
networking, Kubernetes hostNetwork, compose `hostname:`) must never take each other's lock by a pid check.

The holder is the real command, run by `unshare --pid --fork --mount-proc` in a PID namespace of its own, and made
to stop right after it has taken its lock (a wrapper around `drtool.ops.lock.destination_lock` that sleeps while
holding it). The same command then runs here, outside that namespace, against the same lock: exit 11 naming the
namespace, the lock object untouched, and only `--break-stale-lock` (or `snapshots unlock`) replaces it.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from drtool.core.chunks import dumps_chunk
from drtool.ops.lock import here
from tests.helpers.cli import ProcessRun, clean_env
from tests.rebuild.conftest import make_chunks
from tests.reliability.harness import REPO, complete_run
from tests.snapshot.conftest import fill_source, make_env, new_bucket

UNSHARE = shutil.which("unshare")
pytestmark = pytest.mark.skipif(UNSHARE is None or os.geteuid() != 0 or not Path("/proc/self/ns/pid").exists(),
                                reason="needs root, Linux PID namespaces and unshare(1)")

# Runs the real CLI; its lock, once taken by the real code, is announced on stdout and then held until killed.
HOLDER = r"""
import contextlib, json, sys, time
import drtool.ops.lock as lock

real = lock.destination_lock

@contextlib.contextmanager
def holding(client, bucket, key, **kwargs):
    with real(client, bucket, key, **kwargs) as mine:
        print(json.dumps({"holder_ready": True, "bucket": bucket, "key": key, "pid": mine.pid,
                          "pid_ns": mine.pid_ns}), flush=True)
        time.sleep(3600)
        yield mine

lock.destination_lock = holding
from drtool.cli.main import run
sys.exit(run(["--json", *sys.argv[1:]]))
"""


@dataclass
class Holder:
    proc: subprocess.Popen[str]
    bucket: str = ""
    key: str = ""
    pid: int = 0
    pid_ns: str = ""
    output: list[str] = field(default_factory=list)

    def stop(self) -> None:
        """SIGKILL the whole group this test started (unshare and the namespace's init, our holder)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)


def start_holder(args: list[str], env: dict[str, str], *, namespace: bool = True, timeout: float = 120) -> Holder:
    """The real `drtool ARGS` holding its lock, in a PID namespace of its own unless `namespace` is False."""
    prefix = [UNSHARE or "unshare", "--pid", "--fork", "--mount-proc", "--kill-child"] if namespace else []
    proc = subprocess.Popen([*prefix, sys.executable, "-c", HOLDER, *args], env=clean_env(env), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    holder = Holder(proc)
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not sel.select(timeout=1):
                continue
            line = proc.stdout.readline()
            if not line:
                break
            holder.output.append(line)
            if '"holder_ready"' in line:
                ready = json.loads(line)
                holder.bucket, holder.key, holder.pid, holder.pid_ns = (ready["bucket"], ready["key"], ready["pid"],
                                                                        ready["pid_ns"])
                return holder
    except BaseException:
        holder.stop()
        raise
    holder.stop()
    raise AssertionError("the holder never took its lock:\n" + "".join(holder.output)[-3000:])


@dataclass
class Case:
    env: dict[str, str]
    args: list[str]
    holder_env: dict[str, str] = field(default_factory=dict)  # what differs for the holder (its own Milvus file)
    breaks: bool = True  # the command has --break-stale-lock; else `snapshots unlock` is the way


@pytest.fixture
def case_for(minio_pair: Any, dify_db: Any, pg: Any, tmp_path: Path,
             request: pytest.FixtureRequest) -> Iterator[Callable[[str], Case]]:
    """Sets up one locking command against real MinIO/Postgres (and an embedding server and Milvus Lite)."""
    site = minio_pair.a
    client = site.s3_client()
    databases: list[str] = []

    def snapshot_env() -> dict[str, str]:
        source, dest = new_bucket(client), new_bucket(client)
        fill_source(client, source, dify_db)
        env = make_env(endpoint=site.endpoint, access_key=site.access_key, secret_key=site.secret_key,
                       source_bucket=source, dest_bucket=dest, db=dify_db, pg=pg)
        return {k: v for k, v in env.items() if k.startswith("DRTOOL_")}

    def plain_env(bucket: str) -> dict[str, str]:
        return {"DRTOOL_S3_ENDPOINT": site.endpoint, "DRTOOL_S3_BUCKET": bucket,
                "DRTOOL_S3_ACCESS_KEY": site.access_key, "DRTOOL_S3_SECRET_KEY": site.secret_key,
                "DRTOOL_S3_ADDRESS_STYLE": "path"}

    def make(command: str) -> Case:
        if command in ("snapshot create", "snapshots prune", "snapshots gc"):
            return Case(snapshot_env(), command.split(), breaks=command == "snapshot create")
        if command == "restore":
            env = snapshot_env()
            made = complete_run(["snapshot", "create"], env)
            assert made.code == 0, made.stderr
            databases.append(f"ns_{uuid.uuid4().hex[:10]}")
            return Case(env, ["restore", made.result()["snapshot"], "--target-db", databases[-1],
                              "--objects-to", new_bucket(client)])
        if command == "export-chunks":
            bucket = new_bucket(client, versioned=False)
            env = plain_env(bucket) | {
                "DRTOOL_POSTGRES_HOST": pg.host, "DRTOOL_POSTGRES_PORT": str(pg.port),
                "DRTOOL_POSTGRES_USER": pg.user, "DRTOOL_POSTGRES_PASSWORD": pg.password,
                "DRTOOL_POSTGRES_DATABASE": dify_db.dbname, "DRTOOL_POSTGRES_SSLMODE": "disable"}
            return Case(env, ["export-chunks", "--all"])
        assert command == "rebuild-index"
        embedding_server = request.getfixturevalue("embedding_server")
        bucket = new_bucket(client, versioned=False)
        ds = str(uuid.uuid4())
        client.put_object(Bucket=bucket, Key=f"datasets/{ds}/processed/chunks.jsonl",
                          Body=b"".join(dumps_chunk(c) for c in make_chunks(ds, 24)))
        env = plain_env(bucket) | {
            "DRTOOL_EMBEDDING_PROVIDER": "openai", "DRTOOL_EMBEDDING_BASE_URL": embedding_server.base_url,
            "DRTOOL_EMBEDDING_API_KEY": embedding_server.api_key,
            "DRTOOL_EMBEDDING_MODEL": embedding_server.model_name,
            "DRTOOL_EMBEDDING_DIMENSIONS": str(embedding_server.dimensions), "DRTOOL_EMBEDDING_BATCH_SIZE": "16",
            "DRTOOL_REBUILD_BATCH_SIZE": "16", "DRTOOL_REBUILD_SAMPLE": "5",
            "DRTOOL_VECTOR_STORE": "milvus", "DRTOOL_MILVUS_URI": str(tmp_path / "outside.db")}
        # A Milvus Lite file admits one process: the holder gets its own, the lock (per collection) is the same.
        return Case(env, ["rebuild-index", "--dataset", ds],
                    holder_env={"DRTOOL_MILVUS_URI": str(tmp_path / "holder.db")})

    yield make
    for name in databases:
        pg.drop_database(name)


def _told(run: ProcessRun) -> str:
    return run.stderr + run.stdout


def _lock_object(client: Any, holder: Holder) -> tuple[bytes, str]:
    got = client.get_object(Bucket=holder.bucket, Key=holder.key)
    return got["Body"].read(), str(got["ETag"])


COMMANDS = ["snapshot create", "snapshots prune", "snapshots gc", "restore", "rebuild-index", "export-chunks"]


@pytest.mark.parametrize("command", COMMANDS)
def test_a_running_holder_in_another_pid_namespace_is_never_taken_over(command: str, case_for: Callable[[str], Case],
                                                                       minio_pair: Any) -> None:
    case = case_for(command)
    client = minio_pair.a.s3_client()
    mine = here()
    holder = start_holder(case.args, case.env | case.holder_env)
    try:
        assert holder.pid_ns and holder.pid_ns != mine.pid_ns, "the holder did not run in a PID namespace of its own"
        before = _lock_object(client, holder)
        record = json.loads(before[0])
        assert (record["host"], record["boot_id"], record["pid_ns"]) == (mine.host, mine.boot_id, holder.pid_ns)

        run = complete_run(case.args, case.env)
        assert run.code == 11, _told(run)[-2000:]
        told = _told(run)
        assert "unverifiable" in told, told[-2000:]
        assert f"held from another PID namespace ({holder.pid_ns}) on host {mine.host}" in told, told[-2000:]
        assert "drtool cannot tell whether it still runs" in told and "--break-stale-lock" in told
        assert _lock_object(client, holder) == before, "the lock object changed"
        assert holder.proc.poll() is None, "the holder stopped"

        if case.breaks:  # the operator's explicit flag replaces it, loudly
            broken = complete_run([*case.args, "--break-stale-lock"], case.env)
            assert broken.code == 0, _told(broken)[-2000:]
            taken = [e for e in broken.events() if e.get("event") == "lock.taken_over"]
            assert len(taken) == 1 and taken[0]["automatic"] is False, broken.events()
            assert taken[0]["previous_holder"]["pid_ns"] == holder.pid_ns
            assert "PID namespace" in taken[0]["reason"]
        else:  # prune and gc have no such flag: `snapshots unlock` removes an unverifiable lock without --force
            unlocked = complete_run(["snapshots", "unlock"], case.env)
            assert unlocked.code == 0, _told(unlocked)[-2000:]
            assert "PID namespace" in unlocked.result()["stale"]
            after = complete_run(case.args, case.env)
            assert after.code == 0, _told(after)[-2000:]
    finally:
        holder.stop()


def test_a_dead_holder_of_another_namespace_is_not_dead_to_drtool(case_for: Callable[[str], Case],
                                                                 minio_pair: Any) -> None:
    """Even once that holder is gone, nothing here can prove it: the lock waits for the operator."""
    case = case_for("snapshot create")
    client = minio_pair.a.s3_client()
    holder = start_holder(case.args, case.env)
    holder.stop()  # kill -9, as the OOM killer would: its lock stays
    before = _lock_object(client, holder)
    run = complete_run(case.args, case.env)
    assert run.code == 11 and f"held from another PID namespace ({holder.pid_ns})" in _told(run), _told(run)[-2000:]
    assert _lock_object(client, holder) == before


def test_a_dead_holder_of_this_namespace_is_still_taken_over_by_itself(case_for: Callable[[str], Case],
                                                                      minio_pair: Any) -> None:
    """Same host, boot and PID namespace, pid gone: provably dead, so the next cron run just works."""
    case = case_for("snapshot create")
    holder = start_holder(case.args, case.env, namespace=False)
    assert holder.pid_ns == here().pid_ns
    holder.stop()
    run = complete_run(case.args, case.env)
    assert run.code == 0, _told(run)[-2000:]
    taken = [e for e in run.events() if e.get("event") == "lock.taken_over"]
    assert len(taken) == 1 and taken[0]["automatic"] is True and taken[0]["previous_holder"]["pid"] == holder.pid
    assert not minio_pair.a.s3_client().list_objects_v2(Bucket=holder.bucket, Prefix="drtool/locks/").get("KeyCount")


def test_a_lock_of_an_older_drtool_on_this_host_is_unverifiable(case_for: Callable[[str], Case],
                                                               minio_pair: Any) -> None:
    """A record without boot id and PID namespace (written before they were recorded) names a dead pid of this
    host: drtool no longer believes that pid, so it waits for the operator instead of taking the lock over."""
    case = case_for("snapshot create")
    client = minio_pair.a.s3_client()
    gone = subprocess.Popen(["true"])
    gone.wait()
    old = {"holder": "snapshot create", "host": here().host, "pid": gone.pid, "started_at": "2026-12-06T21:00:00+00:00",
           "token": "old"}
    key, bucket = "drtool/locks/snapshots.lock", case.env["DRTOOL_SNAPSHOT_BUCKET"]
    client.put_object(Bucket=bucket, Key=key, Body=json.dumps(old).encode())
    run = complete_run(case.args, case.env | {"DRTOOL_SNAPSHOT_LOCK_STALE_AFTER": str(10 * 365 * 86400)})
    assert run.code == 11 and "did not record its boot id and PID namespace" in _told(run), _told(run)[-2000:]
    assert json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read()) == old
    broken = complete_run([*case.args, "--break-stale-lock"], case.env)
    assert broken.code == 0, _told(broken)[-2000:]
