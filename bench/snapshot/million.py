"""Snapshot at scale (issue 16): `snapshot create` against max(plain pg_dump, plain paginator listing), at 100k and
1M objects, the fill rate of a parallel uploader, and a live writer's PUT throughput during a snapshot.

    .venv/bin/python -m bench.snapshot.million                          # 100,000 and 1,000,000 objects
    .venv/bin/python -m bench.snapshot.million --sizes 100000 --repeat 3
    .venv/bin/python -m bench.snapshot.million --wait-for /tmp/go       # fill now, measure once /tmp/go exists

It starts its own Postgres 15 and MinIO (bench/snapshot/run.py's helpers), then for each size, smallest first:

1. fills a new versioned bucket with N objects of 256 bytes by a parallel uploader (`--uploaders` processes x
   `--threads` threads of PutObject; the fill rate is reported): a third under `upload_files/<tenant>/` (20
   tenants, each referenced by an upload_files row), the rest under `datasets/<id>/processed/` (50 datasets);
   and about `--db-mb` MiB of table data;
2. measures, interleaved and repeated (medians): a plain `pg_dump -Fc` to a file, a plain boto3 paginator over
   list_object_versions of the whole bucket, and a whole `drtool snapshot create` (the CLI in a subprocess; its
   own peak RSS, VmHWM). The target is snapshot <= 1.1x max(pg_dump, listing);
3. at the first size only: a live writer (a separate process, `--writer-threads` threads of 4 KiB PutObject into
   another bucket of the same MinIO) alone, during an uncapped snapshot and during one capped with
   snapshot.max_requests_per_second = `--cap`, same run; alone is measured before and after, and averaged.

Results go to bench/results/snapshot-scale.json and .md, rewritten after each size (a 1M run cut short keeps the
100k figures).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.snapshot.run import (  # noqa: E402
    baseline_listing,
    client,
    drtool_env,
    new_bucket,
    plain_pg_dump,
    run_snapshot,
    start_minio,
)
from tests.stack.pg_server import local_postgres  # noqa: E402

RESULTS = REPO / "bench" / "results"
TENANTS = 20
DATASETS = 50
BODY = b"x" * 256


def object_key(i: int) -> str:
    if i % 3 == 0:
        return f"upload_files/{uuid.UUID(int=i % TENANTS)}/{uuid.UUID(int=i)}.txt"
    return f"datasets/{uuid.UUID(int=i % DATASETS)}/processed/part-{i:08d}.jsonl"


def _upload_range(endpoint: str, bucket: str, start: int, stop: int, step: int, threads: int) -> int:
    """One uploader process: keys start, start+step, ... below stop, `threads` PutObject calls at a time."""
    c = client(endpoint)
    with ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(lambda i: c.put_object(Bucket=bucket, Key=object_key(i), Body=BODY),
                          range(start, stop, step)):
            pass
    return len(range(start, stop, step))


def _snowball_range(endpoint: str, bucket: str, start: int, stop: int, step: int, threads: int) -> int:
    """One uploader process, MinIO's bulk path: tars of 5,000 objects PUT with snowball auto-extract (MinIO
    stores each entry as its own object version), `threads` tars at a time."""
    import io
    import tarfile

    c = client(endpoint)
    indices = range(start, stop, step)

    def put_tar(first: int) -> None:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for i in indices[first:first + 5000]:
                info = tarfile.TarInfo(object_key(i))
                info.size = len(BODY)
                tar.addfile(info, io.BytesIO(BODY))
        c.put_object(Bucket=bucket, Key=f"bulk-{uuid.uuid4().hex}.tar", Body=buf.getvalue(),
                     Metadata={"snowball-auto-extract": "true"})

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(put_tar, range(0, len(indices), 5000)))
    return len(indices)


def fill_objects(endpoint: str, bucket: str, n: int, processes: int, threads: int, *, snowball: bool = False
                 ) -> float:
    """Fill `bucket` with n objects in parallel; returns objects/s."""
    t0 = time.perf_counter()
    target = _snowball_range if snowball else _upload_range
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        done = sum(pool.map(target, [endpoint] * processes, [bucket] * processes, range(processes),
                            [n] * processes, [processes] * processes, [threads] * processes))
    assert done == n
    return n / (time.perf_counter() - t0)


def fill_database(dsn: str, n: int, db_mb: int) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS upload_files (id uuid PRIMARY KEY, key varchar(255) NOT NULL)")
        conn.execute("CREATE TABLE IF NOT EXISTS tool_files (id uuid PRIMARY KEY, file_key varchar(255) NOT NULL)")
        with conn.cursor().copy("COPY upload_files (id, key) FROM STDIN") as copy:
            for i in range(0, n, 3):
                copy.write_row((str(uuid.uuid4()), object_key(i)))
        conn.execute("CREATE TABLE IF NOT EXISTS document_segments_bulk (id int, content text)")
        conn.execute("INSERT INTO document_segments_bulk SELECT g, (SELECT string_agg(md5((g * 100 + h)::text), ' ')"
                     " FROM generate_series(1, 31) h) FROM generate_series(1, %s) g", (db_mb * 1024,))


def _writer(endpoint: str, bucket: str, threads: int, stop_file: str, out: Any) -> None:
    """A live writer until stop_file exists: completion times (time.time()) of every PutObject, sent to `out`."""
    c = client(endpoint)
    body = os.urandom(4096)
    stamps: list[float] = []
    lock = threading.Lock()

    def loop(t: int) -> None:
        i = 0
        while not os.path.exists(stop_file):
            c.put_object(Bucket=bucket, Key=f"live/{t}/{i % 500}", Body=body)
            i += 1
            with lock:
                stamps.append(time.time())

    workers = [threading.Thread(target=loop, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    out.send(stamps)


class Writer:
    """A writer process, started and stopped around a measured window."""

    def __init__(self, endpoint: str, bucket: str, threads: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.stop_file = tempfile.mktemp(prefix="bench-writer-stop-")
        self.recv, send = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=_writer, args=(endpoint, bucket, threads, self.stop_file, send))
        self.proc.start()

    def stop(self) -> list[float]:
        Path(self.stop_file).touch()
        stamps: list[float] = self.recv.recv()
        self.proc.join()
        os.unlink(self.stop_file)
        return stamps


def writer_window(endpoint: str, bucket: str, threads: int, action: Any, warmup: float = 3.0
                  ) -> tuple[float, float, Any]:
    """(PUTs/s during `action()`, its seconds, its result) for a writer that runs before, during and after."""
    w = Writer(endpoint, bucket, threads)
    time.sleep(warmup)
    t0 = time.time()
    result = action()
    t1 = time.time()
    stamps = w.stop()
    inside = sum(1 for s in stamps if t0 <= s <= t1)
    return inside / (t1 - t0), t1 - t0, result


def median(xs: list[float]) -> float:
    return sorted(xs)[len(xs) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated object counts, smallest first")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of each timing (median reported)")
    parser.add_argument("--repeat-large", type=int, default=1, help="repetitions at sizes above 200,000")
    parser.add_argument("--db-mb", type=int, default=200, help="MiB of table data in the database (default 200)")
    parser.add_argument("--uploaders", type=int, default=4, help="uploader processes for the fill")
    parser.add_argument("--threads", type=int, default=16, help="PutObject threads per uploader process")
    parser.add_argument("--put-fill-max", type=int, default=200_000,
                        help="larger buckets are filled through MinIO's snowball bulk upload (tars of 5,000 "
                             "objects, auto-extracted into one version per object), smaller ones by PutObject")
    parser.add_argument("--cap", type=float, default=4.0, help="snapshot.max_requests_per_second for the capped run")
    parser.add_argument("--writer-threads", type=int, default=4, help="threads of the live writer")
    parser.add_argument("--writer-seconds", type=float, default=15.0, help="length of a writer-alone window")
    parser.add_argument("--wait-for", help="fill the first size, then wait until this file exists before measuring")
    parser.add_argument("--no-writer", action="store_true", help="skip the live-writer windows (three more snapshots)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the rows of other sizes already in bench/results/snapshot-scale.json (each row "
                             "names the command and date that measured it)")
    parser.add_argument("--render", action="store_true", help="only redraw the .md from the .json")
    args = parser.parse_args()
    if args.render:
        write_markdown(json.loads((RESULTS / "snapshot-scale.json").read_text()))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    results: dict[str, Any] = {
        "command": "python -m bench.snapshot.million " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "db_mb": args.db_mb, "uploaders": f"{args.uploaders} processes x {args.threads} threads", "cap": args.cap,
        "by_size": {}}
    previous = RESULTS / "snapshot-scale.json"
    if args.keep and previous.exists():
        old = json.loads(previous.read_text())
        for n, row in old.get("by_size", {}).items():
            if int(n) not in sizes:
                results["by_size"][n] = {"command": old["command"], "date": old["date"], **row}
    with tempfile.TemporaryDirectory(prefix="drtool-bench-scale-") as tmp, local_postgres() as pg:
        minio, endpoint = start_minio(Path(tmp) / "minio")
        try:
            c = client(endpoint)
            dest = new_bucket(c)
            live = new_bucket(c)
            filled: dict[int, tuple[str, float, str]] = {}
            for n in sizes:  # every bucket first: the fill is the long part and needs no drtool code
                bucket = new_bucket(c)
                pg.create_database(f"bench_{n}")
                method = "snowball" if n > args.put_fill_max else "put"
                rate = fill_objects(endpoint, bucket, n, args.uploaders,
                                    2 if method == "snowball" else args.threads, snowball=method == "snowball")
                print(f"filled {n} objects at {rate:.0f} objects/s ({method})", flush=True)
                fill_database(pg.dsn(f"bench_{n}"), n, args.db_mb)
                filled[n] = (bucket, rate, method)
            if args.wait_for:
                print(f"waiting for {args.wait_for}", flush=True)
                while not os.path.exists(args.wait_for):
                    time.sleep(2)
            for n_index, n in enumerate(sizes):
                bucket, rate, method = filled[n]
                dbname = f"bench_{n}"
                env = drtool_env(endpoint, bucket, dest, pg, dbname)
                pg_env = {**env, "PGHOST": pg.host, "PGPORT": str(pg.port), "PGUSER": pg.user,
                          "PGPASSWORD": pg.password}
                dumps, lists, snaps = [], [], []
                for _ in range(args.repeat if n <= 200_000 else args.repeat_large):
                    dumps.append(plain_pg_dump(pg.bin_dir, pg_env, dbname))
                    lists.append(baseline_listing(c, bucket))
                    snaps.append(run_snapshot(env))
                    print(f"{n}: pg_dump {dumps[-1][0]:.2f}s listing {lists[-1][0]:.2f}s "
                          f"snapshot {snaps[-1][0]:.2f}s", flush=True)
                row: dict[str, Any] = {
                    "fill_objects_per_s": round(rate, 1),
                    "fill_method": method,
                    "pg_dump_s": round(median([d[0] for d in dumps]), 3),
                    "listing_s": round(median([x[0] for x in lists]), 3),
                    "listed": lists[0][1],
                    "snapshot_s": round(median([s[0] for s in snaps]), 3),
                    "snapshot_runs_s": [round(s[0], 3) for s in snaps],
                    "pg_dump_runs_s": [round(d[0], 3) for d in dumps],
                    "listing_runs_s": [round(x[0], 3) for x in lists],
                    "snapshot_peak_rss_kib": max(s[1] for s in snaps),
                    "pinned": snaps[0][2]["counts"]["pinned"],
                    "dump_bytes": snaps[0][2]["bytes"]["dump"],
                    "snapshot_durations": snaps[0][2].get("durations"),
                }
                row["ratio_vs_max"] = round(row["snapshot_s"] / max(row["pg_dump_s"], row["listing_s"]), 3)
                row["load_average"] = round(os.getloadavg()[0], 1)
                row["command"], row["date"] = results["command"], results["date"]
                if n_index == 0 and not args.no_writer:
                    row["writer"] = measure_writer(endpoint, live, env, args)
                results["by_size"][str(n)] = row
                print(json.dumps({n: row}), flush=True)
                save(results)
        finally:
            minio.stop()
    save(results)


def measure_writer(endpoint: str, live: str, env: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    """PUT throughput alone (before and after), during an uncapped and during a capped snapshot, one run."""
    alone1, _, _ = writer_window(endpoint, live, args.writer_threads, lambda: time.sleep(args.writer_seconds))
    during, secs, snap = writer_window(endpoint, live, args.writer_threads, lambda: run_snapshot(env))
    capped_env = {**env, "DRTOOL_SNAPSHOT_MAX_REQUESTS_PER_SECOND": str(args.cap)}
    during_capped, secs_capped, snap_capped = writer_window(endpoint, live, args.writer_threads,
                                                            lambda: run_snapshot(capped_env))
    alone2, _, _ = writer_window(endpoint, live, args.writer_threads, lambda: time.sleep(args.writer_seconds))
    alone = (alone1 + alone2) / 2
    out = {"threads": args.writer_threads, "alone_puts_per_s": round(alone, 1),
           "alone_runs": [round(alone1, 1), round(alone2, 1)],
           "during_uncapped_puts_per_s": round(during, 1), "uncapped_snapshot_s": round(secs, 2),
           "during_capped_puts_per_s": round(during_capped, 1), "capped_snapshot_s": round(secs_capped, 2),
           "cap": args.cap,
           "uncapped_ratio": round(during / alone, 3), "capped_ratio": round(during_capped / alone, 3),
           "capped_listing_s": (snap_capped[2].get("durations") or {}).get("listing_s"),
           "uncapped_listing_s": (snap[2].get("durations") or {}).get("listing_s")}
    print(json.dumps({"writer": out}), flush=True)
    return out


def save(results: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "snapshot-scale.json").write_text(json.dumps(results, indent=1) + "\n")
    write_markdown(results)


def write_markdown(results: dict[str, Any]) -> None:
    md = ["# Snapshot at scale (issue 16)", "",
          f"`{results['command'].strip()}` on {results['machine']}, {results['date']}; database of about "
          f"{results['db_mb']} MiB of table data; a dedicated MinIO and Postgres 15 on the same shared machine. "
          "Every ratio compares measurements of the same run.", "",
          "| objects | fill rate (parallel uploader) | pg_dump | plain paginator listing | `snapshot create` | "
          "ratio to max(dump, listing) | peak RSS of snapshot | target |",
          "|---|---|---|---|---|---|---|---|"]
    for n, row in sorted(results["by_size"].items(), key=lambda kv: int(kv[0])):
        how = (f"PutObject, {results['uploaders']}" if row.get("fill_method", "put") == "put"
               else f"snowball tars of 5,000, {results['uploaders'].split(' x ')[0]} x 2 at a time")
        md.append(f"| {int(n):,} | {row['fill_objects_per_s']:,.0f} objects/s ({how}) | "
                  f"{row['pg_dump_s']:.2f} s | {row['listing_s']:.2f} s | {row['snapshot_s']:.2f} s "
                  f"(runs {', '.join(f'{x:.1f}' for x in row['snapshot_runs_s'])}) | **{row['ratio_vs_max']:.2f}x** | "
                  f"{row['snapshot_peak_rss_kib'] / 1024:.0f} MiB | <= 1.1x |")
    runs = {(row["command"], row["date"]) for row in results["by_size"].values() if "command" in row}
    if len(runs) > 1:
        md += ["", "Rows from separate runs (each ratio still compares measurements of one run): " + "; ".join(
            f"{int(n):,} objects: `{row['command']}`, {row['date']}, load {row.get('load_average', '?')}"
            for n, row in sorted(results["by_size"].items(), key=lambda kv: int(kv[0])) if "command" in row) + "."]
    for n, row in sorted(results["by_size"].items(), key=lambda kv: int(kv[0])):
        w = row.get("writer")
        if not w:
            continue
        md += ["", f"Live writer ({w['threads']} threads of 4 KiB PutObject into another bucket of the same MinIO), "
               f"{int(n):,}-object snapshot, same run:", "",
               "| writer | PUTs/s | vs alone | snapshot took | target |", "|---|---|---|---|---|",
               f"| alone (before and after: {', '.join(str(x) for x in w['alone_runs'])}) | "
               f"{w['alone_puts_per_s']:.0f} | 1.00x | | |",
               f"| during an uncapped `snapshot create` | {w['during_uncapped_puts_per_s']:.0f} | "
               f"{w['uncapped_ratio']:.2f}x | {w['uncapped_snapshot_s']:.1f} s | |",
               f"| during `snapshot create` with `--max-requests-per-second {w['cap']:g}` | "
               f"{w['during_capped_puts_per_s']:.0f} | **{w['capped_ratio']:.2f}x** | {w['capped_snapshot_s']:.1f} s "
               "| >= 0.8x |"]
    md += ["", "Method: timings are interleaved (pg_dump to a file, boto3 `list_object_versions` paginator over the "
           "whole bucket, `drtool snapshot create` as a CLI subprocess) and medians reported. The peak RSS is the "
           "drtool process's own VmHWM (pg_dump is a separate process). The fill rate is that of "
           "the parallel uploader into the versioned bucket, 256-byte objects: processes x threads of boto3 "
           "PutObject, or (`--put-fill-max`) processes each PUTting tars of 5,000 objects that MinIO's snowball "
           "auto-extract stores as one version per object. The writer's throughput during a snapshot counts the "
           "PUTs completed between the snapshot's start and end; alone is the mean of a window before and one "
           "after.", ""]
    md += [f"Note: {note}" for note in results.get("notes", [])] + ([""] if results.get("notes") else [])
    (RESULTS / "snapshot-scale.md").write_text("\n".join(md))


if __name__ == "__main__":
    main()
