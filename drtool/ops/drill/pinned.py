"""Chunk files at the snapshot's versions: the source bucket as rebuild sees it, with every dataset chunk file and
annotation file the snapshot pinned read at its pinned version."""

from __future__ import annotations

import re
from typing import Any

from drtool.core import manifest as mf
from drtool.core.ports import ObjectStore
from drtool.ops.snapshot.catalog import SnapshotInfo, iter_records
from drtool.ops.snapshot.destination import Destination, destination_store

# Dataset chunk files and annotation files (issue #13): both are read at the version the snapshot pinned.
CHUNK_FILE = re.compile(r"^(datasets|annotations)/[^/]+/processed/chunks\.jsonl(\.gz|\.zst)?$")


class PinnedChunkStore:
    """The source bucket as rebuild sees it (a BucketStore), except that chunk files pinned by the snapshot are
    read at their pinned version: the index is rebuilt from what existed at the fence, like the database."""

    def __init__(self, store: Any, dest: Destination, pins: dict[str, mf.ManifestRecord], source_bucket: str
                 ) -> None:
        self._store = store
        self._dest = dest
        self._pins = pins
        self._bucket = source_bucket
        self.pinned_reads: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def _where(self, rec: mf.ManifestRecord) -> tuple[ObjectStore, str, str | None]:
        """(store, whole key, version): a copy in the snapshot folder, or the source's pinned version."""
        if rec.copy_key:
            return destination_store(self._dest), rec.copy_key, None
        return self._store.at(self._bucket), rec.key, rec.version_id

    def head(self, key: str) -> dict[str, Any] | None:
        rec = self._pins.get(key)
        if rec is None:
            return self._store.head(key)
        store, whole, version = self._where(rec)
        return store.head(whole, version_id=version)

    def open(self, key: str) -> Any:
        rec = self._pins.get(key)
        if rec is None:
            return self._store.open(key)
        store, whole, version = self._where(rec)
        self.pinned_reads.add(key)
        return store.open(whole, version_id=version)


def chunk_pins(dest: Destination, info: SnapshotInfo, identities: list[Any] | None, key_prefix: str
              ) -> dict[str, mf.ManifestRecord]:
    records, _raw = iter_records(dest, info, identities)
    pins: dict[str, mf.ManifestRecord] = {}
    folder = dest.folder(info.id)
    for rec in records:
        if rec.state != mf.STATE_PINNED or not rec.key.startswith(key_prefix):
            continue
        if mf.confinement_problem(rec, snapshot_folder=folder, key_prefix=key_prefix):
            continue  # never read from outside the snapshot (snapshot_check has already failed the drill)
        key = rec.key[len(key_prefix):]
        if CHUNK_FILE.match(key):
            pins[key] = rec
    return pins
