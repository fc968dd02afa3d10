"""`drtool replication verify` against `mc diff`, at 4,000 and 100,000 objects (issue #18).

    .venv/bin/python -m bench.replication.mc_diff                 # 4,000 and 100,000 objects
    .venv/bin/python -m bench.replication.mc_diff --sizes 4000    # only the small bucket

Two MinIO servers joined by site replication (the test stack's binaries and setup); each bucket is written on A
and waited for on B. Both tools then run as separate processes, as cron would run them, and their wall time
(interpreter or binary start included) is the median of --repeat runs. They do not answer the same question:
`mc diff` compares the latest object of each key by name, size and modification time; `drtool replication verify`
compares every version by version id, ETag, size and delete marker. Results go to
bench/results/replication-mc-diff.json and .md.
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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.replication.run import _fill  # noqa: E402

RESULTS = REPO / "bench" / "results"


def _timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO, check=False, timeout=3600)
    return time.perf_counter() - start, done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4000, 100_000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from tests.stack.minio_sites import local_minio_pair

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="drtool-bench-mcdiff-") as tmp, local_minio_pair(Path(tmp)) as sites:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DRTOOL_")}
        env.update(DRTOOL_REPLICATION_SITES=f"A={sites.a.endpoint},B={sites.b.endpoint}",
                   DRTOOL_REPLICATION_ACCESS_KEY=sites.a.access_key,
                   DRTOOL_REPLICATION_SECRET_KEY=sites.a.secret_key)
        for n in args.sizes:
            bucket = f"bench-{n}"
            started = time.perf_counter()
            _fill(sites, bucket, n)
            print(f"wrote and replicated {n} objects in {time.perf_counter() - started:.0f} s", flush=True)
            drtool_t, mc_t = [], []
            for i in range(args.repeat):
                t, done = _timed([sys.executable, "-m", "drtool", "replication", "verify", "--bucket", bucket,
                                  "--settle", "0", "--json"], env)
                if done.returncode != 0:
                    raise SystemExit(f"verify exit {done.returncode}: {done.stdout[-2000:]} {done.stderr[-2000:]}")
                drtool_t.append(t)
                t, done = _timed([str(sites.mc_path), "--config-dir", str(sites.mc_config_dir), "--no-color",
                                  "diff", f"A/{bucket}", f"B/{bucket}"])
                if done.returncode != 0 or done.stdout.strip():
                    raise SystemExit(f"mc diff exit {done.returncode}: {done.stdout[-2000:]} {done.stderr[-2000:]}")
                mc_t.append(t)
                print(f"{n} objects run {i + 1}: drtool verify {drtool_t[-1]:.2f} s, mc diff {mc_t[-1]:.2f} s",
                      flush=True)
            rows.append({"objects": n, "drtool_verify_seconds": statistics.median(drtool_t),
                         "mc_diff_seconds": statistics.median(mc_t), "runs": {"drtool": drtool_t, "mc": mc_t}})
    results = {"benchmark": "replication verify vs mc diff",
               "date": datetime.now(UTC).isoformat(timespec="seconds"),
               "command": "python -m bench.replication.mc_diff --sizes " + " ".join(map(str, args.sizes)),
               "machine": {"arch": platform.machine(), "cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0]},
               "repeat": args.repeat, "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "replication-mc-diff.json").write_text(json.dumps(results, indent=1) + "\n")
    md = ["# `replication verify` vs `mc diff`", "",
          "Two MinIO servers on loopback joined by site replication; each bucket written on A, replicated to B, one",
          "version per key. Wall time of each tool as a separate process (start-up included), median of "
          f"{args.repeat} runs; {results['machine']['cpus']} cpus, {results['date']}.",
          "`mc diff` compares each key's latest object (name, size, modification time); `drtool replication verify`",
          "compares every version (version id, ETag, size, delete marker).", "",
          "| objects | drtool replication verify | mc diff | ratio |", "|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['objects']:,} | {r['drtool_verify_seconds']:.2f} s | {r['mc_diff_seconds']:.2f} s | "
                  f"{r['drtool_verify_seconds'] / r['mc_diff_seconds']:.2f}x |")
    md.append("")
    (RESULTS / "replication-mc-diff.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
