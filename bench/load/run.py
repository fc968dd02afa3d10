"""Load benchmark: what a snapshot costs the application writing at the same time.

    .venv/bin/python -m bench.load.run                # quick (default): 10,000 objects, 100 MiB of rows, 3 rounds
    .venv/bin/python -m bench.load.run --large        # 100,000 objects, 200 MiB of rows
    .venv/bin/python -m bench.load.run --objects N --db-mb M --rounds R --window S --writers W

It starts its own Postgres 15 and a single MinIO (the test stack's binaries), creates a database with Dify's tables
(seeded knowledge base) and a versioned bucket holding N objects, then runs W Dify-like writers flat out
(tests/load/workload.py: upload = put object + insert upload_files row, overwrite in place, delete = delete row +
object; 2 KiB objects). Each round measures the writers' throughput for S seconds, then during one
`drtool snapshot create` (a separate process, as cron runs it), then for S seconds again. The figure is the
throughput during the snapshot as a ratio to the mean of the windows before and after it in the same round, so
drift and the shared machine affect both sides alike. Per-operation latency (p50, p95) is reported the same way.

Results go to bench/results/load.json and bench/results/load.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.snapshot.run import client, drtool_env, new_bucket, start_minio  # noqa: E402
from tests.load.workload import Writer, latencies, throughput  # noqa: E402
from tests.stack.dify_db import create_dify_database  # noqa: E402
from tests.stack.pg_server import local_postgres  # noqa: E402

RESULTS = REPO / "bench" / "results"


def fill(c: Any, bucket: str, dsn: str, tenant: str, datasets: tuple[str, ...], n: int, db_mb: int) -> list[str]:
    """n objects (a third referenced by upload_files rows, the rest processed chunk parts), about db_mb MiB of
    segment-like rows; returns the keys the writers overwrite in place."""
    import psycopg

    keys = [f"upload_files/{tenant}/{uuid.UUID(int=i)}.txt" if i % 3 == 0 else
            f"datasets/{datasets[i % len(datasets)]}/processed/part-{i:08d}.jsonl" for i in range(n)]
    overwrite = [f"privkeys/{tenant}/private.pem"] + [f"datasets/{d}/processed/chunks.jsonl" for d in datasets]
    body = b"x" * 256
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda k: c.put_object(Bucket=bucket, Key=k, Body=body), keys + overwrite))
    with psycopg.connect(dsn) as conn:
        creator = conn.execute("SELECT created_by FROM upload_files LIMIT 1").fetchone()[0]
        with conn.cursor().copy("COPY upload_files (id, tenant_id, storage_type, key, name, size, extension,"
                                " created_by) FROM STDIN") as copy:
            for k in keys:
                if k.startswith("upload_files/"):
                    copy.write_row((str(uuid.uuid4()), tenant, "s3", k, "f.txt", 256, "txt", creator))
        conn.execute("CREATE TABLE IF NOT EXISTS document_segments_bulk (id int, content text)")
        conn.execute("INSERT INTO document_segments_bulk SELECT g, (SELECT string_agg(md5((g * 100 + h)::text), ' ')"
                     " FROM generate_series(1, 31) h) FROM generate_series(1, %s) g", (db_mb * 1024,))
    return overwrite


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    return values[min(len(values) - 1, int(q * len(values)))]


def one_round(c: Any, bucket: str, dsn: str, tenant: str, overwrite: list[str], env: dict[str, str],
              writers: int, window: float, seed: int) -> dict[str, Any]:
    pool = [Writer(c, bucket, dsn, tenant, overwrite, rate=None, clocks=False, seed=seed * 100 + w).start()
            for w in range(writers)]
    try:
        time.sleep(2.0)  # warm-up: connections open, caches warm
        t0 = time.monotonic()
        time.sleep(window)
        t1 = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "drtool", "snapshot", "create", "--json"], env=env,
                              capture_output=True, text=True, cwd=REPO, check=False)
        t2 = time.monotonic()
        time.sleep(window)
        t3 = time.monotonic()
    finally:
        for w in pool:
            w.stop()
    errors = [e for w in pool for e in w.errors]
    if errors:
        raise RuntimeError(f"writer failed: {errors[0]!r}")
    if proc.returncode != 0:
        raise RuntimeError(f"snapshot failed ({proc.returncode}): {proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    ops = [o for w in pool for o in w.ops]
    before, during, after = throughput(ops, t0, t1), throughput(ops, t1, t2), throughput(ops, t2, t3)
    base_lat = latencies(ops, t0, t1) + latencies(ops, t2, t3)
    base_lat.sort()
    snap_lat = latencies(ops, t1, t2)
    kinds = {k: sum(1 for o in ops if o.kind == k and t1 <= o.done < t2) for k in ("upload", "overwrite", "delete")}
    return {
        "snapshot_s": round(t2 - t1, 2), "snapshot_exit": proc.returncode, "pinned": result["counts"]["pinned"],
        "dangling": result["counts"]["dangling"],
        "ops_per_s_before": round(before, 1), "ops_per_s_during": round(during, 1), "ops_per_s_after": round(after, 1),
        "throughput_ratio": round(during / ((before + after) / 2), 3),
        "p50_ms_baseline": round(pct(base_lat, 0.5) * 1000, 1), "p50_ms_during": round(pct(snap_lat, 0.5) * 1000, 1),
        "p95_ms_baseline": round(pct(base_lat, 0.95) * 1000, 1), "p95_ms_during": round(pct(snap_lat, 0.95) * 1000, 1),
        "ops_during": kinds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=10_000, help="objects in the bucket (default 10000)")
    parser.add_argument("--db-mb", type=int, default=100, help="MiB of table data (default 100)")
    parser.add_argument("--large", action="store_true", help="100,000 objects and 200 MiB of table data")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (median reported, default 3)")
    parser.add_argument("--window", type=float, default=10.0, help="seconds measured before and after (default 10)")
    parser.add_argument("--writers", type=int, default=2, help="concurrent writer threads (default 2)")
    parser.add_argument("--render", action="store_true", help="only redraw load.md from load.json")
    args = parser.parse_args()
    if args.render:
        write_markdown(json.loads((RESULTS / "load.json").read_text()))
        return
    n, db_mb = (100_000, 200) if args.large else (args.objects, args.db_mb)
    results: dict[str, Any] = {"objects": n, "db_mb": db_mb, "rounds": args.rounds, "window_s": args.window,
                               "writers": args.writers, "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
                               "date": datetime.now(UTC).isoformat(timespec="seconds")}
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="drtool-bench-load-") as tmp, local_postgres() as pg:
        minio, endpoint = start_minio(Path(tmp) / "minio")
        try:
            c = client(endpoint)
            bucket, dest = new_bucket(c), new_bucket(c)
            db = create_dify_database(pg, seed=True)
            assert db.tenant_id is not None
            t0 = time.perf_counter()
            assert db.seed is not None
            for key, data in db.seed.files.items():  # the seeded rows' objects: no dangling reference
                c.put_object(Bucket=bucket, Key=key, Body=data)
            overwrite = fill(c, bucket, db.dsn, str(db.tenant_id), db.dataset_ids, n, db_mb)
            print(f"filled {n} objects and {db_mb} MiB in {time.perf_counter() - t0:.1f}s", flush=True)
            env = drtool_env(endpoint, bucket, dest, pg, db.dbname)
            rounds = []
            for r in range(args.rounds):
                row = one_round(c, bucket, db.dsn, str(db.tenant_id), overwrite, env, args.writers, args.window, r)
                print(json.dumps(row), flush=True)
                rounds.append(row)
        finally:
            minio.stop()
    results["by_round"] = rounds
    results["loadavg"] = [round(load_start, 2), round(os.getloadavg()[0], 2)]
    for name in ("throughput_ratio", "ops_per_s_before", "ops_per_s_during", "ops_per_s_after", "snapshot_s",
                 "p50_ms_baseline", "p50_ms_during", "p95_ms_baseline", "p95_ms_during"):
        results[name] = statistics.median(r[name] for r in rounds)
    results["command"] = "python -m bench.load.run" + (" --large" if args.large else "") + "".join(
        f" --{k.replace('_', '-')} {v}" for k, v, d in (("objects", args.objects, 10_000), ("db_mb", args.db_mb, 100),
                                                        ("rounds", args.rounds, 3), ("window", args.window, 10.0),
                                                        ("writers", args.writers, 2))
        if v != d and not (args.large and k in ("objects", "db_mb")))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "load.json").write_text(json.dumps(results, indent=1) + "\n")
    write_markdown(results)


def write_markdown(results: dict[str, Any]) -> None:
    """bench/results/load.md from the JSON (also: `--render` redraws it without measuring)."""
    md = [
        "# Load benchmark: a snapshot under write load", "",
        f"`{results['command']}` on {results['machine']}, {results['date']}: {results['writers']} Dify-like writers "
        f"flat out (upload = put + insert row, overwrite in place, delete = delete row + object) against a "
        f"versioned MinIO bucket of {results['objects']:,} objects and a database with about {results['db_mb']} MiB "
        f"of rows; medians of {results['rounds']} rounds. Each round compares the writers' throughput during one "
        f"`drtool snapshot create` with the mean of {results['window_s']:.0f} s windows before and after it in the "
        "same round.", "",
        "| measure | value |", "|---|---|",
        f"| writer throughput during a snapshot vs without (median of the rounds' ratios) | "
        f"{results['throughput_ratio']:.2f}x (rounds: "
        + ", ".join(f"{r['throughput_ratio']:.2f}" for r in results["by_round"]) + ") |",
        f"| writer throughput without a snapshot (median) | {results['ops_per_s_before']:.0f} operations/s |",
        f"| writer p50 latency, during vs without | {results['p50_ms_during']:.1f} ms vs "
        f"{results['p50_ms_baseline']:.1f} ms |",
        f"| writer p95 latency, during vs without | {results['p95_ms_during']:.1f} ms vs "
        f"{results['p95_ms_baseline']:.1f} ms |",
        f"| snapshot wall time under load | {results['snapshot_s']:.1f} s |", "",
        "| round | snapshot s | ops/s before | during | after | ratio | p95 ms base / during | pinned |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(results["by_round"], 1):
        md.append(f"| {i} | {r['snapshot_s']:.1f} | {r['ops_per_s_before']:.0f} | {r['ops_per_s_during']:.0f} | "
                  f"{r['ops_per_s_after']:.0f} | {r['throughput_ratio']:.2f} | {r['p95_ms_baseline']:.0f} / "
                  f"{r['p95_ms_during']:.0f} | {r['pinned']:,} |")
    if "loadavg" in results:
        md += ["", f"Machine load average (1 min) at start and end: {results['loadavg'][0]:.1f} and "
               f"{results['loadavg'][1]:.1f} on {results['machine'].split(', ')[1]}: other work shared the machine, "
               "which is why rounds differ."]
    md += ["", "A snapshot holds no lock on the application's tables (a REPEATABLE READ transaction and pg_dump "
           "with an exported snapshot) and copies no object bytes in a versioned bucket; what the writers feel is "
           "competition for this 2-core machine's CPU and disks with pg_dump, the version listing and MinIO. "
           "Correctness under the same load is asserted by tests/load/test_snapshot_under_load.py.", ""]
    (RESULTS / "load.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
