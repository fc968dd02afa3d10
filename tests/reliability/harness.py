"""Seeded kill -9 trials: run a real `drtool` process, SIGKILL it at a delay drawn from a seeded RNG over the
command's measured duration, and give each command's checks what happened (events seen, phase killed in).

Trials per command come from DRTOOL_RELIABILITY_TRIALS (default 10 in the test suite, to keep CI inside its budget;
the figures of record come from bench/reliability/run.py, 20 or more) and the seed from DRTOOL_RELIABILITY_SEED, so
a failing trial is replayed exactly with the same two numbers. With DRTOOL_RELIABILITY_RESULTS set, every trial
is appended as one JSON line to that file (bench/reliability/run.py turns them into bench/results/reliability.*).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.foundation.json_contract import check_json_run
from tests.helpers.cli import ProcessRun, clean_env, run_process

REPO = Path(__file__).resolve().parents[2]
DEFAULT_SEED = 20261129


def trials() -> int:
    return max(1, int(os.environ.get("DRTOOL_RELIABILITY_TRIALS", "10")))


def seed() -> int:
    return int(os.environ.get("DRTOOL_RELIABILITY_SEED", str(DEFAULT_SEED)))


def rng_for(command: str) -> random.Random:
    """One RNG per command, so that adding trials to one command does not shift another's delays."""
    return random.Random(f"{seed()}/{command}")


def complete_run(args: list[str], env: dict[str, str], *, timeout: float = 300) -> ProcessRun:
    """A complete run of `drtool --json ARGS` as cron would start it (a separate process)."""
    done = run_process(["--json", *args], env, timeout=timeout)  # every --json run obeys docs/json.md
    return ProcessRun(done.code, done.stdout, done.stderr, done.seconds)


def timed_run(args: list[str], env: dict[str, str], *, timeout: float = 300) -> ProcessRun:
    """A complete run that also notes when the first JSON event came out (the end of Python's start-up)."""
    proc = _spawn(args, env)
    reader = _Reader(proc)
    proc.wait(timeout=timeout)
    reader.join()
    first = reader.lines[0][0] - reader.started if reader.lines else None
    last = reader.lines[-1][0] - reader.started if reader.lines else None
    stdout = "".join(line for _, line in reader.lines)
    check_json_run(["--json", *args], stdout, proc.returncode)
    return ProcessRun(proc.returncode, stdout, reader.stderr(), time.monotonic() - reader.started, first, last)


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "drtool", "--json", *args], env=clean_env(env), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=REPO,
                            start_new_session=True)


class _Reader:
    """Collects stdout lines with their arrival time, and stderr, without ever blocking the child; `on_stderr`
    sees each stderr line as it arrives (a test that reacts to what drtool logs)."""

    def __init__(self, proc: subprocess.Popen[str], on_stderr: Callable[[str], None] | None = None) -> None:
        self.started = time.monotonic()
        self._on_stderr = on_stderr
        self.lines: list[tuple[float, str]] = []
        self.closed = 0.0
        self._err: list[str] = []
        assert proc.stdout is not None and proc.stderr is not None
        self._threads = [threading.Thread(target=self._out, args=(proc.stdout,), daemon=True),
                         threading.Thread(target=self._errs, args=(proc.stderr,), daemon=True)]
        for t in self._threads:
            t.start()

    def _out(self, stream: Any) -> None:
        for line in stream:
            self.lines.append((time.monotonic(), line))
        self.closed = time.monotonic()  # stdout closes when the process ends

    def _errs(self, stream: Any) -> None:
        for line in stream:
            self._err.append(line)
            if self._on_stderr is not None:
                self._on_stderr(line)

    def join(self) -> None:
        for t in self._threads:
            t.join(timeout=30)

    def stderr(self) -> str:
        return "".join(self._err)


@dataclass
class Kill:
    """What one killed run did before it died."""

    delay_s: float
    killed: bool  # False: the run had already finished when the delay ran out
    code: int | None
    last_event: str
    events: list[dict[str, Any]]
    stderr: str
    survivors: list[str]  # children of the killed run still alive right after the kill (pg_dump, ...)
    pgid: int = 0  # its process group, for reap_group once the trial is judged


def run_and_kill(args: list[str], env: dict[str, str], delay_s: float, *, after_first_event: bool = True,
                 at_event: Callable[[dict[str, Any]], bool] | None = None) -> Kill:
    """Start the command and SIGKILL it `delay_s` after its first JSON event (or after its start, for trials aimed
    at Python's start-up): the start-up of an interpreter varies by seconds on a loaded machine, the work after
    the first event much less."""
    proc = _spawn(args, env)
    reader = _Reader(proc)
    killed = False
    if at_event is not None:  # a deterministic point: the moment the run prints a matching event
        seen = 0
        while proc.poll() is None:
            lines = reader.lines[seen:]
            seen += len(lines)
            if any(at_event(e) for e in ProcessRun(0, "".join(line for _, line in lines), "", 0).events()):
                break
            time.sleep(0.002)
        delay_s = 0.0
    elif after_first_event:
        while not reader.lines and proc.poll() is None:
            time.sleep(0.005)
    try:
        proc.wait(timeout=delay_s)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)  # reaped: its pid is gone, as after a real crash
        killed = True
    reader.join()
    survivors = _group_members(proc.pid)
    stdout = "".join(line for _, line in reader.lines)
    # what a killed run wrote obeys docs/json.md too, except that its result (and its last line) may be missing
    check_json_run(["--json", *args], stdout, None if killed else proc.returncode, complete=not killed)
    events = ProcessRun(0, stdout, "", 0).events()
    last = str(events[-1].get("event", "?")) if events else "(start-up)"
    return Kill(delay_s, killed, proc.returncode, last, events, reader.stderr(), survivors, proc.pid)


def _group_members(pgid: int) -> list[str]:
    names = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(") ", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                names.append((d / "comm").read_text().strip())
        except (OSError, IndexError, ValueError):
            continue
    return names


def reap_group(pgid: int) -> None:
    """Stop what a killed run left running, once its trial is judged (no stray process outlives the test)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


@dataclass
class TrialRecord:
    command: str
    fault: str
    trial: int
    seed: int
    delay_s: float
    after_first_event: bool
    killed: bool
    phase: str
    ok: bool
    problems: list[str] = field(default_factory=list)
    survivors: list[str] = field(default_factory=list)
    seconds: float = 0.0


class Trials:
    """Runs a command's trials, collects every problem (a failing trial does not hide the next), records them."""

    def __init__(self, command: str, fault: str = "kill -9") -> None:
        self.command = command
        self.fault = fault
        self.records: list[TrialRecord] = []

    def run(self, n: int, delays: list[KillPoint], one: Callable[[int, KillPoint], tuple[Kill, list[str]]]) -> None:
        for i in range(n):
            started = time.monotonic()
            kill, problems = one(i, delays[i])
            rec = TrialRecord(self.command, self.fault, i, seed(), round(kill.delay_s, 3), delays[i].after_first_event,
                              kill.killed,
                              kill.last_event if kill.killed else "(finished)", not problems, problems,
                              kill.survivors, round(time.monotonic() - started, 2))
            self.records.append(rec)
            _append_trial(rec)

    def assert_ok(self) -> None:
        bad = [r for r in self.records if not r.ok]
        detail = "\n".join(f"trial {r.trial} (seed {r.seed}, kill {r.delay_s}s after "
                           f"{'the first event' if r.after_first_event else 'the start'}, phase {r.phase}): "
                           + "; ".join(r.problems) for r in bad)
        assert not bad, f"{len(bad)}/{len(self.records)} {self.command} trial(s) failed:\n{detail}"

    def phases(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.records:
            out[r.phase] = out.get(r.phase, 0) + 1
        return out


@dataclass(frozen=True)
class KillPoint:
    delay_s: float
    after_first_event: bool


def delays_over(rng: random.Random, n: int, calibration: ProcessRun, *, startup_share: float = 0.1) -> list[KillPoint]:
    """Kill moments spread over the run: a share of the trials (default one in ten) during start-up (from the
    spawn to the first event), the others uniform over 110% of the work between the first and the last event
    (after the last one the process only tears down, which is not worth most of the trials)."""
    start = calibration.first_event_s or 0.0
    end = calibration.last_event_s if calibration.last_event_s is not None else calibration.seconds
    work = max(0.05, end - start)
    points = []
    for _ in range(n):
        if rng.random() < startup_share:
            points.append(KillPoint(rng.uniform(0.0, start), False))
        else:
            points.append(KillPoint(rng.uniform(0.0, work * 1.1), True))
    return points


def _append_trial(rec: TrialRecord) -> None:
    path = os.environ.get("DRTOOL_RELIABILITY_RESULTS")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(asdict(rec)) + "\n")


def record_extra(kind: str, **fields: Any) -> None:
    """Non-trial facts for the results file (calibration durations, concurrency outcomes)."""
    path = os.environ.get("DRTOOL_RELIABILITY_RESULTS")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"kind": kind, **fields}) + "\n")


def temp_problems(tmpdir: Path) -> list[str]:
    """What drtool left in its TMPDIR (a killed run must not leave dumps or key indexes behind), as a problem;
    the leftovers are removed so the next trial starts clean."""
    import shutil

    left = sorted(tmpdir.iterdir()) if tmpdir.exists() else []
    for path in left:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return [f"temporary files left in TMPDIR: {[p.name for p in left]}"] if left else []


@dataclass
class RaceRun:
    code: int
    events: list[dict[str, Any]]
    stderr: str
    first_event: float  # monotonic time of its first JSON event (after start-up)
    ended: float
    event_times: list[float] = field(default_factory=list)  # monotonic arrival time of each of `events`

    def times_of(self, names: set[str]) -> list[float]:
        return [t for t, e in zip(self.event_times, self.events, strict=True) if e.get("event") in names]


def race(args: list[str], env: dict[str, str], *, copies: int = 2, timeout: float = 300) -> list[RaceRun]:
    """Start `copies` identical runs at the same moment and wait for all of them."""
    procs = [_spawn(args, env) for _ in range(copies)]
    readers = [_Reader(p) for p in procs]
    out: list[RaceRun] = []
    for proc, reader in zip(procs, readers, strict=True):
        proc.wait(timeout=timeout)
        reader.join()
        ended = reader.closed or time.monotonic()
        stdout = "".join(line for _, line in reader.lines)
        check_json_run(["--json", *args], stdout, proc.returncode)
        events = ProcessRun(0, stdout, "", 0).events()
        first = reader.lines[0][0] if reader.lines else ended
        times = [at for at, line in reader.lines if line.startswith("{")]
        out.append(RaceRun(proc.returncode, events, reader.stderr(), first, ended,
                           times if len(times) == len(events) else []))
    return out
