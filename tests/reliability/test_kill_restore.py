"""kill -9 at seeded random moments during `drtool restore`; after each, the same command run again ends with
exactly the snapshot's rows and objects in the targets (no gaps, no extra objects), and the sources (database,
bucket, snapshot) are unchanged."""

from __future__ import annotations

import hashlib
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from tests.reliability.conftest import InProcess, bucket_fingerprint, db_fingerprint, snapshot_source
from tests.reliability.harness import (
    Kill,
    KillPoint,
    Trials,
    _Reader,
    _spawn,
    delays_over,
    reap_group,
    record_extra,
    rng_for,
    run_and_kill,
    temp_problems,
    timed_run,
    trials,
)
from tests.snapshot.conftest import new_bucket

NOT_PINNED = "website_files/not-pinned.html"


def _current(client: Any, bucket: str) -> dict[str, str]:
    return {k: etag for k, _, etag in bucket_fingerprint(client, bucket, versions=False)}


def _wait_for_child(proc: Any, name: str, arg: str, timeout: float = 120) -> int | None:
    """pid of `proc`'s child called `name` with `arg` in its argv, as soon as it runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                fields = (d / "stat").read_text().rsplit(") ", 1)[1].split()
                if int(fields[1]) == proc.pid and (d / "comm").read_text().strip() == name \
                        and arg.encode() in (d / "cmdline").read_bytes():
                    return int(d.name)
            except (OSError, IndexError, ValueError):
                continue
        time.sleep(0.01)
    return None


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _db_state(pg: Any, dbname: str) -> str:
    with psycopg.connect(pg.admin_dsn, autocommit=True) as conn:
        row = conn.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
                           (dbname,)).fetchone()
    if row is None:
        return "absent"
    return "marked incomplete" if "(incomplete)" in str(row[0]) else "restored" if row[0] else "created"


def test_restore_survives_kill_9(minio_pair: Any, dify_db: Any, pg: Any, cli: InProcess, tmp_path: Path) -> None:
    src = snapshot_source(minio_pair.a, dify_db, pg, tmp_path, bulk_groups=16)  # ~1 MiB: pg_restore takes a moment
    client, source, dest, files, env, tmp = src.client, src.source, src.dest, src.files, src.env, src.tmp
    made = cli(["snapshot", "create"], env)
    assert made.code == 0, made.stderr
    sid = made.result()["snapshot"]
    want_objects = {k: hashlib.md5(body).hexdigest() for k, body in files.items() if k != NOT_PINNED}
    want_rows = db_fingerprint(dify_db.dsn)
    source_before = bucket_fingerprint(client, source)
    snapshot_before = bucket_fingerprint(client, dest, skip=("drtool/locks/",))
    databases: list[str] = []

    def args(bucket: str, dbname: str) -> list[str]:
        return ["restore", sid, "--target-db", dbname, "--objects-to", bucket]

    try:
        bucket, dbname = new_bucket(client), f"rel_{uuid.uuid4().hex[:10]}"
        databases.append(dbname)
        calibration = timed_run(args(bucket, dbname), env)
        assert calibration.code == 0, calibration.stderr
        record_extra("calibration", command="restore", seconds=round(calibration.seconds, 3),
                     first_event_s=calibration.first_event_s)
        n = trials()
        delays = delays_over(rng_for("restore"), n, calibration)
        runner = Trials("restore")

        def one(i: int, point: KillPoint) -> tuple[Kill, list[str]]:
            bucket, dbname = new_bucket(client), f"rel_{uuid.uuid4().hex[:10]}"
            databases.append(dbname)
            kill = run_and_kill(args(bucket, dbname), env, point.delay_s, after_first_event=point.after_first_event)
            problems: list[str] = []
            if kill.killed:  # where it died, from what it left in the targets
                kill.last_event = f"objects {len(_current(client, bucket))}/{len(want_objects)}, database " \
                    + _db_state(pg, dbname)
            extra = set(_current(client, bucket)) - set(want_objects)
            if extra:
                problems.append(f"objects outside the snapshot appeared in the target: {sorted(extra)[:5]}")
            again = cli(args(bucket, dbname), env)  # the same command again, as the runbook says
            if again.code != 0:
                problems.append(f"re-run exit {again.code}: {again.stderr.strip()[-400:]}")
            else:
                got = _current(client, bucket)
                if got != want_objects:
                    missing = sorted(set(want_objects) - set(got))
                    wrong = sorted(k for k in set(got) & set(want_objects) if got[k] != want_objects[k])
                    problems.append(f"objects differ: missing {missing[:5]}, wrong content {wrong[:5]}, "
                                    f"extra {sorted(set(got) - set(want_objects))[:5]}")
                if db_fingerprint(pg.dsn(dbname)) != want_rows:
                    problems.append(f"database {dbname} does not hold exactly the snapshot's rows")
            if again.code == 0 and i % 4 == 0:  # and a third run changes nothing (every 4th trial)
                twice = cli(args(bucket, dbname), env)
                if twice.code != 0 or twice.result()["objects"].get("copied"):
                    problems.append(f"a third run changed something (exit {twice.code})")
            reap_group(kill.pgid)
            problems += temp_problems(tmp)
            return kill, problems

        runner.run(n, delays, one)
        record_extra("phases", command="restore", phases=runner.phases())

        # Two fixed points a random delay rarely hits. (1) Killed while pg_restore runs: pg_restore must die with
        # drtool (its transaction rolls back) and the re-run must finish the job.
        bucket, dbname = new_bucket(client), f"rel_{uuid.uuid4().hex[:10]}"
        databases.append(dbname)
        proc = _spawn(args(bucket, dbname), env)
        reader = _Reader(proc)
        child = _wait_for_child(proc, "pg_restore", "--single-transaction")  # not its `--version` check
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        reader.join()
        assert child is not None, "pg_restore never started"
        deadline = time.monotonic() + 10
        while _running(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _running(child), "pg_restore outlived the killed drtool"
        assert _db_state(pg, dbname) == "marked incomplete"
        again = cli(args(bucket, dbname), env)
        assert again.code == 0, again.stderr
        assert db_fingerprint(pg.dsn(dbname)) == want_rows and _current(client, bucket) == want_objects
        reap_group(proc.pid)
        # (2) Killed after pg_restore committed, before the completion comment: the database is whole but still
        # marked incomplete; the re-run takes it back without --yes.
        with psycopg.connect(pg.admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                sql.Identifier(dbname), sql.Literal(f"drtool: restoring snapshot {sid} (incomplete)")))
        again = cli(args(bucket, dbname), env)
        assert again.code == 0, again.stderr
        assert again.result()["database"]["action_done"] == "replace"
        assert db_fingerprint(pg.dsn(dbname)) == want_rows and _db_state(pg, dbname) == "restored"
        assert db_fingerprint(dify_db.dsn) == want_rows, "the source database changed"
        assert bucket_fingerprint(client, source) == source_before, "the source bucket changed"
        assert bucket_fingerprint(client, dest, skip=("drtool/locks/",)) == snapshot_before, "the snapshot changed"
        assert not client.list_objects_v2(Bucket=dest, Prefix="drtool/locks/").get("KeyCount"), "a lock is left"
        runner.assert_ok()
    finally:
        for name in databases:
            pg.drop_database(name)
