"""Reading snapshots back: list the committed ones, open one, stream its artifacts, verify it.

A folder without `COMMITTED` is invisible here: only `snapshots gc` looks at those.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

from drtool.adapters import age as agea
from drtool.adapters import s3 as s3a
from drtool.core import manifest as mf
from drtool.core.keys import SNAPSHOT_ID, UnsafeKey, check_snapshot_id
from drtool.core.object_lock import recorded_until
from drtool.errors import NotFoundError, UsageError, VerificationFailed
from drtool.ops.snapshot.destination import Destination, destination_store

log = logging.getLogger("drtool.snapshot")


@dataclass
class SnapshotInfo:
    id: str
    committed: dict[str, Any]
    meta: dict[str, Any]
    verified: dict[str, Any] | None
    authentication: Any = None  # ops.snapshot.auth.Authentication, once `authenticate` has run

    @property
    def signed_by(self) -> str | None:
        """The key id COMMITTED claims (checked only by `authenticate`, against snapshot.trusted_keys)."""
        signature = self.committed.get("signature")
        key_id = signature.get("key_id") if isinstance(signature, dict) else None
        return key_id if isinstance(key_id, str) and len(key_id) == 16 and key_id.isalnum() else None

    @property
    def fence(self) -> datetime:
        return datetime.fromisoformat(self.meta["fence"])

    @property
    def retain_until(self) -> str | None:
        """The Object Lock date meta.json recorded, re-formatted (a parsed date, never the raw string)."""
        until = recorded_until(self.meta)
        return until.isoformat() if until else None

    @property
    def encrypted(self) -> bool:
        return bool(self.meta.get("encryption"))

    @property
    def size(self) -> int:
        b = self.meta.get("bytes", {})
        return int(b.get("dump", 0)) + int(b.get("manifest", 0)) + int(b.get("plugin_dump", 0)) \
            + int(b.get("stores", 0))

    def summary(self) -> dict[str, Any]:
        counts = self.meta.get("counts", {})
        return {
            "id": self.id, "fence": self.meta.get("fence"), "committed_at": self.committed.get("committed_at"),
            "age_s": int((datetime.now(UTC) - self.fence).total_seconds()), "bytes": self.size,
            "pinned": counts.get("pinned", 0), "dangling": counts.get("dangling", 0),
            "database": self.meta.get("database", {}).get("name"), "encrypted": self.encrypted,
            "signed_by": self.signed_by,
            "retain_until": self.retain_until,
            "verified": None if not self.verified else
            {"ok": self.verified.get("ok"), "deep": self.verified.get("deep"), "at": self.verified.get("at")},
        }


def _get_json(dest: Destination, key: str, what: str) -> dict[str, Any] | None:
    try:
        data = s3a.get_bytes(dest.client, dest.bucket, key)
    except s3a.ObjectTooLarge as exc:  # planted, never drtool's: unreadable like invalid JSON, not a crash
        log.warning("%s", exc)
        return {"_corrupt": True}
    except Exception as exc:
        err = dest.s3_error(exc, what)
        if isinstance(err, NotFoundError):
            return None
        raise err from None
    try:
        return mf.parse_json_object(data, what)
    except ValueError:
        return {"_corrupt": True}


def folder_ids(dest: Destination) -> list[str]:
    """Every snapshot folder (committed or not), oldest first."""
    try:
        prefixes = list(s3a.iter_keys(dest.client, dest.bucket, dest.snapshots_prefix, delimiter="/"))
    except Exception as exc:
        raise dest.s3_error(exc, f"listing {dest.url}") from None
    ids = [p[len(dest.snapshots_prefix):].rstrip("/") for p in prefixes]
    return sorted(i for i in ids if SNAPSHOT_ID.match(i))


def _valid_time(value: Any) -> bool:
    """An ISO date-time with a zone, as drtool writes the fence; anything else marks meta.json corrupt."""
    try:
        return isinstance(value, str) and datetime.fromisoformat(value).tzinfo is not None
    except ValueError:
        return False


def load(dest: Destination, snapshot_id: str) -> SnapshotInfo | None:
    """A committed snapshot, or None when the folder has no (readable) COMMITTED marker."""
    folder = dest.folder(snapshot_id)
    committed = _get_json(dest, folder + mf.COMMITTED, f"{snapshot_id}/{mf.COMMITTED}")
    if committed is None:
        return None
    meta = _get_json(dest, folder + mf.META, f"{snapshot_id}/{mf.META}") or {}
    if meta.get("_corrupt") or not _valid_time(meta.get("fence")):  # a forged newer meta.json must not crash list
        meta = {"id": snapshot_id, "fence": mf.snapshot_time(snapshot_id).isoformat(), "_corrupt": True}
    verified = _get_json(dest, folder + mf.VERIFIED, f"{snapshot_id}/{mf.VERIFIED}")
    return SnapshotInfo(id=snapshot_id, committed=committed, meta=meta, verified=verified)


def list_snapshots(dest: Destination) -> list[SnapshotInfo]:
    """Committed snapshots, newest first. An id tells the second it was taken in; two snapshots of the same second
    (cron and an operator's manual run) are ordered by their fence, so `latest` is the one taken last."""
    out = [info for sid in reversed(folder_ids(dest)) if (info := load(dest, sid)) is not None]
    return sorted(out, key=_newest_first_key, reverse=True)


def _newest_first_key(info: SnapshotInfo) -> tuple[str, datetime]:
    try:
        fence = info.fence
    except (KeyError, TypeError, ValueError):  # a record without a readable fence sorts first in its second
        fence = datetime.min.replace(tzinfo=UTC)
    return info.id.split("-", 1)[0], fence


def resolve(dest: Destination, ref: str) -> SnapshotInfo:
    """`latest` or a snapshot id -> the committed snapshot; NotFoundError (exit 10) otherwise."""
    if ref == "latest":
        snaps = list_snapshots(dest)
        if not snaps:
            raise NotFoundError(f"no committed snapshot in {dest.url}", hint="run `drtool snapshot create`")
        return snaps[0]
    try:
        check_snapshot_id(ref)
    except UnsafeKey as exc:
        raise UsageError(str(exc)) from None
    info = load(dest, ref)
    if info is None:
        raise NotFoundError(f"snapshot {ref} does not exist in {dest.url} (or was never committed)",
                            hint="`drtool snapshots list` shows the committed snapshots")
    return info


class HashingReader:
    """Wraps a readable stream and hashes what passes through."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self.sha256 = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n if n is not None and n >= 0 else 1 << 20)
        self.sha256.update(data)
        self.size += len(data)
        return data

    def readable(self) -> bool:
        return True

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


def open_artifact(dest: Destination, snapshot_id: str, name: str) -> HashingReader:
    """A hashing stream of one artifact; a missing one is NotFound, a cut body an UnavailableError from read()."""
    return HashingReader(destination_store(dest).open(dest.folder(snapshot_id) + name))


class DecryptingReader:
    """A readable plaintext stream over an age-encrypted one (decryption runs in a thread through a pipe)."""

    def __init__(self, source: Any, identities: list[Any], what: str) -> None:
        read_fd, write_fd = os.pipe()
        self._reader = os.fdopen(read_fd, "rb")
        self._writer = os.fdopen(write_fd, "wb")
        self.error: BaseException | None = None

        def run() -> None:
            try:
                agea.decrypt_stream(source, self._writer, identities, what=what)
            except BaseException as exc:
                self.error = exc
            finally:
                with contextlib.suppress(OSError):
                    self._writer.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def read(self, n: int = -1) -> bytes:
        return self._reader.read(n)

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._reader.close()
        self._thread.join(timeout=60)
        if self.error:
            raise self.error

    def finish(self) -> None:
        self._thread.join()
        if self.error:
            raise self.error


def plaintext(reader: HashingReader, info: SnapshotInfo, identities: list[Any] | None, what: str) -> Any:
    if not info.encrypted:
        return reader
    if not identities:
        raise UsageError(f"snapshot {info.id} is encrypted: {what} needs the age identity",
                         hint="pass --identity KEYFILE (the private key of a recipient)")
    return DecryptingReader(reader, identities, what)


def spool_verified(dest: Destination, info: SnapshotInfo, name: str, expected: str | None) -> IO[bytes]:
    """The artifact downloaded once into an anonymous temporary file and checked against its checksum.

    Every later pass reads this copy, so what was checked is what is used: a second GET could be answered with other
    bytes by whoever can write the bucket in between. The file is gone when closed (or when the process dies).
    """
    local = tempfile.TemporaryFile(prefix="drtool-artifact-")  # noqa: SIM115 - returned to the caller, who closes it
    try:
        reader = open_artifact(dest, info.id, name)
        while chunk := reader.read(1 << 20):  # a body cut mid-way raises UnavailableError: not a tampering
            local.write(chunk)
        if reader.sha256.hexdigest() != expected:
            raise VerificationFailed(f"snapshot {info.id}: {name} checksum mismatch (nothing was changed)",
                                     hint="run `drtool snapshots verify`; restore another snapshot")
        local.seek(0)
    except BaseException:
        local.close()
        raise
    return local


def local_records(local: IO[bytes], info: SnapshotInfo, identities: list[Any] | None) -> Iterator[mf.ManifestRecord]:
    """Manifest records out of a spooled, verified copy (see spool_verified), from its start."""
    name = info.meta.get("artifacts", {}).get("manifest", mf.MANIFEST)
    local.seek(0)
    stream = plaintext(HashingReader(local), info, identities, f"{info.id}/{name}")
    yield from mf.read_manifest(stream)
    if isinstance(stream, DecryptingReader):
        stream.finish()


def iter_records(dest: Destination, info: SnapshotInfo, identities: list[Any] | None
                 ) -> tuple[Iterator[mf.ManifestRecord], HashingReader]:
    name = info.meta.get("artifacts", {}).get("manifest", mf.MANIFEST)
    raw = open_artifact(dest, info.id, name)
    stream = plaintext(raw, info, identities, f"{info.id}/{name}")

    def records() -> Iterator[mf.ManifestRecord]:
        yield from mf.read_manifest(stream)
        if isinstance(stream, DecryptingReader):
            stream.finish()

    return records(), raw


def expected_sums(dest: Destination, info: SnapshotInfo) -> dict[str, str]:
    """SHA256SUMS after checking it against the digest the COMMITTED marker carries."""
    folder = dest.folder(info.id)
    try:
        data = s3a.get_bytes(dest.client, dest.bucket, folder + mf.SUMS)
    except Exception as exc:
        err = dest.s3_error(exc, f"{info.id}/{mf.SUMS}")
        if isinstance(err, NotFoundError):
            raise VerificationFailed(f"snapshot {info.id}: {mf.SUMS} is missing",
                                     hint="the snapshot cannot be trusted; take a new one") from None
        raise err from None
    if hashlib.sha256(data).hexdigest() != info.committed.get("sha256sums"):
        raise VerificationFailed(f"snapshot {info.id}: {mf.SUMS} does not match the digest in {mf.COMMITTED}",
                                 hint="the snapshot cannot be trusted; take a new one")
    try:
        return mf.parse_sums(data)
    except ValueError as exc:
        raise VerificationFailed(f"snapshot {info.id}: {exc}") from None


def check_object(client: Any, bucket: str, rec: mf.ManifestRecord) -> str | None:
    head = s3a.head_or_none(client, bucket, rec.copy_key or rec.key,
                            version_id=None if rec.copy_key else rec.version_id)
    where = f"object {rec.key} (version {rec.version_id})"
    if head is None:
        return f"{where}: missing"
    etag = (head.get("ETag") or "").strip('"')
    if rec.size is not None and head.get("ContentLength") != rec.size:
        return f"{where}: size {head.get('ContentLength')} != {rec.size}"
    if rec.etag and not rec.copy_key and etag != rec.etag:
        return f"{where}: etag {etag} != {rec.etag}"
    return None


def bounded_map(fn: Callable[[Any], Any], items: Iterable[Any], workers: int, window: int = 512) -> Iterator[Any]:
    """Like executor.map, but never more than `window` items in flight: memory stays flat on huge manifests."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending: list[Any] = []
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= window:
                yield from (f.result() for f in pending[: window // 2])
                del pending[: window // 2]
        yield from (f.result() for f in pending)



def confinement_problems(dest: Destination, info: SnapshotInfo, records: Iterable[mf.ManifestRecord], name: str,
                          limit: int = 20) -> list[str]:
    """Every record that is not confined to its snapshot folder or source prefix, as `broken` lines (at most
    `limit` named, then a count); an unreadable manifest is one line."""
    folder = dest.folder(info.id)
    key_prefix = str(info.meta.get("source", {}).get("key_prefix") or "")
    return mf.tampered_lines(name, records, lambda rec: mf.confinement_problem(
        rec, snapshot_folder=folder, key_prefix=key_prefix), limit)

