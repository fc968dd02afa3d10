"""drtool's own embedding cache, stored next to the chunks: `datasets/<id>/processed/vectors/<model>-d<dim>/`.

Keyed by sha256 of the embedded text + model id + dimension (the folder), so a second rebuild of unchanged chunks
calls no model. Vectors are appended as segment objects of up to `segment_size` records:

    8 bytes magic b"DRVEC1\\0\\0" | uint32 dimension | uint32 count | count x 32-byte sha256 | count x dim float32 LE

Opening the cache reads only the hash part of each segment (ranged GETs); vectors are fetched per segment when a
batch needs them, with a small LRU, so memory holds an index of ~100 bytes per chunk, not the vectors.
"""

from __future__ import annotations

import hashlib
import logging
import re
import struct
import threading
import time
import uuid
from array import array
from collections import OrderedDict
from typing import Protocol

from drtool.core.vectors import cached_vector_problem

log = logging.getLogger("drtool.rebuild")

MAGIC = b"DRVEC1\0\0"
HEADER = struct.Struct("<8sII")
# drtool writes segments of `segment_size` (1024) records; anything far larger was not written by drtool, and its
# hash part alone (32 bytes a record, sized from the listing) would be read into memory.
MAX_SEGMENT_RECORDS = 64 * 1024


class Store(Protocol):
    def get(self, key: str, *, byte_range: tuple[int, int] | None = None) -> bytes | None: ...
    def put(self, key: str, data: bytes, *, content_type: str = ...) -> None: ...
    def list(self, prefix: str) -> object: ...


def model_folder(model_id: str, dimension: int) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model_id)[:60]
    digest = hashlib.sha256(model_id.encode()).hexdigest()[:8]
    return f"{slug}-{digest}-d{dimension}"


def sidecar_prefix(dataset_id: str, model_id: str, dimension: int) -> str:
    return f"datasets/{dataset_id}/processed/vectors/{model_folder(model_id, dimension)}/"


def encode_segment(dimension: int, records: list[tuple[bytes, list[float]]]) -> bytes:
    out = bytearray(HEADER.pack(MAGIC, dimension, len(records)))
    for digest, _ in records:
        out += digest
    floats = array("f")
    for _, vector in records:
        floats.extend(vector)
    if floats.itemsize != 4:
        raise RuntimeError("float32 is not 4 bytes on this platform")
    out += floats.tobytes() if struct.pack("=I", 1) == struct.pack("<I", 1) else _swap(floats)
    return bytes(out)


def _swap(floats: array) -> bytes:
    copy = array("f", floats)
    copy.byteswap()
    return copy.tobytes()


class VectorSidecar:
    def __init__(self, store: Store, dataset_id: str, model_id: str, dimension: int, *,
                 segment_size: int = 1024, lru: int = 4) -> None:
        self.store = store
        self.prefix = sidecar_prefix(dataset_id, model_id, dimension)
        self.dimension = dimension
        self.segment_size = segment_size
        self._index: dict[bytes, tuple[int, int]] = {}
        self._segments: list[tuple[str, int]] = []  # (key, count)
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._lru = lru
        self._pending: list[tuple[bytes, list[float]]] = []
        self._pending_map: dict[bytes, list[float]] = {}
        self._lock = threading.Lock()
        self.written = 0
        self.ignored = 0  # stored vectors that failed cached_vector_problem: left out, so re-embedded

    def open(self) -> int:
        """Read the hash index of every segment; returns how many vectors the cache holds."""
        record = 32 + 4 * self.dimension
        for item in self.store.list(self.prefix):  # type: ignore[attr-defined]
            key, size = item["Key"], int(item["Size"])
            if not key.endswith(".vec") or size < HEADER.size or (size - HEADER.size) % record:
                continue
            count = (size - HEADER.size) // record
            if count > MAX_SEGMENT_RECORDS:
                log.warning("ignored cache segment %s: %d records, more than drtool ever writes (%d); its chunks "
                            "are re-embedded", key, count, MAX_SEGMENT_RECORDS)
                continue
            head = self.store.get(key, byte_range=(0, HEADER.size + 32 * count - 1))
            if head is None or len(head) != HEADER.size + 32 * count:
                continue
            magic, dim, stored = HEADER.unpack_from(head)
            if magic != MAGIC or dim != self.dimension or stored != count:
                continue
            seg = len(self._segments)
            self._segments.append((key, count))
            for row in range(count):
                off = HEADER.size + 32 * row
                self._index[head[off:off + 32]] = (seg, row)  # the newest wins: it replaced an ignored vector
        return len(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def contains(self, digest: bytes) -> bool:
        return digest in self._index

    def lookup(self, digests: list[bytes]) -> dict[int, list[float]]:
        """Vectors for the digests the cache holds, by position in `digests`."""
        found: dict[int, list[float]] = {}
        for i, digest in enumerate(digests):
            where = self._index.get(digest)
            if where is None:
                continue
            seg, row = where
            if seg < 0:
                pending = self._pending_map.get(digest)
                if pending is not None:
                    found[i] = pending
                continue
            data = self._segment_vectors(seg)
            if data is None:
                continue
            width = 4 * self.dimension
            floats = array("f")
            floats.frombytes(data[row * width:(row + 1) * width])
            if struct.pack("=I", 1) != struct.pack("<I", 1):
                floats.byteswap()
            vector = floats.tolist()
            problem = cached_vector_problem(vector, self.dimension)
            if problem is not None:  # the bucket is writable by others: a planted segment must not reach the index
                self.ignored += 1
                if self.ignored <= 10:
                    log.warning("ignored vector %d of %s: %s; re-embedding", row, self._segments[seg][0], problem)
                self._index.pop(digest, None)  # so add() stores the fresh vector, which the next open() prefers
                continue
            found[i] = vector
        return found

    def _segment_vectors(self, seg: int) -> bytes | None:
        with self._lock:
            if seg in self._cache:
                self._cache.move_to_end(seg)
                return self._cache[seg]
        key, count = self._segments[seg]
        start = HEADER.size + 32 * count
        data = self.store.get(key, byte_range=(start, start + 4 * self.dimension * count - 1))
        if data is None or len(data) != 4 * self.dimension * count:
            return None
        with self._lock:
            self._cache[seg] = data
            while len(self._cache) > self._lru:
                self._cache.popitem(last=False)
        return data

    def add(self, digest: bytes, vector: list[float]) -> None:
        if digest in self._index:
            return
        self._pending.append((digest, vector))
        self._pending_map[digest] = vector
        self._index[digest] = (-1, -1)  # known, not yet readable: a duplicate text is not written twice
        if len(self._pending) >= self.segment_size:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        records, self._pending = self._pending, []
        self._pending_map = {}
        key = f"{self.prefix}{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:12]}.vec"
        self.store.put(key, encode_segment(self.dimension, records))
        seg = len(self._segments)
        self._segments.append((key, len(records)))
        for row, (digest, _) in enumerate(records):
            self._index[digest] = (seg, row)
        self.written += len(records)
