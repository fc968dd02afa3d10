"""Decompression bombs through drtool's readers: peak RSS and time, before (baseline) and after the fix.

    .venv/bin/python -m bench.bombs.run                    # 1 GiB bombs (the figures in bench/results/bombs.md)
    .venv/bin/python -m bench.bombs.run --size-mib 256     # quicker
    .venv/bin/python -m bench.bombs.run --timeout 120      # give up on a baseline run after 120 s

A bomb is N MiB of zero bytes without a newline, compressed: zstd level 19 (~32 KiB per GiB) and gzip level 9
(~1 MiB per GiB). Each (reader, bomb) pair runs in a fresh process; the parent samples that process's VmHWM (peak
resident set) from /proc while it runs, so a baseline run that is stopped at --timeout still reports its peak.

- `chunks` is drtool.core.chunks.iter_lines as rebuild-index and verify --deep call it (every line is consumed,
  as those commands do when --max-rejects lets them go on); `chunks (baseline)` is the code before the fix,
  copied below (_OldZstdRaw / _old_iter_lines): decompressobj() returns the whole output of each 64 KiB of input at
  once and the buffer is re-sliced per read.
- `manifest` is drtool.core.manifest.read_manifest (manifests are zstd only); `manifest (baseline)` is the old
  body, which iterated the BufferedReader's lines without a limit.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench" / "results"
READERS = ("chunks (baseline)", "chunks", "manifest (baseline)", "manifest")
NOTE = ("The baseline zstd chunk reader's time grows with the square of the output (each 1 MiB read re-copied the "
        "rest of a buffer holding all of it) and its memory with the output: `--size-mib 128 --name bombs-128mib` "
        "gives a baseline run that finishes (bench/results/bombs-128mib.md). The fixed readers hold at most one "
        "16 MiB line plus a 1 MiB buffer, and stop reading a manifest at its first over-long line. gzip was "
        "bounded before (GzipFile asks zlib for at most 8 KiB per read); what changed for it is that an over-long "
        "line is one rejection (the rest is dropped) instead of one rejection per 16 MiB piece.")


# --- the code before the fix, kept verbatim as the baseline ------------------------------------------------------

class _OldZstdRaw(io.RawIOBase):
    def __init__(self, stream: IO[bytes], zstandard: Any) -> None:
        super().__init__()
        self._stream = stream
        self._zstd = zstandard
        self._obj = zstandard.ZstdDecompressor().decompressobj()
        self._fed = False
        self._buffer = b""
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._buffer and not self._done:
            data = self._stream.read(1 << 16)
            if not data:
                self._done = True
                if self._fed and not self._obj.eof:
                    raise EOFError("zstd stream ends inside a frame")
                break
            while data:
                if self._obj.eof:
                    self._obj = self._zstd.ZstdDecompressor().decompressobj()
                    self._fed = False
                self._fed = True
                self._buffer += self._obj.decompress(data)
                data = self._obj.unused_data if self._obj.eof else b""
        n = min(len(buffer), len(self._buffer))
        buffer[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n


def _old_iter_lines(stream: IO[bytes], compression: str) -> Iterator[bytes]:
    import zstandard

    from drtool.core.chunks import MAX_LINE_BYTES

    reader: IO[bytes]
    if compression == "gzip":
        reader = gzip.GzipFile(fileobj=stream, mode="rb")
    else:
        reader = io.BufferedReader(_OldZstdRaw(stream, zstandard), buffer_size=1 << 20)
    while True:
        try:
            raw = reader.readline(MAX_LINE_BYTES + 1)
        except (OSError, EOFError, zlib.error, ValueError):
            return
        if not raw:
            return
        yield raw


def _old_read_manifest(source: IO[bytes]) -> Iterator[Any]:
    import zstandard

    from drtool.core.manifest import ManifestRecord

    try:
        reader = zstandard.ZstdDecompressor().stream_reader(source, closefd=False)
        text = io.BufferedReader(reader, buffer_size=1 << 16)  # type: ignore[arg-type]
        for lineno, line in enumerate(text, 1):
            if line.strip():
                yield ManifestRecord.from_line(line, lineno)
    except zstandard.ZstdError as exc:
        raise ValueError(f"manifest is not valid zstd data ({exc})") from None


# --- one measurement, in a child process ---------------------------------------------------------------------------

def _child(reader: str, path: str, compression: str) -> None:
    from drtool.core.chunks import CorruptStream, iter_lines, parse_lines
    from drtool.core.manifest import read_manifest

    t = time.monotonic()
    lines = longest = 0
    outcome = "read to the end"
    with open(path, "rb") as raw:
        stream = io.BufferedReader(raw, 1 << 20)
        try:
            if reader == "chunks":
                items = parse_lines(iter_lines(stream, compression, path), path)  # type: ignore[arg-type]
                for item in items:
                    lines += 1
                    if hasattr(item, "reason"):
                        outcome = f"rejected: {item.reason}"  # type: ignore[union-attr]
            elif reader == "chunks (baseline)":
                for line in _old_iter_lines(stream, compression):
                    lines += 1
                    longest = max(longest, len(line))
            elif reader == "manifest":
                for _ in read_manifest(stream):
                    lines += 1
            else:
                for _ in _old_read_manifest(stream):
                    lines += 1
        except (ValueError, CorruptStream) as exc:
            outcome = f"{type(exc).__name__}: {exc}"
    print(json.dumps({"seconds": round(time.monotonic() - t, 2), "lines": lines, "outcome": outcome[:160]}))


def _vmhwm_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _measure(reader: str, path: Path, compression: str, timeout: float) -> dict[str, Any]:
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "bench.bombs.run", "--child", reader, str(path), compression],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _vmhwm_kib(proc.pid))
        if time.monotonic() - start > timeout:
            proc.kill()
            proc.wait()
            return {"seconds": None, "peak_rss_mib": round(peak / 1024, 1), "lines": None,
                    "outcome": f"stopped after {timeout:.0f} s, still reading"}
        time.sleep(0.05)
    out, err = proc.communicate()
    if proc.returncode != 0:
        return {"seconds": None, "peak_rss_mib": round(peak / 1024, 1), "lines": None,
                "outcome": f"exit {proc.returncode}: {err.strip()[-200:]}"}
    return {**json.loads(out.strip().splitlines()[-1]), "peak_rss_mib": round(peak / 1024, 1)}


def _make_bombs(folder: Path, size_mib: int) -> dict[str, Path]:
    import zstandard

    block = b"\0" * (1 << 20)
    paths = {"zstd": folder / "bomb.jsonl.zst", "gzip": folder / "bomb.jsonl.gz"}
    with open(paths["zstd"], "wb") as out, zstandard.ZstdCompressor(level=19).stream_writer(out) as w:
        for _ in range(size_mib):
            w.write(block)
    with open(paths["gzip"], "wb") as out, gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9, mtime=0) as g:
        for _ in range(size_mib):
            g.write(block)
    return paths


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(*sys.argv[2:5])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024, help="decompressed size of each bomb")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds before a run is stopped")
    parser.add_argument("--name", default="bombs", help="results file names: bench/results/<name>.md/.json")
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bombs-") as tmp:
        bombs = _make_bombs(Path(tmp), args.size_mib)
        for compression, path in bombs.items():
            for reader in READERS:
                if reader.startswith("manifest") and compression != "zstd":
                    continue  # manifests are zstd only
                result = _measure(reader, path, compression, args.timeout)
                rows.append({"reader": reader, "compression": compression, "bomb_bytes": path.stat().st_size,
                             "output_mib": args.size_mib, **result})
                print(json.dumps(rows[-1]), flush=True)
    meta = {"command": f"python -m bench.bombs.run --size-mib {args.size_mib} --timeout {args.timeout:.0f}"
                       + (f" --name {args.name}" if args.name != "bombs" else ""),
            "machine": f"{platform.machine()}, {os.cpu_count()} cpus, Python {platform.python_version()}",
            "at": datetime.now(UTC).isoformat(timespec="seconds")}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps({**meta, "rows": rows}, indent=1) + "\n")
    lines = [
        "# Decompression bombs: peak memory and time of drtool's readers",
        "",
        f"`{meta['command']}` on {meta['machine']}, {meta['at']}.",
        "",
        f"Each bomb is {args.size_mib} MiB of zero bytes with no newline, compressed (zstd level 19, gzip level 9). "
        "Peak RSS is the reading process's VmHWM (Python, drtool and its imports included: ~30-40 MiB of it is the "
        "interpreter). `baseline` is the code before the fix (copied in bench/bombs/run.py).",
        "",
        "| reader | bomb | compressed size | peak RSS (MiB) | time (s) | outcome |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        size = f"{r['bomb_bytes'] / 1024:.0f} KiB"
        secs = "-" if r["seconds"] is None else f"{r['seconds']:.2f}"
        lines.append(f"| {r['reader']} | {r['compression']} | {size} | {r['peak_rss_mib']} | {secs} | "
                     f"{str(r['outcome']).replace('|', '/')} |")
    lines += ["", NOTE]
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS / args.name}.md")


if __name__ == "__main__":
    main()
