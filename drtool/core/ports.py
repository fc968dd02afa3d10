"""The interfaces operations depend on; adapters implement them, tests use the real adapters."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any, Protocol, runtime_checkable

from drtool.core import naming

if TYPE_CHECKING:  # manifest imports zstandard; the port only names its record type
    from drtool.core.manifest import ObjectVersion

# The vector databases drtool can rebuild and verify, by the name Dify's VECTOR_STORE and `vector.store` use.
# Kept here, free of SDK imports, because config.py (setting choices), core/dify_env.py and the CLI's
# click.Choice need the names at import time; drtool.adapters.vector_stores registers one entry per name, and a
# test fails when the two disagree.
VECTOR_STORES: tuple[str, ...] = ("milvus", "weaviate", "pgvector")


class Embedder(Protocol):
    """Turns texts into L2-normalised vectors of one fixed dimension."""

    @property
    def model_id(self) -> str:
        """Stable identity of the model (provider + name), part of every cache key."""
        ...

    @property
    def dimension(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> list[list[float]]: ...


# --- the object-store port -------------------------------------------------------------------------------------

@runtime_checkable
class ObjectStore(Protocol):
    """One bucket of an S3-compatible object store, seen below a key prefix, as operations use it.

    Keys are relative to `prefix` (s3.key_prefix for Dify's files; "" for a snapshot destination, whose keys are
    built whole). Every method raises drtool errors (drtool.errors), never an SDK's: `NotFound` (exit 10) for a
    missing bucket, key or version where absence is not an answer, `AccessDenied` (exit 12, naming the IAM action
    to grant), `PreconditionFailed` when a conditional write loses, `UnavailableError` (exit 1) for a server that
    cannot be reached or fails after the adapter's retries. The translation lives once, in the adapter
    (drtool/adapters/s3/errors.py `translate_error`); retries too. Implementation:
    `drtool.adapters.s3.store.BucketStore`.
    Head and object dicts keep S3's field names (ETag, ContentLength, VersionId, Metadata, ReplicationStatus,
    ObjectLockRetainUntilDate, ...), so a caller reads the same fields whatever the server.
    """

    bucket: str
    prefix: str

    def url(self, key: str) -> str:
        """`s3://bucket/prefix+key`, for messages."""
        ...

    def at(self, bucket: str, prefix: str = "") -> ObjectStore:
        """The same server, credentials and connection pool, seen onto another bucket and key prefix."""
        ...

    def describe(self) -> str:
        """`object store <endpoint>` for an error's `system`; never a credential."""
        ...

    def probe(self) -> None:
        """One cheap request proving the bucket exists and the credentials work (NotFound / AccessDenied)."""
        ...

    def head(self, key: str, *, version_id: str | None = None) -> dict[str, Any] | None:
        """The object's (or that version's) metadata; None when it, or that version, does not exist or is a delete
        marker: absence is an answer here, so callers test for None instead of catching NotFound."""
        ...

    def get(self, key: str, *, byte_range: tuple[int, int] | None = None, version_id: str | None = None
            ) -> bytes | None:
        """The whole object (capped at the adapter's small-object limit) or an inclusive byte range; None when it
        does not exist."""
        ...

    def peek(self, key: str, max_bytes: int) -> tuple[bytes, str] | None:
        """At most max_bytes + 1 bytes of the object and its ETag, from one GET (so both describe the same
        version: what a compare-and-swap needs); None when absent. More than max_bytes back means the object is
        not the caller's, and it was never read whole."""
        ...

    def open(self, key: str, *, version_id: str | None = None) -> IO[bytes]:
        """A streaming body of a large object; NotFound when the key or version does not exist."""
        ...

    def put(self, key: str, data: bytes, *, content_type: str = "application/octet-stream",
            metadata: dict[str, str] | None = None, if_none_match: bool = False, if_match: str | None = None
            ) -> str:
        """Write an object in one request and return its ETag. `if_none_match`: only if the key does not exist;
        `if_match`: only if its current ETag is this one. A lost condition raises PreconditionFailed; a server
        without conditional writes raises UnavailableError (NotImplemented): use put_if_absent /
        replace_if_match for the check-then-write fallback."""
        ...

    def put_file(self, key: str, fileobj: IO[bytes], size: int, *, metadata: dict[str, str],
                 content_type: str = "application/octet-stream", part_size: int = 16 << 20,
                 on_part: Callable[[int, int], None] | None = None) -> str:
        """Write a finished local file so that readers see the old object or the whole new one (one PUT, or a
        multipart upload that is aborted on error) and return its ETag."""
        ...

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Create the key only if it does not exist; False when it does. Servers without conditional writes get a
        check-then-write (a narrow race, docs/snapshots.md)."""
        ...

    def replace_if_match(self, key: str, etag: str, data: bytes) -> bool:
        """Overwrite the key only while its ETag is `etag`; False when it changed or vanished first (same
        fallback as put_if_absent)."""
        ...

    def list(self, prefix: str) -> Iterator[dict[str, Any]]:
        """Current objects under `prefix` (keys relative to the store's prefix), streamed page by page."""
        ...

    def list_folders(self, prefix: str) -> list[str]:
        """Immediate sub-folder names under `prefix` (which ends with '/')."""
        ...

    def list_versions(self, prefix: str) -> Iterator[ObjectVersion]:
        """Every version and delete marker under `prefix` (keys relative, like list), in listing order."""
        ...

    def copy(self, source_key: str, key: str, *, version_id: str | None = None) -> str:
        """Server-side copy of `source_key` (that version, when given) to `key`; returns the new ETag. NotFound
        when the source or its version does not exist."""
        ...

    def delete(self, key: str, *, version_id: str | None = None) -> None:
        """Delete the key (adds a delete marker in a versioned bucket) or, with `version_id`, that version."""
        ...

    def delete_prefix(self, prefix: str) -> int:
        """Delete every version and delete marker under `prefix`; returns how many. Versions the server refused
        (Object Lock retention, a legal hold) raise DeleteRefused (an AccessDenied) once the rest is gone."""
        ...

    def abort_uploads(self, prefix: str, *, older_than: datetime | None = None) -> int:
        """Abort unfinished multipart uploads under `prefix` (started before `older_than`); returns how many."""
        ...

    def versioning(self) -> str:
        """'Enabled', 'Suspended' or 'Unversioned'."""
        ...


# --- the vector-store port -------------------------------------------------------------------------------------

Row = tuple[str, dict[str, Any], list[float]]
"""One object to store: (text, Dify metadata, vector)."""

Hit = dict[str, Any]
"""One search answer: {"text": str | None, "metadata": dict | None, "score": float | None}."""


@dataclass(frozen=True, slots=True)
class VectorIdentity:
    """Who a stored vector claims to be: `drtool verify` maps every vector back to Postgres with these."""

    key: str  # the store's own id of the object (Milvus primary key, Weaviate UUID)
    doc_id: str | None
    document_id: str | None
    dataset_id: str | None


@runtime_checkable
class VectorStore(Protocol):
    """One vector database holding collections in Dify's layout, as rebuild-index, verify and drill use it.

    Names are collection names as Dify sees them (`Vector_index_<id>_Node`). Methods that take a name raise
    drtool errors (drtool.errors), never an SDK's: NotFoundError (10) or UnavailableError (1) for a missing
    collection or an unreachable server, AuthError (12) for refused credentials or privileges.
    Implementations: drtool/adapters/milvus.py, weaviate.py, pgvector.py, registered in
    drtool/adapters/vector_stores.py; tests/conformance runs the same cases against each (docs/architecture.md).
    """

    backend: str  # the registry name, also the `type` Dify writes into datasets.index_struct
    switches_by_alias: bool  # True: the name Dify queries is an alias of the build (weaviate.switch=alias)
    # True: the switch renames (O(1)), so even a first build goes beside the name and is renamed in after the gate;
    # False (Weaviate's copy switch re-indexes every vector): with nothing to replace, the build is made in place.
    switch_is_rename: bool

    def describe(self) -> str:
        """`<backend> <endpoint>` for messages and reports; never a credential."""
        ...

    def exists(self, name: str) -> bool:
        """A collection with exactly this name exists (what create/drop act on)."""
        ...

    def serves(self, name: str) -> bool:
        """Dify's queries on `name` reach a collection: a collection or a drtool switch alias of that name."""
        ...

    def alias_target(self, name: str) -> str | None:
        """The collection the alias `name` points to; None when `name` is not an alias (or the store has none).
        A sharded rebuild refuses a shard plan whose build is what the live name points to."""
        ...

    def dimension(self, name: str) -> int | None:
        """The vector dimension of an existing collection; None when the store cannot tell (no object yet)."""
        ...

    def create(self, name: str, dimension: int) -> None:
        """A new, empty collection in Dify's layout (fields, index, metric) with this vector dimension."""
        ...

    def insert(self, name: str, rows: list[Row]) -> int:
        """Store rows; returns how many were sent. Re-sending rows after a crash never leaves duplicates: either
        the store's keys are deterministic (object_key) or rebuild first calls delete_doc_ids."""
        ...

    def delete_doc_ids(self, name: str, doc_ids: list[str]) -> int:
        """Remove the rows whose metadata doc_id is one of these (0 when keys are deterministic)."""
        ...

    def object_key(self, text: str, meta: dict[str, Any]) -> str | None:
        """The store's key for this row when it is deterministic (chunks sharing one collide), else None."""
        ...

    def count(self, name: str) -> int:
        """Rows in the collection, read so that every earlier write is counted."""
        ...

    def finish(self, name: str) -> None:
        """Make everything inserted durable and searchable (Milvus: flush and load)."""
        ...

    def load(self, name: str) -> None:
        """Make a collection queryable (Milvus: a renamed or reopened collection is released)."""
        ...

    def search(self, name: str, vector: list[float], k: int) -> list[Hit]:
        """The k nearest rows, best first."""
        ...

    def search_batch(self, name: str, vectors: list[list[float]], k: int) -> list[list[Hit]]:
        """search() for each vector, in input order (a store may answer them in one round trip)."""
        ...

    def dify_search(self, name: str, vector: list[float], k: int, document_ids: list[str]
                    ) -> tuple[list[Hit], str]:
        """The search Dify itself makes (its document_id filter, fields and limit), and the filter as used."""
        ...

    def dify_search_batch(self, name: str, vectors: list[list[float]], k: int, document_ids: list[str]
                          ) -> list[tuple[list[Hit], str]]:
        """dify_search(vectors[i], [document_ids[i]]) for each i, in input order. An answer may be only the start
        of that (fewer than k hits, nearest first) when the store asked several documents in one call, as Milvus
        Lite does: the gate asks a chunk missing from a short answer again alone."""
        ...

    def build_name(self, collection: str) -> str:
        """The name a blue/green rebuild of `collection` builds under."""
        ...

    def confirm_needed(self, collection: str) -> str | None:
        """Why switching to a new build of `collection` destroys something (needs --yes), or None."""
        ...

    def switch(self, collection: str, build: str, *, drop_old: bool) -> str:
        """Make Dify's name answer with `build`; keep the replaced one for rollback unless drop_old. Returns
        what was done, for the report."""
        ...

    def rollback(self, collection: str) -> str:
        """Undo the last switch (NotFoundError when nothing is kept to roll back to)."""
        ...

    def drop(self, name: str) -> None:
        """Delete one collection."""
        ...

    def purge(self, collection: str) -> list[str]:
        """Delete `collection` and everything drtool derived from it (builds, previous generations, aliases);
        returns what was deleted. For scratch names (drill, tests): never call it on a live name."""
        ...

    def iter_metadata(self, name: str, batch_size: int = 1000) -> Iterator[tuple[str, dict[str, Any]]]:
        """(store key, metadata) of every row behind `name`, streamed; vectors are not transferred."""
        ...

    def iter_identities(self, name: str, batch_size: int = 1000) -> Iterator[VectorIdentity]:
        """VectorIdentity of every row behind `name`, each exactly once, streamed."""
        ...

    def close(self) -> None: ...


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


class VectorStoreDefaults:
    """What every VectorStore does the same way, derived from its other methods; an adapter overrides a method
    when its database can do better (Milvus batches the gate's Strong reads). Pure logic: no SDK here."""

    # True when only one process can open the store (Milvus Lite's file): a sharded rebuild refuses it.
    single_process = False

    def exists(self, name: str) -> bool:  # pragma: no cover - every adapter defines it
        raise NotImplementedError

    def drop(self, name: str) -> None:  # pragma: no cover - every adapter defines it
        raise NotImplementedError

    def search(self, name: str, vector: list[float], k: int) -> list[Hit]:  # pragma: no cover
        raise NotImplementedError

    def dify_search(self, name: str, vector: list[float], k: int, document_ids: list[str]
                    ) -> tuple[list[Hit], str]:  # pragma: no cover - every adapter defines it
        raise NotImplementedError

    def iter_metadata(self, name: str, batch_size: int = 1000
                      ) -> Iterator[tuple[str, dict[str, Any]]]:  # pragma: no cover - every adapter defines it
        raise NotImplementedError

    def serves(self, name: str) -> bool:
        return self.exists(name)

    def search_batch(self, name: str, vectors: list[list[float]], k: int) -> list[list[Hit]]:
        return [self.search(name, v, k) for v in vectors]

    def dify_search_batch(self, name: str, vectors: list[list[float]], k: int, document_ids: list[str]
                          ) -> list[tuple[list[Hit], str]]:
        return [self.dify_search(name, v, k, [d]) for v, d in zip(vectors, document_ids, strict=True)]

    def iter_identities(self, name: str, batch_size: int = 1000) -> Iterator[VectorIdentity]:
        for key, meta in self.iter_metadata(name, batch_size):
            yield VectorIdentity(key, _text(meta.get("doc_id")), _text(meta.get("document_id")),
                                 _text(meta.get("dataset_id")))

    def purge(self, collection: str) -> list[str]:
        dropped = []
        for name in (collection, naming.build_name(collection), naming.previous_name(collection)):
            if self.exists(name):
                self.drop(name)
                dropped.append(name)
        return dropped
