"""export-chunks and verify benchmark: ratios to baselines measured in the same run.

    .venv/bin/python -m bench.export.run               # quick: 40,000 segments (about two minutes)
    .venv/bin/python -m bench.export.run --large       # 400,000 segments
    .venv/bin/python -m bench.export.run --segments 1000000

It starts its own Postgres 15 and a single MinIO (the test stack's binaries), seeds a Dify knowledge base with the
test stack's seeder (a text dataset and a parent-child dataset, so 2/3 of the rows go through child_chunks), and
measures:

1. `drtool export-chunks --all` wall time against the least work that moves the same rows into the bucket: a
   psycopg `COPY (the same join) TO STDOUT` into memory, then one PUT per dataset;
2. an incremental run with nothing changed, as a ratio to the first run;
3. peak RSS of `export-chunks` at N/10 and at N segments (flat means memory does not follow the dataset);
4. `drtool verify --deep --skip-files` against Milvus Lite holding every vector, as a ratio to a plain pymilvus
   `query_iterator` scan of the same collections plus a plain read of the chunk files (the I/O verify cannot avoid).

Results go to bench/results/export.json and bench/results/export.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.snapshot.run import client, start_minio  # noqa: E402
from tests.stack.dify_db import create_dify_database  # noqa: E402
from tests.stack.pg_server import local_postgres  # noqa: E402

RESULTS = REPO / "bench" / "results"
DRTOOL = str(Path(sys.executable).with_name("drtool"))

_COPY_SQL = """COPY (
  SELECT s.index_node_id, s.content, d.id, s.index_node_hash, s.position, s.answer, d.name
  FROM documents d JOIN document_segments s ON s.document_id = d.id
  WHERE d.dataset_id = '{ds}' AND d.indexing_status = 'completed' AND d.enabled AND NOT d.archived
    AND d.doc_form <> 'hierarchical_model' AND s.status = 'completed' AND s.enabled
  UNION ALL
  SELECT c.index_node_id, c.content, d.id, c.index_node_hash, c.position, s.id::text, d.name
  FROM documents d JOIN document_segments s ON s.document_id = d.id JOIN child_chunks c ON c.segment_id = s.id
  WHERE d.dataset_id = '{ds}' AND d.indexing_status = 'completed' AND d.enabled AND NOT d.archived
    AND d.doc_form = 'hierarchical_model' AND s.status = 'completed' AND s.enabled
  ORDER BY 3, 5) TO STDOUT"""

_MILVUS_FILL = r"""
import json, math, random, sys
from pymilvus import DataType, MilvusClient
uri, plan = sys.argv[1], json.load(open(sys.argv[2]))
c = MilvusClient(uri)
rng = random.Random(1)
for name, rows in plan.items():
    s = MilvusClient.create_schema(auto_id=True, enable_dynamic_field=False)
    s.add_field("id", DataType.INT64, is_primary=True)
    s.add_field("page_content", DataType.VARCHAR, max_length=65535)
    s.add_field("metadata", DataType.JSON)
    s.add_field("vector", DataType.FLOAT_VECTOR, dim=8)
    ip = c.prepare_index_params()
    ip.add_index(field_name="vector", index_type="HNSW", metric_type="IP", params={"M": 8, "efConstruction": 64})
    c.create_collection(name, schema=s, index_params=ip)
    for i in range(0, len(rows), 5000):
        data = []
        for doc_id, document_id, dataset_id in rows[i:i + 5000]:
            v = [rng.uniform(-1, 1) for _ in range(8)]
            n = math.sqrt(sum(x * x for x in v))
            data.append({"page_content": "x", "metadata": {"doc_id": doc_id, "document_id": document_id,
                         "dataset_id": dataset_id}, "vector": [x / n for x in v]})
        c.insert(name, data)
    c.flush(name)
"""

_MILVUS_SCAN = r"""
import logging, sys, time
from pymilvus import MilvusClient
logging.getLogger("pymilvus").setLevel(logging.ERROR)
c = MilvusClient(sys.argv[1])
t = time.perf_counter()
n = 0
for name in sys.argv[2:]:
    c.load_collection(name)
    it = c.query_iterator(name, batch_size=1000, filter="", output_fields=["id", "metadata"])
    while True:
        b = it.next()
        if not b:
            break
        n += len(b)
    it.close()
print(time.perf_counter() - t, n)
"""


def _watch_hwm(pid: int, peak: list[int], done: threading.Event) -> None:
    """Keep the child's VmHWM (peak RSS of its own address space) until it exits.

    Not wait4's ru_maxrss: on Linux a child's ru_maxrss starts from the high-water mark of the memory it was
    forked (or vforked) from, so it reports the benchmark's own RSS (hundreds of MiB after seeding) whatever
    drtool uses. VmHWM only grows: its last reading before the exit is the peak, give or take the last 5 ms.
    """
    path = f"/proc/{pid}/status"
    while not done.is_set():
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        peak[0] = max(peak[0], int(line.split()[1]))
                        break
        except OSError:
            return
        done.wait(0.005)


def run_drtool(args: list[str], env: dict[str, str]) -> tuple[float, int, int, float]:
    """(seconds, peak RSS in KiB, exit code, CPU seconds: user + system of all its threads) of one drtool process."""
    started = time.perf_counter()
    proc = subprocess.Popen([DRTOOL, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak, done = [0], threading.Event()
    watcher = threading.Thread(target=_watch_hwm, args=(proc.pid, peak, done), daemon=True)
    watcher.start()
    _pid, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    done.set()
    watcher.join()
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 4):
        raise SystemExit(f"drtool {' '.join(args)} failed ({code}): {proc.stderr.read().decode()[-2000:]}")
    proc.stderr.close()
    return seconds, peak[0], code, usage.ru_utime + usage.ru_stime


def baseline_export(dsn: str, dataset_ids: list[str], s3: Any, bucket: str) -> tuple[float, float]:
    """(seconds, CPU seconds of this process) of the least work that moves the same rows into the bucket."""
    started, cpu = time.perf_counter(), time.process_time()
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        for ds in dataset_ids:
            buf = io.BytesIO()
            with cur.copy(_COPY_SQL.format(ds=ds)) as copy:
                for data in copy:
                    buf.write(data)
            s3.put_object(Bucket=bucket, Key=f"baseline/{ds}.tsv", Body=buf.getvalue())
    return time.perf_counter() - started, time.process_time() - cpu


def seed(pg: Any, segments: int) -> Any:
    docs = 20
    return create_dify_database(pg, datasets=2, documents_per_dataset=docs,
                                segments_per_document=max(1, segments // (2 * docs)), seed=11,
                                dimensions=8)


def env_for(pg: Any, dbname: str, endpoint: str, bucket: str, milvus: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRTOOL_")}
    env.update({"DRTOOL_S3_ENDPOINT": endpoint, "DRTOOL_S3_BUCKET": bucket, "DRTOOL_S3_ACCESS_KEY": "bench",
                "DRTOOL_S3_SECRET_KEY": "bench-secret-123", "DRTOOL_S3_ADDRESS_STYLE": "path",
                "DRTOOL_POSTGRES_HOST": pg.host, "DRTOOL_POSTGRES_PORT": str(pg.port),
                "DRTOOL_POSTGRES_USER": pg.user, "DRTOOL_POSTGRES_PASSWORD": pg.password,
                "DRTOOL_POSTGRES_DATABASE": dbname, "DRTOOL_POSTGRES_SSLMODE": "disable",
                "DRTOOL_MILVUS_URI": milvus})
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--segments", type=int, default=40_000, help="segments in the knowledge base")
    parser.add_argument("--large", action="store_true", help="400,000 segments")
    parser.add_argument("--runs", type=int, default=3, help="repetitions of each timed step (median)")
    args = parser.parse_args()
    segments = 400_000 if args.large else args.segments

    with tempfile.TemporaryDirectory(prefix="drtool-bench-") as tmp, local_postgres() as pg:
        minio, endpoint = start_minio(Path(tmp) / "minio")
        try:
            s3 = client(endpoint)
            small_db, big_db = seed(pg, segments // 10), seed(pg, segments)
            chunks = 0
            with psycopg.connect(big_db.dsn) as conn:
                chunks = sum(len(d.index_nodes) for d in big_db.seed.datasets)
                rows = conn.execute("SELECT count(*) FROM document_segments").fetchone()[0]
                children = conn.execute("SELECT count(*) FROM child_chunks").fetchone()[0]

            load_before = os.getloadavg()[0]
            first, again, base, base_cpu, start = [], [], [], [], []
            for _ in range(args.runs):
                bucket = f"bench-{uuid.uuid4().hex[:8]}"
                s3.create_bucket(Bucket=bucket)
                env = env_for(pg, big_db.dbname, endpoint, bucket, str(Path(tmp) / "milvus.db"))
                seconds, cpu = baseline_export(big_db.dsn, list(big_db.dataset_ids), s3, bucket)
                base.append(seconds)
                base_cpu.append(cpu)
                first.append(run_drtool(["export-chunks", "--all"], env))
                again.append(run_drtool(["export-chunks", "--all"], env))
                # The process start alone: `--help` imports the same modules (boto3, psycopg) and exits.
                start.append(run_drtool(["export-chunks", "--help"], env)[0])
            bucket_small = f"bench-{uuid.uuid4().hex[:8]}"
            s3.create_bucket(Bucket=bucket_small)
            small = run_drtool(["export-chunks", "--all"],
                               env_for(pg, small_db.dbname, endpoint, bucket_small, str(Path(tmp) / "m2.db")))

            # Vectors for every indexed chunk of the big knowledge base, written by a separate process: a Milvus
            # Lite file can be open in one process at a time.
            plan = {d.collection_name: [] for d in big_db.seed.datasets}
            with psycopg.connect(big_db.dsn) as conn:
                owners = dict(conn.execute("SELECT index_node_id, document_id::text FROM document_segments UNION ALL"
                                           " SELECT index_node_id, document_id::text FROM child_chunks").fetchall())
            for d in big_db.seed.datasets:
                plan[d.collection_name] = [(n, owners[n], d.id) for n in d.index_nodes]
            plan_file = Path(tmp) / "plan.json"
            plan_file.write_text(json.dumps(plan))
            milvus = str(Path(tmp) / "milvus.db")
            subprocess.run([sys.executable, "-c", _MILVUS_FILL, milvus, str(plan_file)], check=True)
            verify_times, scan_times = [], []
            for _ in range(args.runs):
                seconds, _rss, code, _cpu = run_drtool(["verify", "--deep", "--skip-files"], env)
                assert code == 0, "verify found breaks in the benchmark's own data"
                verify_times.append(seconds)
                out = subprocess.run([sys.executable, "-c", _MILVUS_SCAN, milvus, *plan],
                                     check=True, capture_output=True, text=True).stdout.split()
                started = time.perf_counter()
                for d in big_db.seed.datasets:
                    s3.get_object(Bucket=bucket, Key=f"datasets/{d.id}/processed/chunks.jsonl")["Body"].read()
                scan_times.append(float(out[0]) + time.perf_counter() - started)
        finally:
            minio.stop()

    med = statistics.median
    export_s, base_s = med(r[0] for r in first), med(base)
    again_s = med(r[0] for r in again)
    rss_big = med(r[1] for r in first) / 1024
    start_s = med(start)
    export_cpu, base_cpu_s = med(r[3] for r in first), med(base_cpu)
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"), "machine": f"{platform.machine()}, "
        f"{os.cpu_count()} cpus", "segments": rows, "child_chunks": children, "indexed_chunks": chunks,
        "runs": args.runs,
        "export_seconds": round(export_s, 3), "baseline_copy_put_seconds": round(base_s, 3),
        "export_vs_baseline": round(export_s / base_s, 2),
        "process_start_seconds": round(start_s, 3),
        "export_cpu_seconds": round(export_cpu, 3), "baseline_cpu_seconds": round(base_cpu_s, 3),
        "export_cpu_vs_baseline_cpu": round(export_cpu / base_cpu_s, 2),
        "load_average_1min_at_start": round(load_before, 1),
        "export_without_start_vs_baseline": round((export_s - start_s) / base_s, 2),
        "incremental_unchanged_seconds": round(again_s, 3), "incremental_vs_first": round(again_s / export_s, 2),
        "peak_rss_mib_small": round(small[1] / 1024, 1), "peak_rss_mib_big": round(rss_big, 1),
        "rss_big_vs_small": round(rss_big / (small[1] / 1024), 2),
        "verify_deep_seconds": round(med(verify_times), 3), "baseline_scan_seconds": round(med(scan_times), 3),
        "verify_vs_baseline": round(med(verify_times) / med(scan_times), 2),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "export.json").write_text(json.dumps(result, indent=2) + "\n")
    small_mib = small[1] / 1024
    table = [
        ("`export-chunks --all` vs `COPY (same join) TO STDOUT` + one PUT per dataset",
         f"{result['export_vs_baseline']}x ({export_s:.2f} s vs {base_s:.2f} s)"),
        ("the same, less the process start (`drtool export-chunks --help`: "
         f"{start_s:.2f} s, boto3 and psycopg imports)",
         f"{result['export_without_start_vs_baseline']}x ({export_s - start_s:.2f} s vs {base_s:.2f} s)"),
        ("CPU time of `export-chunks` (user + system, its process start included) vs the baseline's (its own "
         "process; neither counts Postgres or MinIO)",
         f"{result['export_cpu_vs_baseline_cpu']}x ({export_cpu:.2f} s vs {base_cpu_s:.2f} s)"),
        ("second run, nothing changed, vs first run",
         f"{result['incremental_vs_first']}x ({again_s:.2f} s vs {export_s:.2f} s)"),
        (f"peak RSS of `export-chunks`, {segments:,} vs {segments // 10:,} segments",
         f"{result['rss_big_vs_small']}x ({rss_big:.0f} MiB vs {small_mib:.0f} MiB)"),
        ("`verify --deep --skip-files` (Milvus Lite) vs plain `query_iterator` scan + chunk-file GET",
         f"{result['verify_vs_baseline']}x ({med(verify_times):.2f} s vs {med(scan_times):.2f} s)"),
    ]
    rows_md = "\n".join(f"| {k} | {v} |" for k, v in table)
    (RESULTS / "export.md").write_text(f"""# export-chunks and verify benchmark

`python -m bench.export.run{' --large' if args.large else ''}` on {result['machine']}, {result['when']}
(1-minute load average {load_before:.1f} when the timed runs started: wall times on a shared machine stretch
with it, CPU times much less); medians of {args.runs} runs. A Dify knowledge base of {rows:,} segments and
{children:,} child chunks ({chunks:,} chunks indexed). All figures are ratios to baselines measured in the same run.

| measure | value |
|---|---|
{rows_md}

The incremental run still reads every row from Postgres (the hash is computed from them) but uploads nothing.
Peak RSS is the drtool process's own VmHWM (/proc), not wait4's ru_maxrss, which starts from the memory of the
process that forked it (this benchmark's, after seeding: before 2026-12 this table showed that, 278 MiB for both
sizes). It is bounded by fixed buffers, which the small run's files (under 8 MiB) do not fill: the 8 MiB
in-memory spool, the writer's queue (4 blocks of about 1 MiB) and one upload part (`--part-size-mb`, 16 MiB).
Each drtool timing includes its process start ({start_s:.2f} s here: `drtool export-chunks --help`, measured in the
same run); the baseline runs inside the benchmark's process, whose imports are already done.

Where the time goes (profiled on the same 76,999 chunks, 2026-12-07, CPU seconds of the drtool process and of
its Postgres backend, medians): the process start (imports of psycopg with its bundled libpq, boto3/botocore,
click) is a fixed cost about the size of the whole baseline at this scale; reading the rows cost the client 0.25 s
when parsed out of `COPY ... TO STDOUT` text, and about half that in libpq's chunked-rows mode with binary results
(what drtool now uses; the server's 0.3 s is the same); encoding the JSON lines 0.10 s (0.13 s before it escaped a
document's parts once per run of rows); sha256 of the 35 MB of lines 0.02 s (SHA-NI); the upload is sequential
after the read, as in the baseline, but of 35 MB of JSON lines instead of 25 MB of COPY text, the larger file as
a multipart upload; each file also costs a HEAD, a ListMultipartUploads (aborting a killed run's upload) and two
HEADs of the other-compression names. Building each line in Postgres instead (`to_json` + concatenation, the
same bytes, tried) cut the client's CPU to 0.1 s but doubled the backend's (0.27 -> 0.55-0.6 s on Postgres 15,
whose escape_json goes character by character): the same total, all of it on one single-threaded backend and no
longer overlapped with the client, so it was not kept.
""")
    print((RESULTS / "export.md").read_text())


if __name__ == "__main__":
    main()
