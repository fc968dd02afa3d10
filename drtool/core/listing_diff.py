"""Compare two key-ordered listings of a bucket without holding either in memory.

S3 lists keys in UTF-8 byte order, which is Python's `str` order, on MinIO, SeaweedFS and AWS alike, so two
listings can be merge-joined like two sorted files: memory is one key's versions per side, whatever the bucket
size. Within a key, versions are matched by version id (mode "versions") or only the latest one is compared
(mode "latest", for unversioned buckets and for replication that does not keep version ids, such as
`weed filer.sync`).

A difference whose newer side is younger than the settle window is reported as unsettled rather than as a
failure: replication is asynchronous, and a write a second ago is expected to be missing on the peer.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from itertools import groupby
from typing import Literal

__all__ = ["DiffCounts", "Difference", "Entry", "OrderError", "diff_listings"]

Mode = Literal["versions", "latest"]
Kind = Literal["missing", "extra", "mismatch"]


class OrderError(ValueError):
    """A listing was not in key order: merge-joining it would report false differences."""


@dataclass(frozen=True, slots=True)
class Entry:
    key: str
    version_id: str | None  # None or "null" when the bucket is not versioned
    etag: str | None
    size: int
    last_modified: datetime
    is_delete_marker: bool = False
    is_latest: bool = True

    def to_dict(self) -> dict[str, object]:
        return {"key": self.key, "version_id": self.version_id, "etag": self.etag, "size": self.size,
                "last_modified": self.last_modified.isoformat(), "delete_marker": self.is_delete_marker}


@dataclass(frozen=True, slots=True)
class Difference:
    kind: Kind  # missing: on source only; extra: on target only; mismatch: on both but different
    key: str
    source: Entry | None
    target: Entry | None
    fields: tuple[str, ...] = ()  # for a mismatch: which of etag, size, version_id, delete_marker differ
    settled: bool = True  # False: younger than the settle window, probably still replicating

    def to_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "key": self.key, "settled": self.settled, "fields": list(self.fields),
                "source": self.source.to_dict() if self.source else None,
                "target": self.target.to_dict() if self.target else None}


@dataclass
class DiffCounts:
    source_entries: int = 0
    target_entries: int = 0
    matched: int = 0
    missing: int = 0
    extra: int = 0
    mismatch: int = 0
    unsettled: int = 0  # differences inside the settle window, not counted above
    by_kind_unsettled: dict[str, int] = field(default_factory=lambda: {"missing": 0, "extra": 0, "mismatch": 0})

    @property
    def settled_differences(self) -> int:
        return self.missing + self.extra + self.mismatch

    def add(self, diff: Difference) -> None:
        if diff.settled:
            setattr(self, diff.kind, getattr(self, diff.kind) + 1)
        else:
            self.unsettled += 1
            self.by_kind_unsettled[diff.kind] += 1


def _ordered(entries: Iterable[Entry], side: str, counter: list[int]) -> Iterator[tuple[str, list[Entry]]]:
    """Group a listing by key, refusing out-of-order input instead of silently reporting nonsense."""
    last: str | None = None
    for key, group in groupby(entries, key=lambda e: e.key):
        if last is not None and key <= last:
            raise OrderError(f"the {side} listing is not in key order: {key!r} came after {last!r}")
        last = key
        versions = list(group)
        counter[0] += len(versions)
        yield key, versions


def _norm_vid(vid: str | None) -> str | None:
    return None if vid in (None, "", "null") else vid


def _norm_etag(etag: str | None) -> str | None:
    return etag.strip('"').lower() if etag else etag


def _compare(src: Entry, dst: Entry, check_version_id: bool) -> tuple[str, ...]:
    fields: list[str] = []
    if src.is_delete_marker != dst.is_delete_marker:
        fields.append("delete_marker")
    if not src.is_delete_marker and not dst.is_delete_marker:
        if _norm_etag(src.etag) != _norm_etag(dst.etag):
            fields.append("etag")
        if src.size != dst.size:
            fields.append("size")
    if check_version_id and _norm_vid(src.version_id) != _norm_vid(dst.version_id):
        fields.append("version_id")
    return tuple(fields)


def diff_listings(
    source: Iterable[Entry],
    target: Iterable[Entry],
    *,
    mode: Mode = "versions",
    settle_before: datetime | None = None,
    check_version_id: bool = True,
    counts: DiffCounts | None = None,
) -> Iterator[Difference]:
    """Yield every difference between two key-ordered listings; `counts` (if given) is updated as they go.

    `settle_before`: entries modified after this moment are "unsettled". In "latest" mode only each key's
    latest version is compared (a key whose latest version is a delete marker counts as absent on that side,
    because that is what a reader sees). `check_version_id` compares version ids in "latest" mode; turn it off
    for replication that does not keep them.
    """
    counts = counts if counts is not None else DiffCounts()
    n_src, n_dst = [0], [0]
    src_iter = _ordered(source, "source", n_src)
    dst_iter = _ordered(target, "target", n_dst)
    src = next(src_iter, None)
    dst = next(dst_iter, None)

    def young(*entries: Entry | None) -> bool:
        return settle_before is not None and any(e is not None and e.last_modified > settle_before for e in entries)

    def emit(kind: Kind, key: str, a: Entry | None, b: Entry | None, fields: tuple[str, ...] = ()) -> Difference:
        diff = Difference(kind, key, a, b, fields, settled=not young(a, b))
        counts.add(diff)
        return diff

    def join_key(key: str, a_versions: list[Entry], b_versions: list[Entry]) -> Iterator[Difference]:
        if mode == "latest":
            a = _latest(a_versions)
            b = _latest(b_versions)
            if a is None and b is None:
                counts.matched += 1
            elif b is None:
                yield emit("missing", key, a, None)
            elif a is None:
                yield emit("extra", key, None, b)
            else:
                fields = _compare(a, b, check_version_id)
                if fields:
                    yield emit("mismatch", key, a, b, fields)
                else:
                    counts.matched += 1
            return
        by_vid = {_norm_vid(v.version_id): v for v in b_versions}
        for a in a_versions:
            b = by_vid.pop(_norm_vid(a.version_id), None)
            if b is None:
                yield emit("missing", key, a, None)
                continue
            fields = _compare(a, b, check_version_id=False)
            if fields:
                yield emit("mismatch", key, a, b, fields)
            else:
                counts.matched += 1
        for b in b_versions:
            if _norm_vid(b.version_id) in by_vid:
                yield emit("extra", key, None, b)

    while src is not None or dst is not None:
        if dst is None or (src is not None and src[0] < dst[0]):
            assert src is not None
            yield from join_key(src[0], src[1], [])
            src = next(src_iter, None)
        elif src is None or dst[0] < src[0]:
            yield from join_key(dst[0], [], dst[1])
            dst = next(dst_iter, None)
        else:
            yield from join_key(src[0], src[1], dst[1])
            src = next(src_iter, None)
            dst = next(dst_iter, None)
        counts.source_entries, counts.target_entries = n_src[0], n_dst[0]
    counts.source_entries, counts.target_entries = n_src[0], n_dst[0]


def _latest(versions: list[Entry]) -> Entry | None:
    """The version a reader sees, or None when there is none or it is a delete marker."""
    if not versions:
        return None
    latest = next((v for v in versions if v.is_latest), None)
    if latest is None:
        latest = max(versions, key=lambda v: v.last_modified)
    return None if latest.is_delete_marker else latest


def bad_fraction_upper_bound(bad: int, sampled: int, z: float = 1.96) -> float:
    """95% upper bound (Wilson score) on the fraction of bad objects in a bucket, from a random sample.

    Why: "0 of 1,000 sampled objects missing" is only useful with how much it proves: here, that fewer than
    about 0.4% of the bucket is missing, with 95% confidence.
    """
    if sampled <= 0:
        return 1.0
    p = bad / sampled
    denom = 1 + z * z / sampled
    centre = p + z * z / (2 * sampled)
    margin = z * ((p * (1 - p) / sampled + z * z / (4 * sampled * sampled)) ** 0.5)
    return min(1.0, (centre + margin) / denom)
