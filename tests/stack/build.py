"""Build (once) and cache the Go servers of the test stack: MinIO, mc, Weaviate and toxiproxy.

None of them can be downloaded as a prebuilt binary here, so they are built from the Go module proxy with
``CGO_ENABLED=0 go install package@version``. A build takes minutes cold (mostly Go compiling MinIO's and
Weaviate's dependencies), so the result is cached OUTSIDE the repository, where every clone and CI run on the
machine can reuse it:

    ${DRTOOL_CACHE_DIR:-~/.cache/drtool}/bin/<name>-<version>

A file lock makes concurrent sessions wait for one build instead of racing. Go's own module and build caches
(~/go/pkg/mod, ~/.cache/go-build) make a rebuild after a cache wipe fast.

Run ``python -m tests.stack.build`` before pytest (``make test`` does) so the one-time build shows its
progress in the terminal instead of inside a fixture. Pass tool names (minio, mc, weaviate-server,
toxiproxy) to build only those.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from tests.stack.versions import GO_TOOLS, GoTool

__all__ = ["BuildError", "binary_path", "cache_dir", "ensure_go_binary", "main"]


class BuildError(RuntimeError):
    """``go install`` failed or Go is missing; the message has the last lines of Go's output."""


def cache_dir() -> Path:
    """The drtool cache folder: $DRTOOL_CACHE_DIR, else ~/.cache/drtool."""
    configured = os.environ.get("DRTOOL_CACHE_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "drtool"


def binary_path(tool: GoTool) -> Path:
    """Where the cached binary of `tool` lives (whether or not it is built yet)."""
    return cache_dir() / "bin" / f"{tool.name}-{tool.version}"


def _find_go() -> str:
    """The go command: on PATH, else the usual /usr/local/go install."""
    found = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").is_file() else None)
    if found is None:
        raise BuildError(
            "the Go toolchain is needed to build the test servers (MinIO, mc, Weaviate) but `go` is not on "
            "PATH "
            "and /usr/local/go/bin/go does not exist; install Go >= 1.24"
        )
    return found


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on `path` (created if needed) for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _usable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def ensure_go_binary(tool: GoTool, *, out: TextIO | None = None) -> Path:
    """Return the path of `tool`'s cached binary, building it first if it is not there yet.

    Build progress (Go's output, one package per line) is streamed to `out` (default: stderr) under a header
    line, because a cold build takes long enough that silence would look like a hang.
    """
    target = binary_path(tool)
    if _usable(target):
        return target
    stream = out if out is not None else sys.stderr
    with _locked(target.parent / f".{tool.name}.lock"):
        if _usable(target):  # another session built it while we waited for the lock
            return target
        go = _find_go()
        stream.write(f"building {tool.name} {tool.version} (one-time, cached in {target.parent})\n")
        stream.flush()
        started = time.monotonic()
        gobin = Path(tempfile.mkdtemp(prefix=f".{tool.name}-build-", dir=target.parent))
        env = dict(os.environ, CGO_ENABLED="0", GOBIN=str(gobin))
        recent: deque[str] = deque(maxlen=30)
        try:
            proc = subprocess.Popen(  # fixed argv
                [go, "install", "-v", tool.spec],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                text=True,
                bufsize=1,
            )
            assert proc.stdout is not None
            for line in proc.stdout:
                recent.append(line.rstrip("\n"))
                stream.write(f"  [go {tool.name}] {line}")
                stream.flush()
            code = proc.wait()
            built = gobin / tool.binary
            if code != 0 or not built.is_file():
                raise BuildError(
                    f"`go install {tool.spec}` failed (exit {code}); last output:\n" + "\n".join(recent)
                )
            os.replace(built, target)  # same filesystem: atomic, no half-written binary is ever visible
        finally:
            shutil.rmtree(gobin, ignore_errors=True)
        stream.write(f"built {tool.name} {tool.version} in {time.monotonic() - started:.0f} s: {target}\n")
        stream.flush()
    return target


def main(argv: list[str] | None = None) -> int:
    """Build or reuse every Go binary of the test stack (or the named ones); print where they are."""
    parser = argparse.ArgumentParser(prog="python -m tests.stack.build", description=__doc__.splitlines()[0])
    parser.add_argument(
        "names", nargs="*", help="tools to build (default: all): " + ", ".join(t.name for t in GO_TOOLS)
    )
    args = parser.parse_args(argv)
    wanted = set(args.names) or {t.name for t in GO_TOOLS}
    unknown = wanted - {t.name for t in GO_TOOLS}
    if unknown:
        parser.error(f"unknown tool(s): {', '.join(sorted(unknown))}")
    for tool in GO_TOOLS:
        if tool.name not in wanted:
            continue
        try:
            path = ensure_go_binary(tool)
        except BuildError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"{tool.name} {tool.version}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
