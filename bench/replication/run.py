"""Replication benchmark: `drtool replication verify` against a plain listing, and its memory at two sizes.

    .venv/bin/python -m bench.replication.run            # quick: 10,000 vs 2,000 objects (a few minutes)
    .venv/bin/python -m bench.replication.run --large    # 100,000 vs 10,000 objects
    .venv/bin/python -m bench.replication.run --objects 50000 --small 5000

It starts two MinIO servers joined by site replication (the test stack's binaries and setup), writes a bucket of N
objects and one of M objects on site A and waits until B holds them all (same version ids, as a settled replica
has), then measures in separate worker processes (so imports and interpreter start are not timed and peak
RSS is per run):

1. wall time of verify's comparison of the N-object bucket (both sides listed concurrently, merge-joined) as a
   ratio to a plain boto3 paginator over list_object_versions of that bucket on one site, same run (target
   <= 1.3x);
2. peak RSS of a verify of the N-object bucket against the M-object one (flat means memory does not follow the
   bucket size).

Results go to bench/results/replication.json and bench/results/replication.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

RESULTS = REPO / "bench" / "results"


def _client(endpoint: str, access: str, secret: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access, aws_secret_access_key=secret,
                        region_name="us-east-1",
                        config=Config(s3={"addressing_style": "path"}, max_pool_connections=32))


def _count_versions(client: Any, bucket: str) -> int:
    total = 0
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket):
        total += len(page.get("Versions", [])) + len(page.get("DeleteMarkers", []))
    return total


def _fill(sites: Any, bucket: str, n: int) -> None:
    """Write N objects on site A and wait until site replication has copied them all to B."""
    a = _client(sites.a.endpoint, sites.a.access_key, sites.a.secret_key)
    b = _client(sites.b.endpoint, sites.b.access_key, sites.b.secret_key)
    a.create_bucket(Bucket=bucket)

    def put(i: int) -> None:
        key = f"datasets/{i % 97:04d}/processed/chunk-{i:08d}.json"
        a.put_object(Bucket=bucket, Key=key, Body=b"x" * (i % 64))

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(put, range(n)))
    deadline = time.monotonic() + 1800
    while _count_versions(b, bucket) < n:
        if time.monotonic() > deadline:
            raise SystemExit(f"site replication did not copy {n} objects of {bucket} within 30 minutes")
        time.sleep(5)


# --- workers (run in their own process) --------------------------------------------------------------------------

def _worker(kind: str, endpoint_a: str, endpoint_b: str, bucket: str) -> None:
    access, secret = os.environ["BENCH_ACCESS_KEY"], os.environ["BENCH_SECRET_KEY"]
    if kind == "list":
        client = _client(endpoint_a, access, secret)
        start = time.perf_counter()
        count = 0
        for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket):
            count += len(page.get("Versions", [])) + len(page.get("DeleteMarkers", []))
        elapsed = time.perf_counter() - start
    else:
        from drtool.config import load_settings
        from drtool.ops.replication.sites import Site
        from drtool.ops.replication.verify import verify

        settings = load_settings(environ={"DRTOOL_REPLICATION_ACCESS_KEY": access,
                                          "DRTOOL_REPLICATION_SECRET_KEY": secret})
        start = time.perf_counter()
        report = verify(settings, Site("A", endpoint_a), Site("B", endpoint_b), [bucket], settle_seconds=0)
        elapsed = time.perf_counter() - start
        result = report.buckets[0]
        if report.exit_code != 0 or result.counts.matched != result.counts.source_entries:
            raise SystemExit(f"verify found differences: {result.to_dict()}")
        count = result.counts.source_entries
    print(json.dumps({"seconds": elapsed, "entries": count, "maxrss_kib": _peak_rss_kib()}))


def _peak_rss_kib() -> int:
    """This process's own peak RSS. Not ru_maxrss: Linux carries that over from the parent across fork + exec, so
    a worker started by the (large) benchmark process would report the parent's peak."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _run_worker(kind: str, sites: Any, bucket: str) -> dict[str, Any]:
    env = dict(os.environ, BENCH_ACCESS_KEY=sites.a.access_key, BENCH_SECRET_KEY=sites.a.secret_key)
    out = subprocess.run([sys.executable, "-m", "bench.replication.run", "--worker", kind, sites.a.endpoint,
                          sites.b.endpoint, bucket], capture_output=True, text=True, cwd=REPO, env=env, check=False)
    if out.returncode != 0:
        raise SystemExit(f"worker {kind} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=10_000, help="objects in the large bucket (default 10000)")
    parser.add_argument("--small", type=int, default=None, help="objects in the small bucket (default objects/5, "
                        "objects/10 with --large)")
    parser.add_argument("--large", action="store_true", help="100,000 vs 10,000 objects")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of each timing (median reported)")
    parser.add_argument("--worker", nargs=4, metavar=("KIND", "A", "B", "BUCKET"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(*args.worker)
        return
    n = 100_000 if args.large else args.objects
    m = args.small or (n // 10 if args.large else n // 5)

    from tests.stack.minio_sites import local_minio_pair

    with tempfile.TemporaryDirectory(prefix="drtool-bench-repl-") as tmp, local_minio_pair(Path(tmp)) as sites:
        started = time.perf_counter()
        _fill(sites, "large", n)
        _fill(sites, "small", m)
        print(f"wrote and replicated {n} + {m} objects in {time.perf_counter() - started:.0f} s", flush=True)
        baseline, verify_runs = [], []
        for i in range(args.repeat):
            baseline.append(_run_worker("list", sites, "large"))
            verify_runs.append(_run_worker("verify", sites, "large"))
            print(f"run {i + 1}: list {baseline[-1]['seconds']:.2f} s, verify {verify_runs[-1]['seconds']:.2f} s",
                  flush=True)
        small = [_run_worker("verify", sites, "small") for _ in range(args.repeat)]
    t_list = statistics.median(r["seconds"] for r in baseline)
    t_verify = statistics.median(r["seconds"] for r in verify_runs)
    rss_large = statistics.median(r["maxrss_kib"] for r in verify_runs) / 1024
    rss_small = statistics.median(r["maxrss_kib"] for r in small) / 1024
    rss_list = statistics.median(r["maxrss_kib"] for r in baseline) / 1024
    results = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m bench.replication.run" + (" --large" if args.large else f" --objects {n} --small {m}"),
        "machine": {"arch": platform.machine(), "cpus": os.cpu_count()}, "repeat": args.repeat,
        "objects_large": n, "objects_small": m,
        "verify_seconds": t_verify, "plain_listing_seconds": t_list, "verify_vs_listing_ratio": t_verify / t_list,
        "verify_peak_rss_mib_large": rss_large, "verify_peak_rss_mib_small": rss_small,
        "plain_listing_peak_rss_mib": rss_list, "rss_ratio_large_vs_small": rss_large / rss_small,
        "runs": {"list": baseline, "verify": verify_runs, "verify_small": small},
    }
    write_results(results)


def write_results(results: dict[str, Any]) -> None:
    """Keep one entry per bucket size, so the quick and the --large run both stay on record."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "replication.json"
    try:
        existing = json.loads(path.read_text())
    except (OSError, ValueError):
        existing = {}
    by_size = existing.get("by_size", {})
    if "objects_large" in existing:  # a file written before results were kept per size
        existing.setdefault("command", "python -m bench.replication.run"
                            + (" --large" if existing["objects_large"] == 100_000 else ""))
        by_size[str(existing["objects_large"])] = existing
    by_size[str(results["objects_large"])] = results
    path.write_text(json.dumps({"benchmark": "replication", "by_size": by_size}, indent=1) + "\n")
    md = [
        "# Replication benchmark",
        "",
        "Two MinIO servers on loopback joined by site replication, the same versioned bucket on both (written on A,",
        "replicated to B). Medians of the runs; every ratio is to a baseline measured in the same run.",
        "",
        "| run | measure | value | target |",
        "|---|---|---|---|",
    ]
    for size in sorted(by_size, key=int):
        r = by_size[size]
        n, m = r["objects_large"], r["objects_small"]
        where = f"`{r.get('command', 'python -m bench.replication.run')}`, {r['machine']['cpus']} cpus, {r['date']}"
        md.append(f"| {where} | `replication verify` of {n:,} objects (both sites listed concurrently, "
                  f"merge-joined) vs a plain boto3 `list_object_versions` paginator over one site | "
                  f"{r['verify_vs_listing_ratio']:.2f}x ({r['verify_seconds']:.2f} s vs "
                  f"{r['plain_listing_seconds']:.2f} s) | <= 1.3x |")
        md.append(f"| {where} | peak RSS of verify, {n:,} vs {m:,} objects | {r['rss_ratio_large_vs_small']:.2f}x "
                  f"({r['verify_peak_rss_mib_large']:.0f} MiB vs {r['verify_peak_rss_mib_small']:.0f} MiB; the plain "
                  f"listing process: {r['plain_listing_peak_rss_mib']:.0f} MiB) | flat |")
    md.append("")
    (RESULTS / "replication.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
