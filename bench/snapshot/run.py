"""Snapshot benchmark: manifest throughput, memory, and wall time against same-run baselines.

    .venv/bin/python -m bench.snapshot.run            # quick: 10,000 objects (a few minutes)
    .venv/bin/python -m bench.snapshot.run --large    # 100,000 objects
    .venv/bin/python -m bench.snapshot.run --objects 1000000

It starts its own Postgres 15 and a single MinIO (the test stack's binaries), fills a versioned bucket with N
objects (a third referenced by upload_files rows, the rest under datasets/*/processed/), then measures:

1. manifest throughput: drtool's streamed version listing + pinning + zstd manifest upload, as a ratio to a plain
   boto3 paginator over list_object_versions of the same bucket (the same API, nothing else done), same run;
2. peak RSS of a whole `drtool snapshot create` at N/10 and at N objects (flat means memory does not follow the
   bucket);
3. `drtool snapshot create` wall time against a plain `pg_dump --format=custom` of the same database to a file.

The machine is shared, so every pair is interleaved (pg_dump, snapshot, pg_dump, snapshot, ...; baseline listing,
drtool listing, ...) and medians are reported; CPU seconds (user + sys, including child processes such as pg_dump)
are recorded next to wall seconds.

Results go to bench/results/snapshot.json and bench/results/snapshot.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import psycopg
from botocore.config import Config

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.stack.build import binary_path  # noqa: E402
from tests.stack.pg_server import local_postgres  # noqa: E402
from tests.stack.ports import free_ports  # noqa: E402
from tests.stack.process import ManagedProcess  # noqa: E402
from tests.stack.versions import MINIO  # noqa: E402

RESULTS = REPO / "bench" / "results"


def start_minio(workdir: Path) -> tuple[ManagedProcess, str]:
    import urllib.request

    api, console = free_ports(2)
    endpoint = f"http://127.0.0.1:{api}"
    (workdir / "data").mkdir(parents=True)
    proc = ManagedProcess(
        name="bench minio", argv=[str(binary_path(MINIO)), "server", str(workdir / "data"), "--address",
                                  f"127.0.0.1:{api}", "--console-address", f"127.0.0.1:{console}", "--quiet"],
        log_path=workdir / "minio.log", cwd=workdir, stop_timeout=20.0,
        env={"PATH": "/usr/bin:/bin", "HOME": str(workdir), "MINIO_ROOT_USER": "bench",
             "MINIO_ROOT_PASSWORD": "bench-secret-123", "MINIO_BROWSER": "off", "MINIO_CI_CD": "1"})
    proc.start()

    def ready() -> bool:
        try:
            return urllib.request.urlopen(f"{endpoint}/minio/health/ready", timeout=2).status == 200
        except OSError:
            return False

    proc.wait_ready(ready, 60)
    return proc, endpoint


def client(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="bench",
                        aws_secret_access_key="bench-secret-123", region_name="us-east-1",
                        config=Config(s3={"addressing_style": "path"}, max_pool_connections=32))


def fill(c: Any, bucket: str, dsn: str, n: int, db_mb: int) -> None:
    """n objects (every third one referenced by an upload_files row) and about db_mb MiB of table data."""
    tenant = str(uuid.uuid4())
    keys = []
    for i in range(n):
        if i % 3 == 0:
            keys.append(f"upload_files/{tenant}/{uuid.UUID(int=i)}.txt")
        else:
            keys.append(f"datasets/{uuid.UUID(int=i % 50)}/processed/part-{i:08d}.jsonl")
    body = b"x" * 256
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda k: c.put_object(Bucket=bucket, Key=k, Body=body), keys))
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS upload_files (id uuid PRIMARY KEY, key varchar(255) NOT NULL)")
        conn.execute("CREATE TABLE IF NOT EXISTS tool_files (id uuid PRIMARY KEY, file_key varchar(255) NOT NULL)")
        with conn.cursor().copy("COPY upload_files (id, key) FROM STDIN") as copy:
            for k in keys:
                if k.startswith("upload_files/"):
                    copy.write_row((str(uuid.uuid4()), k))
        # Segment-like rows so that the dump has the weight of a real knowledge base (1 KiB of text per row,
        # compressible about as much as prose).
        conn.execute("CREATE TABLE IF NOT EXISTS document_segments_bulk (id int, content text)")
        conn.execute("INSERT INTO document_segments_bulk SELECT g, (SELECT string_agg(md5((g * 100 + h)::text), ' ')"
                     " FROM generate_series(1, 31) h) FROM generate_series(1, %s) g", (db_mb * 1024,))


def drtool_env(endpoint: str, bucket: str, dest: str, pg: Any, dbname: str) -> dict[str, str]:
    """The environment a benchmark's `drtool snapshot create` runs with: this process's, less DRTOOL_*/PG*, plus
    the bench MinIO (user bench) and Postgres."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DRTOOL_", "PG"))}
    env.update({"DRTOOL_S3_ENDPOINT": endpoint, "DRTOOL_S3_BUCKET": bucket,
                "DRTOOL_S3_ACCESS_KEY": "bench", "DRTOOL_S3_SECRET_KEY": "bench-secret-123",
                "DRTOOL_S3_ADDRESS_STYLE": "path", "DRTOOL_SNAPSHOT_BUCKET": dest,
                "DRTOOL_POSTGRES_HOST": pg.host, "DRTOOL_POSTGRES_PORT": str(pg.port),
                "DRTOOL_POSTGRES_USER": pg.user, "DRTOOL_POSTGRES_PASSWORD": pg.password,
                "DRTOOL_POSTGRES_DATABASE": dbname, "DRTOOL_POSTGRES_SSLMODE": "disable",
                "DRTOOL_SNAPSHOT_PG_BIN_DIR": str(pg.bin_dir)})
    return env


def new_bucket(c: Any) -> str:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    c.create_bucket(Bucket=name)
    c.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


def baseline_listing(c: Any, bucket: str) -> tuple[float, int, float]:
    """(wall s, entries, CPU s of this process) of a plain boto3 paginator over the bucket's versions."""
    t0, cpu = time.perf_counter(), time.process_time()
    count = 0
    for page in c.get_paginator("list_object_versions").paginate(Bucket=bucket, PaginationConfig={"PageSize": 1000}):
        count += len(page.get("Versions", ())) + len(page.get("DeleteMarkers", ()))
    return time.perf_counter() - t0, count, time.process_time() - cpu


def drtool_manifest(endpoint: str, bucket: str, dest: str, dsn_parts: dict[str, Any]) -> tuple[float, int, float]:
    """drtool's own listing -> pinning -> manifest upload, in-process (the part of a snapshot that scales with
    the bucket)."""
    from drtool.adapters import s3 as s3a
    from drtool.config import load_settings
    from drtool.core import manifest as mf
    from drtool.core.keys import KeyPatterns, ReferenceIndex
    from drtool.ops.snapshot.pinning import write_manifest

    settings = load_settings(environ={}, flags={"s3.endpoint": endpoint, "s3.bucket": bucket, "s3.access_key": "bench",
                                                "s3.secret_key": "bench-secret-123", "s3.address_style": "path"})
    c = s3a.make_client(settings.s3)
    with psycopg.connect(**dsn_parts) as conn:
        keys = [k for (k,) in conn.execute("SELECT key FROM upload_files")]
    t0, cpu = time.perf_counter(), time.process_time()
    with ReferenceIndex() as index:
        index.add_many((k, "upload_files.key") for k in keys)
        sink = s3a.MultipartWriter(c, dest, f"bench/{uuid.uuid4().hex}/manifest.jsonl.zst")
        writer = mf.ManifestWriter(sink)
        listed = write_manifest(writer, index, KeyPatterns.parse(settings.snapshot.include_prefixes), c, bucket, "",
                                 datetime.now(UTC), "Enabled", None, "")
        writer.close()
        sink.close()
    return time.perf_counter() - t0, listed, time.process_time() - cpu


# Runs the real CLI, then reports the process's own peak RSS (VmHWM). The kernel's ru_maxrss of the child would
# also count short-lived helper processes, which is not the memory drtool itself needs.
_WRAPPER = (
    "import re, sys\n"
    "from drtool.cli.main import run\n"
    "code = run(sys.argv[1:])\n"
    "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)\n"
    "print('BENCH_VMHWM_KIB=' + hwm, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_snapshot(env: dict[str, str]) -> tuple[float, int, dict[str, Any], float]:
    """Wall time, peak RSS (KiB), summary and CPU seconds (with its pg_dump) of one `drtool snapshot create`."""
    t0, cpu = time.perf_counter(), _children_cpu()
    proc = subprocess.run([sys.executable, "-c", _WRAPPER, "snapshot", "create", "--json"], env=env,
                          capture_output=True, cwd=REPO, check=False)
    wall = time.perf_counter() - t0
    err = proc.stderr.decode()
    if proc.returncode not in (0, 3):
        raise RuntimeError(f"snapshot failed ({proc.returncode}): {err[-2000:]}")
    hwm = int(err.rsplit("BENCH_VMHWM_KIB=", 1)[1].split()[0])
    return wall, hwm, json.loads(proc.stdout.decode().strip().splitlines()[-1]), _children_cpu() - cpu


def plain_pg_dump(bin_dir: Path, env: dict[str, str], dbname: str, *, no_sync: bool = False
                  ) -> tuple[float, float]:
    """(wall s, CPU s) of a plain `pg_dump -Fc` to a file. By default pg_dump fsyncs the file before it exits;
    `no_sync` leaves that out (drtool streams pg_dump's stdout, which has nothing to fsync), a stricter baseline."""
    with tempfile.TemporaryDirectory() as tmp:
        t0, cpu = time.perf_counter(), _children_cpu()
        subprocess.run([str(bin_dir / "pg_dump"), "--format=custom", "--no-password", f"--file={tmp}/plain.dump",
                        *(["--no-sync"] if no_sync else []), dbname], env=env, check=True)
        return time.perf_counter() - t0, _children_cpu() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=10_000, help="objects in the large bucket (default 10000)")
    parser.add_argument("--large", action="store_true", help="100,000 objects")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of each timing (median reported)")
    parser.add_argument("--db-mb", type=int, default=200, help="MiB of table data in the database (default 200)")
    parser.add_argument("--render", action="store_true", help="only redraw snapshot.md from snapshot.json")
    args = parser.parse_args()
    if args.render:
        write_markdown(json.loads((RESULTS / "snapshot.json").read_text()))
        return
    n = 100_000 if args.large else args.objects
    small = max(n // 10, 100)
    results: dict[str, Any] = {"objects": n, "small_objects": small, "repeat": args.repeat, "db_mb": args.db_mb,
                               "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
                               "date": datetime.now(UTC).isoformat(timespec="seconds")}
    median = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="drtool-bench-") as tmp, local_postgres() as pg:
        minio, endpoint = start_minio(Path(tmp) / "minio")
        try:
            c = client(endpoint)
            dest = new_bucket(c)
            measured: dict[int, dict[str, Any]] = {}
            for size in (small, n):
                bucket = new_bucket(c)
                dbname = f"bench_{size}"
                pg.create_database(dbname)
                t0 = time.perf_counter()
                fill(c, bucket, pg.dsn(dbname), size, args.db_mb)
                print(f"filled {size} objects in {time.perf_counter() - t0:.1f}s", flush=True)
                env = drtool_env(endpoint, bucket, dest, pg, dbname)
                pg_env = {**env, "PGHOST": pg.host, "PGPORT": str(pg.port), "PGUSER": pg.user,
                          "PGPASSWORD": pg.password}
                row: dict[str, Any] = {}
                dumps, nosync, snaps = [], [], []
                for _ in range(args.repeat):  # interleaved: load from other users of the machine hits all alike
                    dumps.append(plain_pg_dump(pg.bin_dir, pg_env, dbname))
                    snaps.append(run_snapshot(env))
                    nosync.append(plain_pg_dump(pg.bin_dir, pg_env, dbname, no_sync=True))
                row["snapshot_wall_s"] = median([s[0] for s in snaps])
                row["snapshot_cpu_s"] = median([s[3] for s in snaps])
                row["snapshot_peak_rss_kib"] = max(s[1] for s in snaps)
                row["pinned"] = snaps[0][2]["counts"]["pinned"]
                row["dump_bytes"] = snaps[0][2]["bytes"]["dump"]
                row["pg_dump_wall_s"] = median([d[0] for d in dumps])
                row["pg_dump_cpu_s"] = median([d[1] for d in dumps])
                row["snapshot_vs_pg_dump_pairs"] = [round(s[0] / d[0], 3) for s, d in zip(snaps, dumps, strict=True)]
                row["pg_dump_no_sync_wall_s"] = median([d[0] for d in nosync])
                row["snapshot_vs_pg_dump_no_sync"] = round(row["snapshot_wall_s"] / row["pg_dump_no_sync_wall_s"], 3)
                parts = {"host": pg.host, "port": pg.port, "user": pg.user, "password": pg.password,
                         "dbname": dbname}
                base, ours = [], []
                for _ in range(args.repeat):  # interleaved, so drift affects both alike
                    base.append(baseline_listing(c, bucket))
                    ours.append(drtool_manifest(endpoint, bucket, dest, parts))
                row["baseline_listing_s"] = median([b[0] for b in base])
                row["baseline_listing_cpu_s"] = median([b[2] for b in base])
                row["drtool_manifest_s"] = median([o[0] for o in ours])
                row["drtool_manifest_cpu_s"] = median([o[2] for o in ours])
                row["listed"] = base[0][1]
                row["manifest_throughput_ratio"] = round(row["baseline_listing_s"] / row["drtool_manifest_s"], 3)
                row["manifest_cpu_ratio"] = round(row["baseline_listing_cpu_s"] / row["drtool_manifest_cpu_s"], 3)
                row["snapshot_vs_pg_dump"] = round(row["snapshot_wall_s"] / row["pg_dump_wall_s"], 3)
                row["snapshot_vs_pg_dump_cpu"] = round(row["snapshot_cpu_s"] / row["pg_dump_cpu_s"], 3)
                row["load_average"] = round(os.getloadavg()[0], 1)
                measured[size] = row
                print(json.dumps({size: row}), flush=True)
            results["by_size"] = measured
            results["rss_large_over_small"] = round(measured[n]["snapshot_peak_rss_kib"]
                                                    / measured[small]["snapshot_peak_rss_kib"], 3)
        finally:
            minio.stop()
    RESULTS.mkdir(parents=True, exist_ok=True)
    results["command"] = "python -m bench.snapshot.run" + (
        " --large" if args.large else f" --objects {n}" if n != 10_000 else "")
    (RESULTS / "snapshot.json").write_text(json.dumps(results, indent=1) + "\n")
    write_markdown(results)


def write_markdown(results: dict[str, Any]) -> None:
    """bench/results/snapshot.md from the JSON (also: `--render` redraws it without measuring)."""
    n, small = results["objects"], results["small_objects"]
    by = {int(k): v for k, v in results["by_size"].items()}
    big, sm = by[n], by[small]
    md = [
        "# Snapshot benchmark", "",
        f"`{results.get('command', 'python -m bench.snapshot.run')}` on {results['machine']}, {results['date']}; "
        f"medians of {results['repeat']} runs; database of about {results.get('db_mb', '?')} MiB of table data. "
        "Every figure is a ratio to a baseline measured in the same run (the machine is shared, so absolute times "
        "vary from run to run).", "",
        "| measure | value | target |", "|---|---|---|",
    ]
    for size in (small, n):
        row = by[size]
        md.append(f"| manifest throughput vs plain boto3 `list_object_versions` paginator, {size:,} objects | "
                  f"{row['manifest_throughput_ratio']:.2f}x ({row['listed'] / row['drtool_manifest_s']:,.0f} vs "
                  f"{row['listed'] / row['baseline_listing_s']:,.0f} objects/s; CPU "
                  f"{row.get('drtool_manifest_cpu_s', float('nan')):.2f} s vs "
                  f"{row.get('baseline_listing_cpu_s', float('nan')):.2f} s) | >= 0.9 |")
    md.append(f"| peak RSS (VmHWM) of the `snapshot create` process, {n:,} vs {small:,} objects | "
              f"{results['rss_large_over_small']:.2f}x ({big['snapshot_peak_rss_kib'] / 1024:.0f} MiB vs "
              f"{sm['snapshot_peak_rss_kib'] / 1024:.0f} MiB) | flat |")
    for size in (small, n):
        row = by[size]
        md.append(f"| `snapshot create` wall time vs plain `pg_dump -Fc` to a file, {size:,} objects, "
                  f"{row['dump_bytes'] / 2**20:.1f} MiB dump | {row['snapshot_vs_pg_dump']:.2f}x "
                  f"({row['snapshot_wall_s']:.2f} s vs {row['pg_dump_wall_s']:.2f} s; CPU incl. pg_dump "
                  f"{row.get('snapshot_cpu_s', float('nan')):.2f} s vs {row.get('pg_dump_cpu_s', float('nan')):.2f} s; "
                  f"boto3 listing alone {row['baseline_listing_s']:.2f} s) | <= 1.1 |")
        if "snapshot_vs_pg_dump_no_sync" in row:
            md.append(f"| `snapshot create` wall time vs `pg_dump -Fc --no-sync` to a file (stricter: no fsync), "
                      f"{size:,} objects | {row['snapshot_vs_pg_dump_no_sync']:.2f}x ({row['snapshot_wall_s']:.2f} s "
                      f"vs {row['pg_dump_no_sync_wall_s']:.2f} s) | <= 1.1 |")
    md += ["", "Method: on a shared machine, so every measurement is interleaved with its baseline (pg_dump to a file, "
           "`snapshot create`, pg_dump --no-sync; boto3 listing, drtool listing; repeated) and medians are reported. "
           "CPU seconds are user + sys of the process and its children (pg_dump included). The dump and the version "
           "listing run concurrently; drtool fetches ListObjectVersions pages as presigned GETs parsed with "
           "ElementTree in a prefetch thread (botocore's response parser cost more CPU than everything else the "
           "listing does), and the dump's multipart upload runs on its own thread so that pg_dump never waits on a "
           "full pipe while a part uploads. pg_dump to a file fsyncs it by default; the --no-sync row is the "
           "stricter comparison. The peak RSS is that of the drtool process itself (its own VmHWM); pg_dump runs "
           "as a separate process.", ""]
    (RESULTS / "snapshot.md").write_text("\n".join(md))
    print("\n".join(md))

if __name__ == "__main__":
    main()
