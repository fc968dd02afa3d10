"""Which object keys a snapshot pins, and which keys drtool refuses to touch.

Keys come from database rows, which an attacker who can write a row controls. Wherever a key becomes part of an
object path that drtool writes (a restore target, a copy inside the snapshot folder) it must not be able to escape
its place: `../`, absolute keys and control characters are refused, never normalised.

The set of referenced keys can be as large as the bucket, so it lives in a temporary SQLite file rather than in a
Python set: memory stays flat whether the metadata references ten thousand objects or ten million.
"""

from __future__ import annotations

import re
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

SNAPSHOT_ID = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1 (NEL \x85 breaks lines too)
_SURROGATE = re.compile(r"[\ud800-\udfff]")  # only a hand-edited manifest can carry one; S3 cannot encode it
_COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*){1,2}$")


class UnsafeKey(ValueError):
    """A key that could escape its folder or confuse a tool if it became a path."""


_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\\\ud800-\udfff]|^/|^[A-Za-z]:|(?:^|/)\.\.?(?:/|$)")


def check_key(key: str) -> str:
    """Return `key` unchanged when it is safe to use as an object path; raise UnsafeKey otherwise."""
    if key and len(key) <= 256 and not _UNSAFE.search(key):  # the common case, one regex
        return key
    if not key:
        raise UnsafeKey("empty key")
    if len(key.encode("utf-8", "surrogatepass")) > 1024:
        raise UnsafeKey("key longer than 1024 bytes")
    if _CONTROL.search(key):
        raise UnsafeKey("key contains a control character")
    if _SURROGATE.search(key):
        raise UnsafeKey("key is not valid Unicode (a lone surrogate)")
    if key.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:[\\/]", key):
        raise UnsafeKey("absolute key")
    if "\\" in key:
        raise UnsafeKey("key contains a backslash")
    if any(part in (".", "..") for part in key.split("/")):
        raise UnsafeKey("key contains a '.' or '..' segment")
    return key


def check_snapshot_id(snapshot_id: str) -> str:
    """Snapshot ids become folder names; only the form drtool generates is accepted."""
    if not SNAPSHOT_ID.match(snapshot_id):
        raise UnsafeKey(f"{snapshot_id!r} is not a snapshot id (expected e.g. 20261129T164000Z-3fa2c1)")
    return snapshot_id


def parse_reference_columns(text: str) -> list[tuple[str, ...]]:
    """`upload_files.key,tool_files.file_key` -> [("upload_files", "key"), ...]; schema.table.column also works."""
    out: list[tuple[str, ...]] = []
    for item in filter(None, (p.strip() for p in text.split(","))):
        if not _COLUMN.match(item):
            raise ValueError(f"invalid reference column {item!r}: expected [schema.]table.column")
        out.append(tuple(item.split(".")))
    return out


def listing_prefixes(heads: Iterable[str]) -> list[str]:
    """The fewest prefixes that cover every head: '' covers all; 'a/' covers 'a/b/'."""
    out: list[str] = []
    for head in sorted(set(heads)):
        if not any(head.startswith(kept) for kept in out):
            out.append(head)
    return out


class KeyPatterns:
    """Key prefixes pinned even when no row names them; `*` stands for exactly one path segment."""

    def __init__(self, prefixes: Iterable[str]) -> None:
        self.prefixes = [p.strip() for p in prefixes if p.strip()]
        self._compiled = [(p, re.compile("^" + "[^/]+".join(re.escape(s) for s in p.split("*"))))
                          for p in self.prefixes]
        # The literal part before the first '*' lets a caller skip whole key ranges cheaply.
        self.literal_heads = sorted({p.split("*", 1)[0] for p in self.prefixes})

    @classmethod
    def parse(cls, text: str) -> KeyPatterns:
        return cls(text.split(","))

    def match(self, key: str) -> str | None:
        for prefix, regex in self._compiled:
            if regex.match(key):
                return prefix
        return None


@dataclass(frozen=True)
class Reference:
    key: str
    referenced_by: tuple[str, ...]


class ReferenceIndex:
    """Referenced keys on disk: add them while reading the database, look them up while listing the bucket."""

    def __init__(self, folder: str | Path | None = None) -> None:
        where = Path(tempfile.mkdtemp(prefix="drtool-refs-", dir=folder))
        self._db = sqlite3.connect(where / "refs.sqlite", isolation_level=None)
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute("PRAGMA cache_size=-8192")  # 8 MiB page cache: bounded memory
        self._db.execute("CREATE TABLE refs (key TEXT PRIMARY KEY, by TEXT NOT NULL, found INTEGER DEFAULT 0)"
                         " WITHOUT ROWID")
        # Unlinked once open (no journal needs the name): a run killed with SIGKILL leaves nothing on disk.
        (where / "refs.sqlite").unlink()
        where.rmdir()
        self.count = 0

    def add_many(self, rows: Iterable[tuple[str, str]]) -> None:
        """Add (key, source) pairs; a key named by several columns keeps every source."""
        self._db.execute("BEGIN")
        for key, source in rows:
            self._db.execute(
                "INSERT INTO refs(key, by) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET by = by || ',' || excluded.by"
                " WHERE instr(',' || by || ',', ',' || excluded.by || ',') = 0", (key, source))
        self._db.execute("COMMIT")
        self.count = self._db.execute("SELECT count(*) FROM refs").fetchone()[0]

    def lookup(self, key: str) -> tuple[str, ...] | None:
        row = self._db.execute("SELECT by FROM refs WHERE key = ?", (key,)).fetchone()
        return tuple(row[0].split(",")) if row else None

    def lookup_many(self, keys: list[str]) -> dict[str, tuple[str, ...]]:
        """One query per batch instead of one per key: a listing page costs a few lookups, not a thousand."""
        out: dict[str, tuple[str, ...]] = {}
        for start in range(0, len(keys), 500):
            batch = keys[start:start + 500]
            marks = ",".join("?" * len(batch))
            for key, by in self._db.execute(f"SELECT key, by FROM refs WHERE key IN ({marks})", batch):
                out[key] = tuple(by.split(","))
        return out

    def mark_found(self, keys: Iterable[str]) -> None:
        self._db.execute("BEGIN")
        self._db.executemany("UPDATE refs SET found = 1 WHERE key = ?", ((k,) for k in keys))
        self._db.execute("COMMIT")

    def first_segments(self, strip: str = "") -> set[str]:
        """The distinct first path segments ('upload_files/', ...) of the keys after `strip`; '' for a key
        without a folder. Lets the listing skip prefixes nobody references (traces, crawls)."""
        out: set[str] = set()
        n = len(strip) + 1
        query = ("SELECT DISTINCT CASE WHEN instr(substr(key, ?), '/') > 0"
                 " THEN substr(key, ?, instr(substr(key, ?), '/')) ELSE '' END FROM refs")
        for (head,) in self._db.execute(query, (n, n, n)):
            out.add(head)
        return out

    def missing(self) -> Iterator[Reference]:
        """Referenced keys never marked found, in key order (streamed)."""
        cur = self._db.execute("SELECT key, by FROM refs WHERE found = 0 ORDER BY key")
        for key, by in cur:
            yield Reference(key, tuple(by.split(",")))

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ReferenceIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
