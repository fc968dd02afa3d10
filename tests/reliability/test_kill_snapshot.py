"""kill -9 at seeded random moments during `drtool snapshot create`; after each: nothing half-written is visible,
the next run (a new process on the same host) succeeds without operator help, and the sources are unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.reliability.conftest import InProcess, bucket_fingerprint, db_fingerprint, snapshot_source
from tests.reliability.harness import (
    Kill,
    KillPoint,
    Trials,
    delays_over,
    reap_group,
    record_extra,
    rng_for,
    run_and_kill,
    temp_problems,
    timed_run,
    trials,
)


def _snapshot_files(client: Any, bucket: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="drtool/snapshots/"):
        for o in page.get("Contents", ()):
            _, _, sid, name = o["Key"].split("/", 3)
            out.setdefault(sid, set()).add(name)
    return out


def test_snapshot_create_survives_kill_9(minio_pair: Any, dify_db: Any, pg: Any, cli: InProcess,
                                         tmp_path: Path) -> None:
    src = snapshot_source(minio_pair.a, dify_db, pg, tmp_path, bulk_groups=96)  # ~6 MiB: a 2-part dump
    client, source, dest, env, tmp = src.client, src.source, src.dest, src.env, src.tmp
    env["DRTOOL_SNAPSHOT_PART_SIZE_MB"] = "5"
    db_before, bucket_before = db_fingerprint(dify_db.dsn), bucket_fingerprint(client, source)

    calibration = timed_run(["snapshot", "create"], env)
    assert calibration.code == 0, calibration.stderr
    record_extra("calibration", command="snapshot create", seconds=round(calibration.seconds, 3),
                 first_event_s=calibration.first_event_s)
    n = trials()
    delays = delays_over(rng_for("snapshot create"), n, calibration)
    runner = Trials("snapshot create")

    def one(i: int, point: KillPoint) -> tuple[Kill, list[str]]:
        before = set(_snapshot_files(client, dest))
        kill = run_and_kill(["snapshot", "create"], env, point.delay_s, after_first_event=point.after_first_event)
        problems: list[str] = []
        folders = _snapshot_files(client, dest)
        if kill.killed:  # where it died, from what it left: its folder's artifacts and any open upload
            mine = [folders[f] for f in set(folders) - before]
            uploads = [u for u in client.list_multipart_uploads(Bucket=dest).get("Uploads", [])
                       if u["Key"].split("/")[2] not in before]  # earlier trials' stay until gc
            kill.last_event = ("folder: " + "+".join(sorted(mine[0])) if mine else "no folder yet") + \
                (", dump upload open" if uploads else "")
        committed = {sid for sid, names in folders.items() if "COMMITTED" in names}
        listed = cli(["snapshots", "list"], env)
        ids = {s["id"] for s in listed.result()["snapshots"]} if listed.code == 0 else set()
        if listed.code != 0 or ids != committed:
            problems.append(f"snapshots list shows {sorted(ids)} but committed folders are {sorted(committed)}")
        for sid in committed:  # a COMMITTED marker is only ever written after every artifact and the checksums
            if not {"meta.json", "SHA256SUMS"} <= folders[sid]:
                problems.append(f"{sid} is committed without all its artifacts: {sorted(folders[sid])}")
        nxt = cli(["snapshot", "create"], env)  # the next run: no --break-stale-lock, no unlock
        if nxt.code != 0:
            problems.append(f"next run exit {nxt.code}: {nxt.stderr.strip()[-400:]}")
        elif i % 4 == 0 or not kill.killed:  # the next run's snapshot verifies (every 4th trial: it reads the dump)
            sid = nxt.result()["snapshot"]
            verified = cli(["snapshots", "verify", sid], env)
            if verified.code != 0:
                problems.append(f"verify {sid} exit {verified.code}: {verified.stderr.strip()[-300:]}")
        if client.list_objects_v2(Bucket=dest, Prefix="drtool/locks/").get("KeyCount", 0):
            problems.append("a lock is left after the next run")
        reap_group(kill.pgid)
        problems += temp_problems(tmp)
        return kill, problems

    runner.run(n, delays, one)
    record_extra("phases", command="snapshot create", phases=runner.phases())
    gc = cli(["snapshots", "gc", "--grace", "0"], env)
    assert gc.code == 0, gc.stderr
    folders = _snapshot_files(client, dest)
    assert all("COMMITTED" in names for names in folders.values()), "gc left an uncommitted folder"
    assert db_fingerprint(dify_db.dsn) == db_before, "the source database changed"
    assert bucket_fingerprint(client, source) == bucket_before, "the source bucket changed"
    runner.assert_ok()
