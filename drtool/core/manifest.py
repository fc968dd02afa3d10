"""The snapshot's artifacts: manifest records, the version pinning rule, checksums and the commit marker.

A snapshot folder holds the dump, `manifest.jsonl.zst` (one JSON object per pinned object version), `meta.json`,
`SHA256SUMS` (sha256sum-compatible, over the bytes as stored, so checksums can be verified without the age key)
and `COMMITTED`, written last and carrying the checksum of `SHA256SUMS`: a folder without it does not exist.

Everything here streams: the manifest is written and read one record at a time through zstd, and version
listings are consumed as an iterator, so memory does not grow with the bucket.
"""

from __future__ import annotations

import io
import json
import secrets
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

import zstandard

from drtool.core.chunks import MAX_LINE_BYTES
from drtool.core.keys import UnsafeKey, check_key

DUMP = "db.dump"
MANIFEST = "manifest.jsonl.zst"
META = "meta.json"
SUMS = "SHA256SUMS"
COMMITTED = "COMMITTED"
VERIFIED = "verified.json"  # outcome of the last `snapshots verify`; not an artifact, not checksummed
AGE_SUFFIX = ".age"
MANIFEST_FORMAT = 1

_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)

STATE_PINNED = "pinned"  # a version existed at the fence: restore makes it current
STATE_DANGLING = "dangling"  # a row names the key but no version existed at the fence
STATE_REFUSED = "refused"  # the key could escape its folder (`../`, absolute, control characters)
STATE_CHANGED = "changed"  # unversioned bucket: the object changed after the fence, its old bytes are gone


def new_snapshot_id(now: datetime | None = None) -> str:
    """Sortable by time (newest last), unique across concurrent hosts by a random tail."""
    now = now or datetime.now(UTC)
    return now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def snapshot_time(snapshot_id: str) -> datetime:
    return datetime.strptime(snapshot_id.split("-", 1)[0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def artifact_name(base: str, encrypted: bool) -> str:
    return base + AGE_SUFFIX if encrypted else base


@dataclass(slots=True)
class ObjectVersion:
    """One entry of a version listing (an object version or a delete marker)."""

    key: str
    version_id: str
    last_modified: datetime
    is_latest: bool = False
    is_delete_marker: bool = False
    etag: str | None = None
    size: int | None = None


_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "key": str, "state": str, "version_id": str, "etag": str, "size": int, "last_modified": str,
    "referenced_by": list, "copy_key": str, "reason": str}


@dataclass
class ManifestRecord:
    key: str
    state: str
    version_id: str | None = None
    etag: str | None = None
    size: int | None = None
    last_modified: str | None = None
    referenced_by: list[str] = field(default_factory=list)
    copy_key: str | None = None  # unversioned buckets: where the copy inside the snapshot lives
    reason: str | None = None

    def to_line(self) -> bytes:
        # Built by hand: dataclasses.asdict deep-copies and was half the cost of a manifest line.
        data: dict[str, Any] = {"key": self.key, "state": self.state}
        for name in ("version_id", "etag", "size", "last_modified", "copy_key", "reason"):
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        if self.referenced_by:
            data["referenced_by"] = self.referenced_by
        return (_ENCODER.encode(data) + "\n").encode("utf-8")

    @classmethod
    def from_line(cls, line: bytes | str, lineno: int = 0) -> ManifestRecord:
        try:
            data = json.loads(line)
        except (ValueError, RecursionError) as exc:
            raise ValueError(f"manifest line {lineno}: not a manifest record ({type(exc).__name__})") from None
        if not isinstance(data, dict):
            raise ValueError(f"manifest line {lineno}: not a manifest record (a JSON {type(data).__name__})")
        # A wrongly typed field would only fail later, deep inside a restore: name it here instead.
        for name, value in data.items():
            kind = _FIELD_TYPES.get(name)
            if kind is None:
                raise ValueError(f"manifest line {lineno}: unknown field {name[:64]!r}")
            if value is None and name not in ("key", "state", "referenced_by"):
                continue
            if not isinstance(value, kind) or isinstance(value, bool) or (
                    name == "referenced_by" and not all(isinstance(v, str) for v in value)):
                raise ValueError(f"manifest line {lineno}: field '{name}' has the wrong type")
        if "key" not in data or "state" not in data:
            raise ValueError(f"manifest line {lineno}: field '{'state' if 'key' in data else 'key'}' is missing")
        if data["state"] == STATE_PINNED and not (data.get("version_id") or data.get("copy_key")):
            raise ValueError(f"manifest line {lineno}: field 'version_id' is missing from a pinned record")
        return cls(**data)

    @classmethod
    def pinned(cls, version: ObjectVersion, referenced_by: list[str]) -> ManifestRecord:
        return cls(key=version.key, state=STATE_PINNED, version_id=version.version_id, etag=version.etag,
                   size=version.size, last_modified=utc_text(version.last_modified),
                   referenced_by=referenced_by)


def copy_key_for(snapshot_folder: str, key: str) -> str:
    """Where an unversioned bucket's object is copied inside its snapshot (`<folder>objects/<key>`)."""
    return snapshot_folder + "objects/" + key


def confinement_problem(rec: ManifestRecord, *, snapshot_folder: str, key_prefix: str) -> str | None:
    """Why a record would make a restore write or read outside its place (None: it is confined).

    A restore writes `key` into the target bucket and copies from `key` at `version_id` in the source bucket, or
    from `copy_key` in the snapshot bucket. `snapshot create` only pins safe keys under the source's key_prefix, and
    only sets copy_key to `<snapshot folder>objects/<key>`; anything else was written by someone else (a tampered
    manifest), such as a copy_key naming another snapshot's dump. Records restore skips (dangling, refused,
    changed) may hold hostile keys, since they record what the rows named; only their copy_key is checked.
    """
    shown = repr(rec.key[:200])
    if rec.copy_key is not None and rec.copy_key != copy_key_for(snapshot_folder, rec.key):
        return f"object {shown}: copy_key {rec.copy_key[:200]!r} is not this snapshot's copy of it " \
               f"({snapshot_folder}objects/<key>)"
    if rec.state != STATE_PINNED:
        return None
    try:
        check_key(rec.key)
    except UnsafeKey as exc:
        return f"object {shown}: {exc}"
    if not rec.key.startswith(key_prefix):
        return f"object {shown}: outside the source's key prefix {key_prefix!r}"
    return None


def utc_text(when: datetime) -> str:
    """ISO 8601 in UTC, without a tz conversion for the zero-offset datetimes S3 listings carry.

    No caching by tzinfo: botocore gives every timestamp its own tzinfo object, so a cache would grow per object.
    """
    offset = when.utcoffset()
    if offset is not None and not offset:
        return when.replace(tzinfo=None).isoformat() + "+00:00"
    return when.astimezone(UTC).isoformat()


def pick_versions(versions: Iterable[ObjectVersion], fence: datetime
                  ) -> Iterator[tuple[str, ObjectVersion | None, bool]]:
    """For each key of a listing, the version that was current at `fence` (None: absent or deleted then).

    Listings group a key's versions together (S3's ListObjectVersions contract) but the order inside a group is not
    relied upon: the newest LastModified not after the fence wins, a tie goes to the entry the server marks latest.
    The third item says whether the key had any version written after the fence (useful for unversioned buckets).
    """
    current_key: str | None = None
    best: ObjectVersion | None = None
    later = False
    tz_aligned = False
    for v in versions:
        if not tz_aligned:  # same tzinfo object as the listing: comparisons then skip Python-level utcoffset()
            fence = fence.astimezone(v.last_modified.tzinfo)
            tz_aligned = True
        if v.key != current_key:
            if current_key is not None:
                yield current_key, (None if best is None or best.is_delete_marker else best), later
            current_key, best, later = v.key, None, False
        if v.last_modified > fence:
            later = True
            continue
        if best is None or v.last_modified > best.last_modified or (
                v.last_modified == best.last_modified and v.is_latest and not best.is_latest):
            best = v
    if current_key is not None:
        yield current_key, (None if best is None or best.is_delete_marker else best), later


class ManifestWriter:
    """Writes records as zstd-compressed JSON lines into a binary sink, counting what it wrote."""

    def __init__(self, sink: IO[bytes], *, level: int = 3) -> None:
        self._writer = zstandard.ZstdCompressor(level=level).stream_writer(sink, closefd=False)
        self._lines: list[bytes] = []
        self._buffered = 0
        self.counts: dict[str, int] = {}
        self.pinned_bytes = 0

    def write(self, record: ManifestRecord) -> None:
        line = record.to_line()
        self._lines.append(line)
        self._buffered += len(line)
        if self._buffered >= 1 << 16:  # one compressor call per 64 KiB, not per line
            self._drain()
        self.counts[record.state] = self.counts.get(record.state, 0) + 1
        if record.state == STATE_PINNED and record.size:
            self.pinned_bytes += record.size

    def _drain(self) -> None:
        if self._lines:
            self._writer.write(b"".join(self._lines))
            self._lines.clear()
            self._buffered = 0

    def close(self) -> None:
        self._drain()
        self._writer.flush(zstandard.FLUSH_FRAME)
        self._writer.close()


def read_manifest(source: IO[bytes]) -> Iterator[ManifestRecord]:
    """Stream records out of a manifest; a corrupt line raises ValueError naming its line number.

    Lines are read with a limit (the chunk files' MAX_LINE_BYTES), so a manifest that decompresses to one endless
    line is refused after 16 MiB instead of growing memory until the host runs out.
    """
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(source, closefd=False)
        text = io.BufferedReader(reader, buffer_size=1 << 16)  # type: ignore[arg-type]
        lineno = 0
        while line := text.readline(MAX_LINE_BYTES + 1):
            lineno += 1
            if len(line) > MAX_LINE_BYTES:
                raise ValueError(f"manifest line {lineno} is longer than {MAX_LINE_BYTES} bytes")
            if line.strip():
                yield ManifestRecord.from_line(line, lineno)
    except zstandard.ZstdError as exc:
        raise ValueError(f"manifest is not valid zstd data ({exc})") from None


def tampered_lines(name: str, records: Iterable[ManifestRecord], check: Callable[[ManifestRecord], str | None],
                   limit: int) -> list[str]:
    """Each record `check` finds a problem with, as a "tampered record" line (at most `limit` named, then a
    count); a manifest that cannot be read to its end (ValueError) adds one line."""
    problems: list[str] = []
    count = 0
    try:
        for rec in records:
            problem = check(rec)
            if problem:
                count += 1
                if len(problems) < limit:
                    problems.append(f"{name}: tampered record: {problem}")
    except ValueError as exc:
        problems.append(f"{name}: {exc}")
    if count > limit:
        problems.append(f"{name}: {count - limit} more tampered record(s)")
    return problems


def format_sums(sums: dict[str, str]) -> bytes:
    """sha256sum's format, so `sha256sum -c SHA256SUMS` works on a downloaded snapshot folder."""
    return "".join(f"{digest}  {name}\n" for name, digest in sorted(sums.items())).encode()


def parse_sums(data: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for lineno, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        if not line.strip():
            continue
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest) or "/" in name:
            raise ValueError(f"SHA256SUMS line {lineno} is malformed")
        out[name] = digest
    return out


def committed_marker(snapshot_id: str, sums_digest: str, when: datetime,
                     signature: dict[str, str] | None = None) -> bytes:
    """The marker; `signature` (drtool.core.signing.sign) authenticates the id and the SHA256SUMS digest."""
    marker: dict[str, Any] = {"snapshot": snapshot_id, "committed_at": when.astimezone(UTC).isoformat(),
                              "sha256sums": sums_digest}
    if signature is not None:
        marker["signature"] = signature
    return json.dumps(marker, indent=1).encode()


def parse_json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):  # RecursionError: '[' * 100_000 is valid-looking but too deep
        raise ValueError(f"{what} is not valid JSON") from None
    if not isinstance(value, dict):
        raise ValueError(f"{what} is not a JSON object")
    return value
