"""Start-up benchmark: what a cron job or a shell user waits for before drtool does anything.

    .venv/bin/python -m bench.startup.run            # 15 rounds
    .venv/bin/python -m bench.startup.run --rounds 40

Each round runs, in a shuffled order, fresh interpreters of: `python -c pass` (the floor), `drtool --help`,
`drtool config show`, a no-op `drtool replication status` (nothing configured: it stops at the missing setting,
exit 2, after loading its command), and the old eager start (`import drtool.cli.main` plus every command module,
what `--help` imported before the lazy group). Medians of wall time, and each as a ratio to the floor measured in
the same rounds. Results go to bench/results/startup.json and bench/results/startup.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable
EAGER = ("from drtool.cli.main import COMMANDS\nfrom drtool.cli.lazy import load\n"
         "[load(entry) for entry in COMMANDS.values()]")
CASES: dict[str, list[str]] = {
    "python -c pass": [PY, "-c", "pass"],
    "drtool --help": [PY, "-m", "drtool", "--help"],
    "drtool config show": [PY, "-m", "drtool", "config", "show"],
    "drtool replication status (no-op)": [PY, "-m", "drtool", "replication", "status"],
    "eager import of every command (before)": [PY, "-c", EAGER],
}


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("DRTOOL_")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    env = clean_env()
    times: dict[str, list[float]] = {name: [] for name in CASES}
    rng = random.Random(7)
    for _ in range(args.rounds):
        order = list(CASES)
        rng.shuffle(order)
        for name in order:
            started = time.perf_counter()
            subprocess.run(CASES[name], env=env, cwd="/tmp", capture_output=True, check=False)
            times[name].append(time.perf_counter() - started)
    floor = statistics.median(times["python -c pass"])
    rows = [{"case": name, "median_s": round(statistics.median(t), 4), "min_s": round(min(t), 4),
             "ratio_to_python": round(statistics.median(t) / floor, 2)} for name, t in times.items()]
    load = os.getloadavg()[0]
    result = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "rounds": args.rounds,
              "cpus": os.cpu_count(), "load_average": round(load, 1), "python": platform.python_version(),
              "rows": rows}
    out = REPO / "bench" / "results"
    (out / "startup.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# Start-up: drtool before it does anything", "",
             f"`.venv/bin/python -m bench.startup.run --rounds {args.rounds}` on {os.cpu_count()} CPUs (load average "
             f"{load:.1f}), Python {platform.python_version()}; medians of fresh processes, shuffled per round.", "",
             "| case | median s | min s | x `python -c pass` |", "|---|---|---|---|"]
    lines += [f"| {r['case']} | {r['median_s']} | {r['min_s']} | {r['ratio_to_python']} |" for r in rows]
    lines += ["", "The eager row is what `drtool --help` imported before commands were loaded lazily "
              "(drtool/cli/lazy.py): every command module and the SDKs they import (boto3, psycopg, ...)."]
    (out / "startup.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
