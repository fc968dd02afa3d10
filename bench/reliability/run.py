"""Crash-consistency figures: seeded kill -9 trials of every writing command, and concurrent-run races.

    .venv/bin/python -m bench.reliability.run                 # 20 trials per command (the test suite runs 10)
    .venv/bin/python -m bench.reliability.run --trials 100    # more trials, same seed: a superset of the above
    .venv/bin/python -m bench.reliability.run --seed 7 --only snapshot

It runs the test suite tests/reliability (real MinIO, Postgres, Milvus Lite and an OpenAI-compatible embedding
server, all on loopback) with DRTOOL_RELIABILITY_TRIALS / DRTOOL_RELIABILITY_SEED set, collects one record per
trial, and writes bench/results/reliability.json and bench/results/reliability.md: trials run per command and
fault, where in the run the kill landed (the last JSON event the killed process had printed), how many trials
failed, and the failures these trials found in drtool (fixed; listed in FOUND below).

A failing trial is replayed exactly with the same --seed and --trials (the delays come from a seeded RNG per
command).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench" / "results"
FILES = {"snapshot": "test_kill_snapshot.py", "restore": "test_kill_restore.py",
         "rebuild": "test_kill_rebuild.py", "export": "test_kill_export.py", "concurrency": "test_concurrent_runs.py"}

# What the trials found in drtool, each fixed (file changed) and kept as a trial invariant.
FOUND = [
    {"command": "snapshot create", "fault": "kill -9 during the run",
     "failure": "the next run exited 11 on the dead run's lock until an operator ran `snapshots unlock` or "
                "passed --break-stale-lock",
     "found": "the issue (issue 3 wants the next run to succeed); every trial checks it",
     "fix": "a lock whose holder is a dead process on the same host (pid gone or reused) is taken over "
            "automatically with a warning and a lock_taken_over event, race-free with If-Match "
            "(drtool/core/lock.py, drtool/ops/lock.py)"},
    {"command": "snapshot create", "fault": "kill -9 after the database was read",
     "failure": "the on-disk index of referenced keys (drtool-refs-*/refs.sqlite) was left in TMPDIR by every "
                "killed run",
     "found": "random trial (TMPDIR check)",
     "fix": "the SQLite file is unlinked as soon as it is open (drtool/core/keys.py)"},
    {"command": "restore", "fault": "kill -9 after pg_restore committed, before the completion comment",
     "failure": "the re-run refused the restored database: 'target database … is not empty, pass --yes' (exit 2)",
     "found": "random trial; now also a fixed-point trial",
     "fix": "the database is marked 'drtool: restoring snapshot <id> (incomplete)' before pg_restore; a re-run "
            "replaces drtool's own unfinished work without --yes; pg_restore dies with drtool (PR_SET_PDEATHSIG) "
            "so its transaction rolls back (drtool/ops/snapshot/restore_database.py)"},
    {"command": "restore", "fault": "kill -9 while the dump was staged",
     "failure": "a full copy of the dump (drtool-dump-*.dump) was left in TMPDIR",
     "found": "reading the code behind the TMPDIR check; pinned by the fixed-point trial that kills pg_restore",
     "fix": "the dump is staged in an anonymous file handed to pg_restore as /dev/fd/N "
            "(drtool/ops/snapshot/restore_database.py)"},
    {"command": "export-chunks", "fault": "kill -9 between the parts of a multipart upload",
     "failure": "the unfinished multipart upload stayed in the bucket (invisible, billed) until a lifecycle rule "
                "or `mc rm --incomplete` removed it",
     "found": "reading the code behind the abandoned-upload check; pinned by a fixed-point trial",
     "fix": "the next run, holding the bucket's lock, aborts unfinished uploads of the file it writes "
            "(drtool/ops/export/writer.py)"},
    {"command": "rebuild-index", "fault": "two runs into one Milvus Lite file",
     "failure": "the second failed with 'Open local milvus failed … check milvus.uri and that Milvus is running' "
                "(exit 1)",
     "found": "concurrent-run test",
     "fix": "exit 11: 'the Milvus Lite file … is open in another process' (drtool/adapters/milvus.py)"},
    {"command": "rebuild-index, export-chunks, restore", "fault": "two runs started at once",
     "failure": "no run lock: both runs wrote (rebuild-index relied on its checkpoint, export-chunks and restore "
                "had nothing)",
     "found": "the issue; concurrent-run tests",
     "fix": "one lock per target collection / bucket / target database and bucket, same rules as the snapshot "
            "lock; the second run exits 11 naming the holder"},
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20, help="kill -9 trials per command (default 20)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the kill delays (default: the suite's)")
    parser.add_argument("--only", choices=sorted(FILES), action="append", help="run only these parts")
    parser.add_argument("--render-only", action="store_true",
                        help="rewrite reliability.md from reliability.json (and the current list of findings)")
    args = parser.parse_args(argv)
    if args.render_only:
        summary = json.loads((RESULTS / "reliability.json").read_text())
        summary["failures_found_and_fixed"] = FOUND
        (RESULTS / "reliability.json").write_text(json.dumps(summary, indent=1) + "\n")
        (RESULTS / "reliability.md").write_text(render(summary))
        return 0

    parts = args.only or sorted(FILES)
    with tempfile.TemporaryDirectory(prefix="drtool-reliability-") as tmp:
        records_path = Path(tmp) / "records.jsonl"
        env = dict(os.environ, DRTOOL_RELIABILITY_TRIALS=str(args.trials),
                   DRTOOL_RELIABILITY_RESULTS=str(records_path))
        if args.seed is not None:
            env["DRTOOL_RELIABILITY_SEED"] = str(args.seed)
        started = time.monotonic()
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               *[f"tests/reliability/{FILES[p]}" for p in parts]]
        proc = subprocess.run(cmd, cwd=REPO, env=env, check=False)
        wall = time.monotonic() - started
        lines = records_path.read_text().splitlines() if records_path.exists() else []
    records = [json.loads(line) for line in lines]
    summary = summarise(records, seed=args.seed, trials=args.trials, wall=wall, pytest_exit=proc.returncode)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "reliability.json").write_text(json.dumps(summary, indent=1) + "\n")
    (RESULTS / "reliability.md").write_text(render(summary))
    print((RESULTS / "reliability.md").read_text())
    return proc.returncode


def summarise(records: list[dict[str, Any]], *, seed: int | None, trials: int, wall: float,
              pytest_exit: int) -> dict[str, Any]:
    from tests.reliability.harness import DEFAULT_SEED

    commands: dict[str, dict[str, Any]] = {}
    for r in records:
        if "kind" in r:
            continue
        c = commands.setdefault(r["command"], {"fault": r["fault"], "trials": 0, "killed": 0,
                                               "finished_before_kill": 0, "failed": 0, "phases": {},
                                               "orphans_after_kill": 0, "failures": []})
        c["trials"] += 1
        c["killed" if r["killed"] else "finished_before_kill"] += 1
        c["phases"][r["phase"]] = c["phases"].get(r["phase"], 0) + 1
        c["orphans_after_kill"] += bool(r.get("survivors"))
        if not r["ok"]:
            c["failed"] += 1
            c["failures"].append({"trial": r["trial"], "delay_s": r["delay_s"], "phase": r["phase"],
                                  "problems": r["problems"]})
    for r in records:
        if r.get("kind") == "calibration" and r["command"] in commands:
            commands[r["command"]]["run_seconds"] = r["seconds"]
    races = [{"command": r["command"], "exit_codes": r["codes"]} for r in records if r.get("kind") == "concurrency"]
    return {
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
        "command": "python -m bench.reliability.run --trials " + str(trials)
                   + (f" --seed {seed}" if seed is not None else ""),
        "seed": seed if seed is not None else DEFAULT_SEED,
        "trials_per_command": trials,
        "wall_seconds": round(wall, 1),
        "pytest_exit_code": pytest_exit,
        "kill_trials": commands,
        "concurrent_runs": races,
        "failures_found_and_fixed": FOUND,
    }


def render(s: dict[str, Any]) -> str:
    out = ["# Reliability: kill -9 trials and concurrent runs", "",
           f"`{s['command']}` on {s['machine']}, {s['generated']}; seed {s['seed']}, "
           f"{s['wall_seconds']} s wall (pytest exit {s['pytest_exit_code']}).", "",
           "Each trial starts the real command, SIGKILLs it at a seeded random moment (one in ten, three in ten "
           "for rebuild-index, before its first JSON event; the rest spread over the work between its first and "
           "last event in a calibration run), then checks: nothing "
           "half-written is visible, the next run succeeds without operator help, re-running ends with exactly "
           "the right rows/objects/vectors (no duplicates, no gaps), no lock or temporary file is left, and the "
           "source stores are unchanged (row and listing hashes).", "",
           "| command | fault | trials | killed mid-run | finished first | failed "
           "| where the kill landed (last event) |",
           "|---|---|---|---|---|---|---|"]
    for name, c in s["kill_trials"].items():
        phases = ", ".join(f"{k} {v}" for k, v in sorted(c["phases"].items(), key=lambda kv: -kv[1]))
        out.append(f"| `{name}` | {c['fault']} | {c['trials']} | {c['killed']} | {c['finished_before_kill']} | "
                   f"{c['failed']} | {phases} |")
    out += ["", "Fixed-point trials besides (one each, every run): restore killed while `pg_restore` runs (it must die "
            "with drtool and the re-run finish), restore killed between `pg_restore`'s commit and the completion "
            "comment, export-chunks killed between the parts of a multipart upload."]
    if s["concurrent_runs"]:
        out += ["", "Two runs of the same command started at the same moment (real processes):", "",
                "| command | exit codes |", "|---|---|"]
        out += [f"| `{r['command']}` | {r['exit_codes']} |" for r in s["concurrent_runs"]]
    failed = [(n, f) for n, c in s["kill_trials"].items() for f in c["failures"]]
    if failed:
        out += ["", "## Failing trials in this run", ""]
        out += [f"- `{n}` trial {f['trial']} (kill at {f['delay_s']} s, {f['phase']}): {'; '.join(f['problems'])}"
                for n, f in failed]
    out += ["", "## Failures found in drtool (all fixed)", "", "| command | fault | failure | found by | fix |",
            "|---|---|---|---|---|"]
    out += [f"| {f['command']} | {f['fault']} | {f['failure']} | {f['found']} | {f['fix']} |"
            for f in s["failures_found_and_fixed"]]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
