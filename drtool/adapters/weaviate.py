"""Weaviate through weaviate-client v4 (gRPC for data, REST for schema and meta)."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential, wait_random

from drtool.config import WeaviateSettings
from drtool.core import naming
from drtool.core.ports import VectorIdentity, VectorStoreDefaults
from drtool.errors import AuthError, DrtoolError, NotFoundError, UnavailableError, UsageError

log = logging.getLogger("drtool.weaviate")


def _headers(weaviate: WeaviateSettings) -> dict[str, str]:
    return {"Authorization": f"Bearer {weaviate.api_key}"} if weaviate.api_key else {}


_TRANSIENT_TEXT = re.compile(r"UNAVAILABLE|DEADLINE_EXCEEDED|connection (reset|refused|aborted)|timed? ?out|"
                             r"health check|broken pipe", re.IGNORECASE)


def _transient(exc: BaseException) -> bool:
    """A fault that a later try may not meet: the network or an overloaded server, not a refused request."""
    # weaviate-client is slow to import (gRPC, pydantic); only a Weaviate run needs it, not `drtool --help`
    from weaviate.exceptions import (
        WeaviateConnectionError,
        WeaviateGRPCUnavailableError,
        WeaviateStartUpError,
        WeaviateTimeoutError,
    )

    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        return status >= 500 or status == 429
    if isinstance(exc, WeaviateConnectionError | WeaviateGRPCUnavailableError | WeaviateStartUpError
                  | WeaviateTimeoutError | httpx.TransportError | TimeoutError | ConnectionError):
        return True
    return bool(_TRANSIENT_TEXT.search(str(exc)))


def check(weaviate: WeaviateSettings) -> dict[str, Any]:
    if not weaviate.endpoint:
        raise UnavailableError("weaviate.endpoint is not set", system="weaviate")
    url = weaviate.endpoint.rstrip("/") + "/v1/meta"
    system = f"weaviate {weaviate.endpoint}"
    try:
        response = httpx.get(url, headers=_headers(weaviate), timeout=min(10, weaviate.timeout))
    except httpx.HTTPError as exc:
        raise UnavailableError(f"cannot reach {url}: {type(exc).__name__}",
                               hint="check weaviate.endpoint and that Weaviate is running", system=system) from None
    if response.status_code in (401, 403):
        raise AuthError(f"refused with HTTP {response.status_code}", hint="check weaviate.api_key", system=system)
    if response.status_code != 200:
        raise UnavailableError(f"HTTP {response.status_code} from {url}", system=system)
    return {"version": response.json().get("version")}


# --- rebuild-index target ----------------------------------------------------------------------------------------

GENERATION_MARK = "_drtool_"
_AUTH_TEXT = re.compile(
    r"\b(?:status(?: code)?|code|HTTP)\W{0,3}(?:401|403)\b|unauthori[sz]ed|unauthenticated|forbidden", re.I)


def split_endpoint(url: str, default_port: int) -> tuple[str, int, bool]:
    parts = urlsplit(url if "://" in url else "http://" + url)
    secure = parts.scheme in ("https", "grpcs")  # Dify's WEAVIATE_GRPC_ENDPOINT is grpc:// or grpcs://
    return parts.hostname or "localhost", parts.port or (443 if secure else default_port), secure


class WeaviateTarget(VectorStoreDefaults):
    """drtool.core.ports.VectorStore for Weaviate (registered as "weaviate" in drtool.adapters.vector_stores).

    Builds Dify-layout Weaviate collections (the properties, tokenization, index, distance, compression and
    replication Dify's weaviate_vector.py would give them, from the WEAVIATE_* settings) and switches Dify's name.

    Weaviate cannot rename a collection. With `weaviate.switch = copy` (default) a rebuild over an existing
    collection builds and verifies a generation `<name>_drtool_<UTC timestamp>`, copies what `<name>` holds to
    `<name>_drtool_prev` (the rollback point), then replaces `<name>` with a REAL collection filled by copying the
    verified generation's objects with their vectors and UUIDs, checks the count and drops the generation: Dify's
    own `collections.delete(name)`, `create` and `add_property` then act on it exactly as on a collection Dify made.
    Each step leaves a marker in the collection's description, so a rerun after a kill converges; `<name>` is
    only dropped once `_prev` holds it, and the generation only once `<name>` holds all of it.
    With `weaviate.switch = alias` the name is a Weaviate alias over generations (instant), on which Dify's
    delete does nothing and its add-property is refused: documented as such, opt-in.
    """

    backend = "weaviate"
    switches_by_alias = False  # per instance: True only with weaviate.switch = alias
    switch_is_rename = False  # the copy switch re-inserts every object (HNSW again): docs/rebuild-index.md

    def __init__(self, settings: WeaviateSettings, *, uuid_scheme: str = "content") -> None:
        # weaviate-client is slow to import (gRPC, pydantic); only a Weaviate run makes this store
        import weaviate
        from weaviate.classes.init import AdditionalConfig, Auth, Timeout

        if not settings.endpoint:
            raise UnavailableError("weaviate.endpoint is not set", system="weaviate")
        self.settings = settings
        self.uuid_scheme = uuid_scheme
        self.switches_by_alias = settings.switch == "alias"
        self._present: set[str] = set()  # names seen to exist since the last drop or switch (see _require)
        host, port, secure = split_endpoint(settings.endpoint, 8080)
        grpc_host, grpc_port, grpc_secure = split_endpoint(settings.grpc_endpoint or f"{host}:50051", 50051)
        if not settings.grpc_endpoint:
            grpc_secure = secure
        self.client = self._call("connect", weaviate.connect_to_custom,
            http_host=host, http_port=port, http_secure=secure, grpc_host=grpc_host, grpc_port=grpc_port,
            grpc_secure=grpc_secure, skip_init_checks=False,
            auth_credentials=Auth.api_key(settings.api_key) if settings.api_key else None,
            additional_config=AdditionalConfig(timeout=Timeout(
                init=min(20, settings.timeout), query=settings.timeout, insert=2 * settings.timeout)))
        version = str(self.client.get_meta().get("version", "0"))
        self.version = version

    def _error(self, what: str, exc: Exception) -> DrtoolError:
        text = str(exc)
        system = f"weaviate {self.settings.endpoint}"
        # A status code, not any "401" in the text: a URL such as http://127.0.0.1:40129 contains one too, and a
        # refused connection to it was reported as exit 12 "check weaviate.api_key".
        status = getattr(exc, "status_code", None)
        if status in (401, 403) or _AUTH_TEXT.search(text):
            return AuthError(f"{what}: refused: {text[:300]}", hint="check weaviate.api_key", system=system)
        # The client's messages run to several paragraphs; the first non-empty lines carry the reason.
        brief = " ".join(line.strip() for line in text.splitlines() if line.strip())[:300]
        if "grpc" in (type(exc).__name__ + text).lower():
            grpc = self.settings.grpc_endpoint or f"{split_endpoint(self.settings.endpoint or '', 8080)[0]}:50051"
            brief = f"over gRPC at {grpc}: {brief}"
        return UnavailableError(f"{what}: {type(exc).__name__}: {brief}",
                                hint="check weaviate.endpoint/grpc_endpoint, the network and that Weaviate is "
                                     "running; on a slow link raise weaviate.timeout; then re-run (--resume)",
                                system=system)

    def _call(self, what: str, fn: Any, *args: Any, retry: bool = True, **kwargs: Any) -> Any:
        """Run one client call; a reset, timeout or unavailable server is tried again up to weaviate.max_attempts
        times (0.5, 1, 2 … s, capped at 8 s, plus up to 0.5 s of jitter, as for embeddings). Only idempotent calls
        retry: inserts are (object UUIDs are deterministic), creating a collection or an alias is not
        (`retry=False`)."""
        attempts = max(1, self.settings.max_attempts) if retry else 1

        def retryable(exc: BaseException) -> bool:
            return (isinstance(exc, Exception) and not isinstance(exc, DrtoolError) and _transient(exc)
                    and not isinstance(self._error(what, exc), AuthError))

        def announce(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            wait = state.next_action.sleep if state.next_action else 0.0
            log.warning("%s: %s failed (%s), try %d of %d in %.1f s", self.describe(), what, type(exc).__name__,
                        state.attempt_number + 1, attempts, wait)

        try:
            return Retrying(retry=retry_if_exception(retryable), stop=stop_after_attempt(attempts),
                            wait=wait_exponential(multiplier=0.5, max=8) + wait_random(0, 0.5),
                            before_sleep=announce, reraise=True)(fn, *args, **kwargs)
        except DrtoolError:
            raise
        except Exception as exc:
            raise self._error(what, exc) from None

    def describe(self) -> str:
        return f"weaviate {self.settings.endpoint}"

    def alias_target(self, name: str) -> str | None:
        alias = self._call("get alias", self.client.alias.get, alias_name=name)
        return alias.collection if alias is not None else None

    def drop_alias(self, name: str) -> None:
        """Remove a drtool alias (the drill's scratch names); the collections behind it stay."""
        self._present.clear()
        self._call("delete alias", self.client.alias.delete, alias_name=name)

    def exists(self, name: str) -> bool:
        return bool(self._call("exists", self.client.collections.exists, name))

    def _require(self, what: str, name: str) -> None:
        """Weaviate answers a read of a missing collection with a gRPC query error and creates one on insert
        (auto-schema, in the wrong layout): check first, once per name, so a missing collection is NotFoundError
        (exit 10) and nothing is created."""
        if name in self._present:
            return
        if not self.serves(name):
            raise NotFoundError(f"{what} {name}: no such collection", hint="check the collection name",
                                system=self.describe())
        self._present.add(name)

    def dimension(self, name: str) -> int | None:
        self._require("dimension of", name)
        collection = self.client.collections.get(name)
        result = self._call("fetch a vector", collection.query.fetch_objects, limit=1, include_vector=True)
        for obj in result.objects:
            vector = obj.vector.get("default") if isinstance(obj.vector, dict) else obj.vector
            if vector:
                return len(vector)
        return None

    def create(self, name: str, dimension: int) -> None:
        """The collection Dify's weaviate_vector.py `_create_collection` makes, with every property any Dify 1.x
        declares (text, document_id, doc_id, doc_type, chunk_index, and with the summary index is_summary,
        original_chunk_id):
        Dify's `_ensure_properties` then finds nothing to add, whatever its version, and an older Dify ignores the
        extra ones. Other metadata keys (dataset_id, doc_hash, source ...) arrive by auto-schema, as with Dify."""
        # weaviate-client, as in __init__: loaded with the store, not with this module
        from weaviate.classes.config import Configure, DataType, Property, Tokenization

        s = self.settings
        ids = Tokenization(s.id_tokenization)
        properties = [
            Property(name="text", data_type=DataType.TEXT, tokenization=Tokenization(s.tokenization)),
            Property(name="document_id", data_type=DataType.TEXT, tokenization=ids),
            Property(name="doc_id", data_type=DataType.TEXT, tokenization=ids),
            Property(name="doc_type", data_type=DataType.TEXT),
            Property(name="chunk_index", data_type=DataType.INT),
            Property(name="is_summary", data_type=DataType.BOOL),
            Property(name="original_chunk_id", data_type=DataType.TEXT),
        ]
        replication = (Configure.replication(factor=s.replication_factor) if s.replication_factor > 1 else None)
        self._call(f"create {name}", self.client.collections.create, name, retry=False, properties=properties,
                   vector_config=[Configure.Vectors.self_provided(name="default",
                                                                  vector_index_config=self._index_config())],
                   replication_config=replication)

    def _quantizer(self) -> Any:
        """WEAVIATE_COMPRESSION as Dify maps it (a fresh object per call: one cannot serve two index configs)."""
        # weaviate-client: as in __init__
        from weaviate.classes.config import Configure

        s = self.settings
        quantizer = Configure.VectorIndex.Quantizer
        if s.compression == "rq":
            return quantizer.rq(bits=s.rq_bits, cache=s.compression_cache)
        if s.compression == "pq":
            return quantizer.pq(segments=s.pq_segments, training_limit=s.pq_training_limit)
        if s.compression == "bq":
            return quantizer.bq(cache=s.compression_cache)
        if s.compression == "sq":
            return quantizer.sq(training_limit=s.sq_training_limit, cache=s.compression_cache)
        return None

    def _index_config(self) -> Any:
        """WEAVIATE_INDEX_TYPE / DISTANCE_METRIC / COMPRESSION as Dify maps them; a flat index takes only BQ, which
        Dify refuses too (a ValueError there, exit 2 here, before anything is written)."""
        # weaviate-client: as in __init__
        from weaviate.classes.config import Configure, VectorDistances

        s = self.settings
        distance = VectorDistances(s.distance)
        if s.index_type == "flat":
            if s.compression not in ("none", "bq"):
                raise UsageError(f"a flat Weaviate index takes only bq compression, not {s.compression}",
                                 hint="set weaviate.compression (WEAVIATE_COMPRESSION) to bq or none, as Dify needs")
            return Configure.VectorIndex.flat(distance_metric=distance, quantizer=self._quantizer())
        if s.index_type == "dynamic":
            flat_quantizer = self._quantizer() if s.compression in ("none", "bq") else None
            return Configure.VectorIndex.dynamic(
                distance_metric=distance, threshold=s.dynamic_threshold,
                hnsw=Configure.VectorIndex.hnsw(distance_metric=distance, quantizer=self._quantizer()),
                flat=Configure.VectorIndex.flat(distance_metric=distance, quantizer=flat_quantizer))
        return Configure.VectorIndex.hnsw(distance_metric=distance, quantizer=self._quantizer())

    def drop(self, name: str) -> None:
        self._present.clear()
        self._call(f"delete {name}", self.client.collections.delete, name)

    def load(self, name: str) -> None:
        pass  # Weaviate serves what it stores

    def object_key(self, text: str, meta: dict[str, Any]) -> str | None:
        return str(self._uuid(text, meta))

    def _uuid(self, text: str, meta: dict[str, Any]) -> uuid.UUID:
        if self.uuid_scheme == "doc-id":  # Dify main after PR #41915 (Sept 2026), lts/1.13.x after #41961
            try:
                return uuid.UUID(str(meta["doc_id"]))
            except ValueError:
                return uuid.uuid5(uuid.NAMESPACE_URL, str(meta["doc_id"]))
        return uuid.uuid5(uuid.NAMESPACE_URL, text)  # every Dify release up to 1.17.x

    def insert(self, name: str, rows: list[tuple[str, dict[str, Any], list[float]]]) -> int:
        # weaviate-client: as in __init__
        from weaviate.classes.data import DataObject

        objects = []
        for text, meta, vector in rows:
            props: dict[str, Any] = {k: v for k, v in meta.items() if v is not None}
            if "position" in props and "chunk_index" not in props and isinstance(props["position"], int):
                props["chunk_index"] = props["position"]
            props["text"] = text
            objects.append(DataObject(properties=props, uuid=self._uuid(text, meta), vector={"default": vector}))
        self._require("insert into", name)
        collection = self.client.collections.get(name)
        result = self._call(f"insert into {name}", collection.data.insert_many, objects)
        if result.has_errors:
            first = next(iter(result.errors.values()))
            raise UnavailableError(f"insert into {name}: {len(result.errors)} object(s) refused: {first.message}",
                                   system=self.describe())
        return len(objects)

    def delete_doc_ids(self, name: str, doc_ids: list[str]) -> int:
        # Object UUIDs are deterministic: re-inserting the batch after a crash overwrites, never duplicates.
        return 0

    def count(self, name: str) -> int:
        self._require("count", name)
        collection = self.client.collections.get(name)
        result = self._call(f"count {name}", collection.aggregate.over_all, total_count=True)
        return int(result.total_count or 0)

    def finish(self, name: str) -> None:
        pass

    def _hits(self, result: Any) -> list[dict[str, Any]]:
        hits = []
        for obj in result.objects:
            props = dict(obj.properties)
            text = props.pop("text", None)
            distance = obj.metadata.distance if obj.metadata else None
            hits.append({"text": text, "metadata": props, "score": None if distance is None else 1 - distance})
        return hits

    def search(self, name: str, vector: list[float], k: int) -> list[dict[str, Any]]:
        # weaviate-client: as in __init__
        from weaviate.classes.query import MetadataQuery

        self._require("search", name)
        collection = self.client.collections.get(name)
        result = self._call("search", collection.query.near_vector, near_vector=vector, target_vector="default",
                            limit=k, return_metadata=MetadataQuery(distance=True))
        return self._hits(result)

    def dify_search(self, name: str, vector: list[float], k: int, document_ids: list[str]
                    ) -> tuple[list[dict[str, Any]], str]:
        # weaviate-client: as in __init__
        from weaviate.classes.query import Filter, MetadataQuery

        self._require("search", name)
        collection = self.client.collections.get(name)
        result = self._call("search", collection.query.near_vector, near_vector=vector, target_vector="default",
                            limit=k, filters=Filter.by_property("document_id").contains_any(document_ids),
                            return_metadata=MetadataQuery(distance=True))
        return self._hits(result), f"document_id contains_any {document_ids}"

    def build_name(self, collection: str) -> str:
        """`<collection>_drtool_<UTC time to the microsecond>`: unique, sortable, and never the name of a build
        the copy switch already consumed (its markers name the build)."""
        now = time.time()
        return (f"{collection}{GENERATION_MARK}{time.strftime('%Y%m%d%H%M%S', time.gmtime(now))}"
                f"{int(now % 1 * 1_000_000):06d}")

    def _generations(self, collection: str) -> list[str]:
        names = self._call("list collections", self.client.collections.list_all, simple=True)
        prefix = collection + GENERATION_MARK
        return sorted(n for n in names if n.startswith(prefix) and n[len(prefix):].isdigit())

    def confirm_needed(self, collection: str) -> str | None:
        if not self.switches_by_alias:
            return None  # copy switch: what the name holds is copied to <name>_drtool_prev first, for --rollback
        if self.alias_target(collection) is None and self.exists(collection):
            return (f"{collection} is a collection, not a drtool alias: Weaviate cannot rename it, so switching "
                    "deletes it (no --rollback to it)")
        return None

    def switch(self, collection: str, build: str, *, drop_old: bool) -> str:
        self._present.clear()
        if not self.switches_by_alias:
            return self._copy_switch(collection, build, drop_old=drop_old)
        return self._alias_switch(collection, build, drop_old=drop_old)

    def rollback(self, collection: str) -> str:
        self._present.clear()
        if self.alias_target(collection) is not None:
            return self._alias_rollback(collection)
        return self._copy_rollback(collection)

    # -- the copy switch: a real collection under Dify's name -----------------------------------------------------
    # Markers in a collection's description say how far a switch got, so that a rerun (rebuild-index --resume,
    # or --rollback again) finishes it from what Weaviate holds; Dify never sets or reads a description.

    def _marker(self, name: str) -> str | None:
        """The description of a real collection ("" for none), None when `name` is absent or an alias."""
        if self.alias_target(name) is not None or not self.exists(name):
            return None
        config = self._call(f"read the schema of {name}", self.client.collections.export_config, name)
        return config.description or ""

    def _mark(self, name: str, marker: str) -> None:
        collection = self.client.collections.get(name)
        self._call(f"mark {name}", collection.config.update, description=marker)

    def _clone_empty(self, source: str, dest: str, marker: str) -> None:
        """`dest` with the schema of `source` (properties with their tokenization, vector index, compression,
        replication, auto-schema properties included): a copy answers Dify exactly as its source did."""
        config = self._call(f"read the schema of {source}", self.client.collections.export_config, source)
        schema = config.to_dict()
        schema["class"] = dest
        schema["description"] = marker
        self._call(f"create {dest}", self.client.collections.create_from_dict, schema, retry=False)

    def _copy_objects(self, source: str, dest: str) -> int:
        """Every object of `source` into `dest` with its UUID, properties and vectors (no re-embedding), in
        weaviate.copy_batch_size batches. UUIDs are kept, so copying again after a kill overwrites, never
        duplicates. Returns the objects sent."""
        # weaviate-client: as in __init__
        from weaviate.classes.data import DataObject

        size = max(1, self.settings.copy_batch_size)
        config = self._call(f"read the schema of {dest}", self.client.collections.export_config, dest)
        named = bool(config.vector_config)  # Dify <= 1.9.1 (client v3) collections have one unnamed vector
        src = self.client.collections.get(source)
        dst = self.client.collections.get(dest)
        sent = 0
        batch: list[Any] = []

        def flush() -> None:
            nonlocal sent, batch
            if not batch:
                return
            result = self._call(f"insert into {dest}", dst.data.insert_many, batch)
            if result.has_errors:
                first = next(iter(result.errors.values()))
                raise UnavailableError(f"copy {source} -> {dest}: {len(result.errors)} object(s) refused: "
                                       f"{first.message}", system=self.describe())
            sent += len(batch)
            batch = []

        try:
            for obj in src.iterator(include_vector=True, cache_size=size):
                vector: Any = obj.vector
                if isinstance(vector, dict) and not named:
                    vector = vector.get("default") or next(iter(vector.values()), None)
                batch.append(DataObject(properties=dict(obj.properties or {}), uuid=obj.uuid, vector=vector or None))
                if len(batch) >= size:
                    flush()
            flush()
        except DrtoolError:
            raise
        except Exception as exc:
            raise self._error(f"copy {source} -> {dest}", exc) from None
        return sent

    def _copy_verified(self, source: str, dest: str) -> tuple[int, float]:
        """Copy and prove it: `dest` counts as many objects as `source` (a second pass once, should Dify have
        written to `source` meanwhile). Returns (objects, seconds)."""
        t = time.monotonic()
        for attempt in (1, 2):
            self._copy_objects(source, dest)
            want, got = self.count(source), self.count(dest)
            if want == got:
                return got, time.monotonic() - t
            if attempt == 2:
                raise UnavailableError(f"copy {source} -> {dest}: {got} objects, {source} has {want}",
                                       hint="rerun (rebuild-index --resume, or --rollback again): the copy is "
                                            "repeated; nothing was dropped", system=self.describe())
        raise AssertionError("unreachable")

    def _copy_switch(self, collection: str, build: str, *, drop_old: bool) -> str:
        """Make `collection` a real collection holding a copy of the verified `build` (see the class docstring).

        A: what `collection` holds now (a Dify collection, a drtool copy, or an older drtool alias) is copied to
           `<collection>_drtool_prev`, marked complete: the rollback point.
        B: `collection` is dropped (or its alias deleted) and created again with `build`'s schema, then filled from
           `build` and marked complete. From the drop to the mark Dify's name is missing (milliseconds) then
           partial: the measured window, reported.
        C: `build` and every other generation are dropped; with drop_old also `_prev`.
        Killed anywhere, the next call skips the steps whose markers are there and repeats the others: the name is
        never dropped before `_prev` is complete, the build never before the name is."""
        prev = naming.previous_name(collection)
        copying, complete = f"drtool: copying {build}", f"drtool: copy of {build}, complete"
        prev_done = f"drtool: {collection} before {build}, complete"
        done: list[str] = []
        state = self._marker(collection)
        if state != complete and not self.exists(build):
            raise NotFoundError(f"the verified build {build} is gone before {collection} holds a copy of it",
                                hint="rerun rebuild-index with --force to build again", system=self.describe())
        # A: keep what the name holds for --rollback
        if state not in (copying, complete) and self.serves(collection) and self._marker(prev) != prev_done:
            source = self.alias_target(collection) or collection
            if self.exists(prev):
                self.drop(prev)
            self._clone_empty(source, prev, f"drtool: copying {collection} before {build}")
            n, _ = self._copy_verified(source, prev)
            self._mark(prev, prev_done)
            done.append(f"kept {collection} as {prev} ({n} objects)")
        if state != complete:  # B: the name becomes a real collection holding the build
            window = time.monotonic()
            alias = self.alias_target(collection)
            if alias is not None:
                self.drop_alias(collection)
            elif state != copying and self.exists(collection):
                self.drop(collection)
            if not self.exists(collection):
                self._clone_empty(build, collection, copying)
            n, _ = self._copy_verified(build, collection)
            self._mark(collection, complete)
            seconds = time.monotonic() - window
            done.append(f"copied {build} into {collection} ({n} objects; the name was missing or partial for "
                        f"{seconds:.2f} s)")
            log.info("%s: %s replaced by a copy of %s: %d objects, name missing or partial for %.2f s",
                     self.describe(), collection, build, n, seconds)
        for name in self._generations(collection):  # C
            self.drop(name)
            done.append(f"dropped {name}")
        if drop_old and self.exists(prev):
            self.drop(prev)
            done.append(f"dropped {prev} (--drop-old)")
        return ", ".join(done)

    def _copy_rollback(self, collection: str) -> str:
        """Swap `collection` and `_prev` back (again: swaps back): `_prev` is first copied to a generation marked
        as the rollback source, which then goes through the copy switch like a verified build; a rerun after a
        kill finds that generation and finishes the switch."""
        prev = naming.previous_name(collection)
        source_done = f"drtool: rollback source from {prev}, complete"
        for generation in reversed(self._generations(collection)):
            if self._marker(generation) == source_done:
                return self._copy_switch(collection, generation, drop_old=False)
        if not (self._marker(prev) or "").endswith(", complete"):
            raise NotFoundError(f"no previous collection {prev} to roll back to",
                                hint="it was dropped (--drop-old), left incomplete, or no switch happened",
                                system=self.describe())
        for generation in self._generations(collection):  # a rollback source killed mid-copy, a failed build
            self.drop(generation)
        generation = self.build_name(collection)
        self._clone_empty(prev, generation, f"drtool: rollback source from {prev}, copying")
        self._copy_verified(prev, generation)
        self._mark(generation, source_done)
        return self._copy_switch(collection, generation, drop_old=False)

    # -- the alias switch (weaviate.switch = alias) -----------------------------------------------------------------

    def _alias_switch(self, collection: str, build: str, *, drop_old: bool) -> str:
        current = self.alias_target(collection)
        done: list[str] = []
        if current is None and self.exists(collection):
            self.drop(collection)
            done.append(f"deleted collection {collection} (Weaviate cannot rename; confirmed with --yes)")
        if current is None:
            self._call("create alias", self.client.alias.create, alias_name=collection, target_collection=build,
                       retry=False)
            done.append(f"alias {collection} -> {build}")
        else:
            self._call("update alias", self.client.alias.update, alias_name=collection, new_target_collection=build)
            done.append(f"alias {collection}: {current} -> {build}")
        for name in self._generations(collection):
            if name == build or (name == current and not drop_old):
                continue
            self.drop(name)
            done.append(f"dropped {name}" + (" (--drop-old)" if name == current else ""))
        return ", ".join(done)

    def _alias_rollback(self, collection: str) -> str:
        current = self.alias_target(collection)
        others = [g for g in self._generations(collection) if g != current]
        if current is None or not others:
            raise NotFoundError(f"no previous generation of {collection} to roll back to",
                                hint="it was dropped (--drop-old) or no alias switch happened",
                                system=self.describe())
        self._call("update alias", self.client.alias.update, alias_name=collection,
                   new_target_collection=others[-1])
        return f"alias {collection}: {current} -> {others[-1]}"

    def iter_properties(self, name: str, wanted: tuple[str, ...], batch_size: int = 1000
                        ) -> Iterator[tuple[str, dict[str, Any]]]:
        """(uuid, properties) of every object behind `name` (a collection or a drtool alias), streamed by cursor.

        Properties the schema does not have yet are skipped: auto-schema creates one only once a value is seen.
        """
        real = name if self.exists(name) else self.alias_target(name)
        if real is None:
            return
        collection = self.client.collections.get(real)
        config = self._call(f"read the schema of {real}", collection.config.get)
        present = {p.name for p in config.properties}
        props = [p for p in wanted if p in present]
        try:
            for obj in collection.iterator(return_properties=props or None, cache_size=batch_size):
                yield str(obj.uuid), dict(obj.properties or {})
        except DrtoolError:
            raise
        except Exception as exc:
            raise self._error(f"iterate {real}", exc) from None

    # -- the rest of the VectorStore port (drtool.core.ports), on top of the methods above

    def serves(self, name: str) -> bool:
        """A collection, or a drtool alias (the blue/green switch) that points at one."""
        return self.exists(name) or self.alias_target(name) is not None

    def _served(self, name: str) -> str:
        real = name if self.exists(name) else self.alias_target(name)
        if real is None:
            raise NotFoundError(f"no collection or alias {name}", hint="check the collection name",
                                system=self.describe())
        return real

    def iter_metadata(self, name: str, batch_size: int = 1000) -> Iterator[tuple[str, dict[str, Any]]]:
        """(uuid, every property but the text) of each object behind `name`, streamed by cursor."""
        collection = self.client.collections.get(self._served(name))
        try:
            for obj in collection.iterator(cache_size=batch_size):
                props = dict(obj.properties or {})
                props.pop("text", None)
                yield str(obj.uuid), props
        except DrtoolError:
            raise
        except Exception as exc:
            raise self._error(f"iterate {name}", exc) from None

    def iter_identities(self, name: str, batch_size: int = 1000) -> Iterator[VectorIdentity]:
        """Only the three identity properties are transferred (verify reads every object of a collection)."""
        self._served(name)
        for key, props in self.iter_properties(name, ("doc_id", "document_id", "dataset_id"), batch_size):
            yield VectorIdentity(key, *(None if props.get(p) is None else str(props[p])
                                        for p in ("doc_id", "document_id", "dataset_id")))

    def purge(self, collection: str) -> list[str]:
        """The alias `collection`, every generation behind it, and a collection of that name."""
        dropped: list[str] = []
        for generation in self._generations(collection):
            self.drop(generation)
            dropped.append(generation)
        if self.alias_target(collection) is not None:
            self.drop_alias(collection)
        return dropped + super().purge(collection)

    def close(self) -> None:
        self.client.close()
