"""One lifecycle for every server process of the test stack.

Every service (Postgres, MinIO, SeaweedFS, Weaviate, Redis, ``weed filer.sync``) is started the same way: its
stdout and stderr go to a log file in the session's temporary folder, readiness is polled with a bounded
timeout that fails fast when the process dies, and stopping is "polite signal, wait, then SIGKILL". Keeping
this in one place means a startup failure always reads the same way: what did not become ready, within how
long, and the tail of the server's own log, which is where the real reason is.

Safety nets, so a crashed or interrupted session does not leave servers behind on a shared machine:
- each child gets PR_SET_PDEATHSIG=SIGKILL, so it dies when the pytest process dies, even by SIGKILL;
- an ``atexit`` hook stops whatever is still running when the interpreter exits.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

__all__ = ["ManagedProcess", "StackStartError", "interruptible", "log_tail", "stop_all", "wait_ready"]

_PR_SET_PDEATHSIG = 1

try:  # Resolved once in the parent: the child only makes one plain libc call before exec.
    _prctl: Callable[..., int] | None = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux
    _prctl = None


def _die_with_parent() -> None:
    """Runs in the child between fork and exec: ask the kernel to SIGKILL it when pytest goes away."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


class StackStartError(RuntimeError):
    """A test service did not start or did not become ready; the message carries its log tail."""


def interruptible() -> None:
    """preexec_fn for a child that a test interrupts with SIGINT as Ctrl-C would: a shell without job control
    starts background commands (a CI run launched with `&`) with SIGINT ignored, children inherit that, and Python
    then installs no KeyboardInterrupt handler, so the signal would never arrive."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def log_tail(path: Path, lines: int = 40) -> str:
    """Return the last `lines` lines of a log file (or a note that it is missing), for error messages."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"(no log at {path}: {exc})"
    text = data[-64_000:].decode("utf-8", errors="replace")
    tail = text.splitlines()[-lines:]
    return "\n".join(tail) if tail else "(log is empty)"


_live: set[ManagedProcess] = set()
_live_lock = threading.Lock()


@dataclass(eq=False)
class ManagedProcess:
    """A long-running server started from argv, logging to `log_path`, restartable with the same argv.

    `stop_signal` is the signal that asks the program for a clean shutdown (SIGTERM for most, SIGINT for
    Postgres's "fast" shutdown); after `stop_timeout` seconds the whole process group gets SIGKILL.
    `user` runs the program as that system user (Postgres refuses to run as root).
    """

    name: str
    argv: Sequence[str]
    log_path: Path
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    user: str | None = None
    stop_signal: signal.Signals = signal.SIGTERM
    stop_timeout: float = 30.0
    _popen: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _log: IO[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def pid(self) -> int | None:
        """The server's pid while it runs."""
        return self._popen.pid if self._popen is not None else None

    def running(self) -> bool:
        """True while the process has not exited."""
        return self._popen is not None and self._popen.poll() is None

    def returncode(self) -> int | None:
        """Exit status once the process has exited, else None."""
        return None if self._popen is None else self._popen.poll()

    def start(self) -> None:
        """Start the program (again, after stop()); output is appended to the log file."""
        if self.running():
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - kept open while the server runs, closed in stop()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        self._log.write(f"\n===== {stamp} start {self.name}: {' '.join(self.argv)}\n".encode())
        self._log.flush()
        # Switch user only when we are root; extra_groups=[] drops root's supplementary groups too.
        as_user = self.user if self.user is not None and os.geteuid() == 0 else None
        self._popen = subprocess.Popen(  # argv built by the test stack itself
            list(self.argv),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=dict(self.env) if self.env is not None else None,
            cwd=self.cwd,
            start_new_session=True,  # own process group: Ctrl-C in the terminal does not hit it mid-test
            preexec_fn=_die_with_parent,  # one prctl call, no Python-level locks
            user=as_user,
            group=as_user,
            extra_groups=[] if as_user is not None else None,
        )
        with _live_lock:
            _live.add(self)

    def wait_ready(self, predicate: Callable[[], bool], timeout: float, what: str = "ready") -> None:
        """Block until predicate() is true; see the module-level wait_ready."""
        wait_ready(predicate, timeout, self, what=what)

    def request_stop(self) -> None:
        """Send `stop_signal` without waiting (stop_all uses it to shut several servers down in parallel)."""
        if self._popen is not None and self._popen.poll() is None:
            self._popen.send_signal(self.stop_signal)

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server: `stop_signal`, wait up to `stop_timeout`, then SIGKILL its process group.

        `kill=True` skips the polite part, to simulate a crash.
        """
        popen = self._popen
        if popen is not None and popen.poll() is None:
            if not kill:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    popen.send_signal(self.stop_signal)
                    popen.wait(timeout=self.stop_timeout)
            if popen.poll() is None:
                # The whole group: children of the server (e.g. Postgres backends) must not outlive it.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(popen.pid, signal.SIGKILL)
                popen.wait(timeout=30)
        if self._log is not None:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            code = popen.returncode if popen is not None else None
            self._log.write(f"===== {stamp} stopped {self.name} (exit {code})\n".encode())
            self._log.close()
            self._log = None
        with _live_lock:
            _live.discard(self)

    def tail(self, lines: int = 40) -> str:
        """The last lines of this server's log."""
        if self._log is not None:
            self._log.flush()
        return log_tail(self.log_path, lines)


def stop_all(procs: Sequence[ManagedProcess]) -> None:
    """Stop several servers at once: signal all, then wait for each (SeaweedFS takes ~15 s per process)."""
    for proc in procs:
        proc.request_stop()
    for proc in procs:
        proc.stop()


def wait_ready(
    predicate: Callable[[], bool],
    timeout: float,
    proc: ManagedProcess | None = None,
    *,
    what: str = "ready",
) -> None:
    """Poll predicate() until it returns true, for at most `timeout` seconds.

    Exceptions from the predicate count as "not yet" (a connection refused is the normal answer while a server
    boots), and the last one is quoted if time runs out. When `proc` exits meanwhile we stop at once instead
    of waiting out the timeout. Either failure raises StackStartError with the tail of the server's log.
    """
    name = proc.name if proc is not None else "service"
    deadline = time.monotonic() + timeout
    delay = 0.05
    last_error: BaseException | None = None
    while True:
        if proc is not None and not proc.running():
            raise StackStartError(
                f"{name} exited with code {proc.returncode()} before it was {what}.\n"
                f"--- last lines of {proc.log_path} ---\n{proc.tail()}"
            )
        try:
            if predicate():
                return
            last_error = None
        except Exception as exc:  # any failure means "not ready yet"
            last_error = exc
        if time.monotonic() >= deadline:
            because = (
                f" (last check failed with {type(last_error).__name__}: {last_error})" if last_error else ""
            )
            log = f"\n--- last lines of {proc.log_path} ---\n{proc.tail()}" if proc is not None else ""
            raise StackStartError(f"{name} was not {what} within {timeout:.0f} s{because}.{log}")
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)


@atexit.register
def _stop_leftovers() -> None:
    """Last resort at interpreter exit: stop servers whose fixture teardown never ran."""
    with _live_lock:
        leftovers = list(_live)
    for proc in leftovers:
        proc.stop()
