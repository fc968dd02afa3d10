"""`replication verify --read-data PCT`: download a reproducible subset of versions from both sites and hash them.

A listing proves that both sites *say* they hold a version with the same ETag; it cannot see a part file that
rotted on a disk. Like restic's `check --read-data-subset`, a percentage of the versions is read in full on both
sites: the two hashes must agree, and where the ETag is a content hash (single-part uploads: 32 hex digits) it
must equal the MD5 of the bytes. Which versions are read depends only on the seed and the version's identity
(key and version id), so a run can be repeated exactly with `--seed`, and successive runs with different seeds
cover different versions. `--max-rate` caps the bytes per second read from both sites together.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from drtool import wiring
from drtool.adapters import s3 as s3_adapter
from drtool.errors import DrtoolError, Unreachable
from drtool.ops.replication.sites import Site, site_error

__all__ = ["ReadDataResult", "Throttle", "read_subset", "selected"]

_CHUNK = 256 * 1024
_WORKERS = 4
_FATAL = ("EndpointConnectionError", "ConnectTimeoutError")  # a site that cannot be reached: stop, not a finding
_MD5_ETAG = re.compile(r"[0-9a-f]{32}")


def selected(seed: int, key: str, version_id: str | None, percent: float) -> bool:
    """True when this version is in the seed's subset; stable across runs and listing orders."""
    digest = hashlib.blake2b(f"{seed}\0{key}\0{version_id or 'null'}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") < percent / 100.0 * 2**64


class Throttle:
    """A shared bytes-per-second limit (token bucket with one second of burst); None: unlimited."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self._lock = threading.Lock()
        self._next = time.monotonic()

    def take(self, nbytes: int) -> None:
        if not self.rate:
            return
        with self._lock:
            now = time.monotonic()
            start = max(self._next, now - 1.0)
            self._next = start + nbytes / self.rate
            delay = self._next - now - 1.0
        if delay > 0:
            time.sleep(delay)


@dataclass
class ReadDataResult:
    percent: float
    seed: int
    selected: int = 0
    read: int = 0
    bytes_read: int = 0
    unreadable: int = 0
    differing: int = 0
    problems: list[dict[str, Any]] = field(default_factory=list)  # the first few, for the operator

    @property
    def failed(self) -> bool:
        return self.unreadable > 0 or self.differing > 0

    def to_dict(self) -> dict[str, Any]:
        return {"percent": self.percent, "seed": self.seed, "selected": self.selected, "read": self.read,
                "bytes_read": self.bytes_read, "unreadable": self.unreadable, "differing": self.differing,
                "problems": list(self.problems)}


def _digest(client: Any, bucket: str, key: str, version_id: str | None, throttle: Throttle
            ) -> tuple[str, str, int]:
    """(md5, sha256, size) of one version's bytes, read in chunks under the throttle."""
    store = wiring.bucket_over(client, bucket)
    body = store.open(key, version_id=version_id if version_id and version_id != "null" else None)
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    size = 0
    try:
        while chunk := body.read(_CHUNK):
            throttle.take(len(chunk))
            md5.update(chunk)
            sha.update(chunk)
            size += len(chunk)
    finally:
        body.close()
    return md5.hexdigest(), sha.hexdigest(), size


def read_subset(src: Any, dst: Any, source: Site, target: Site, bucket: str, prefix: str, mode: str,
                settle_before: datetime, *, percent: float, seed: int | None, max_rate: float | None,
                tls: bool | str, timeout: float, examples: int = 10) -> ReadDataResult:
    """Read the seed's subset of settled versions on both sites; count unreadable and differing ones."""
    seed = seed if seed is not None else int.from_bytes(hashlib.sha256(str(time.time_ns()).encode()).digest()[:4],
                                                        "big")
    result = ReadDataResult(percent=percent, seed=seed)
    throttle = Throttle(max_rate)
    lock = threading.Lock()
    versions = mode == "versions"

    def problem(kind: str, item: dict[str, Any], detail: str) -> None:
        with lock:
            if kind == "unreadable":
                result.unreadable += 1
            else:
                result.differing += 1
            if len(result.problems) < examples:
                result.problems.append({"kind": kind, "key": item["Key"], "version_id": item.get("VersionId"),
                                        "detail": detail})

    def check(item: dict[str, Any]) -> None:
        key, vid = item["Key"], item.get("VersionId") if versions else None
        sums: list[tuple[str, str, int]] = []
        for client, site in ((src, source), (dst, target)):
            try:
                sums.append(_digest(client, bucket, key, vid, throttle))
            except Unreachable as exc:
                if exc.code not in _FATAL:  # a read timed out mid-body: this version's problem
                    problem("unreadable", item, f"site {site.alias}: {exc.code}")
                    return
                raise site_error(exc, site, f"reading {bucket}/{key}") from None
            except Exception as exc:  # a rotten part, a truncated answer, a 404 or 500 for this version
                code = exc.code if isinstance(exc, DrtoolError) and exc.code else type(exc).__name__
                problem("unreadable", item, f"site {site.alias}: {code}")
                return
        (smd5, ssha, ssize), (_, dsha, dsize) = sums
        with lock:
            result.read += 1
            result.bytes_read += ssize + dsize
        if ssha != dsha:
            problem("differing", item, f"content differs between site {source.alias} and site {target.alias} "
                                       f"({ssize} and {dsize} bytes)")
            return
        etag = (item.get("ETag") or "").strip('"').lower()
        if _MD5_ETAG.fullmatch(etag) and smd5 != etag:
            problem("differing", item, f"bytes on both sites do not match the ETag {etag}")

    pool = ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="read-data")
    running: set[Future[None]] = set()

    def drain(limit: int) -> None:
        nonlocal running
        while len(running) > limit:
            done, running = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                fut.result()  # a fatal error (site unreachable) stops the read

    try:
        for page in s3_adapter.iter_listing_pages_fast(src, bucket, prefix, versions=versions, verify=tls,
                                                       timeout=timeout):
            for item in page:
                if item.get("IsDeleteMarker") or (not versions and not item.get("IsLatest", True)):
                    continue
                if item["LastModified"] > settle_before:
                    continue
                if not selected(seed, item["Key"], item.get("VersionId") if versions else None, percent):
                    continue
                result.selected += 1
                running.add(pool.submit(check, item))
                drain(_WORKERS * 2)  # bounded: memory does not grow with the subset
        drain(0)
    except DrtoolError:
        raise
    except Exception as exc:
        raise site_error(exc, source, f"listing bucket {bucket} for --read-data") from None
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return result
