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
from drtool.errors import AuthError, DrtoolError, NotFoundError, UnavailableError

log = logging.getLogger("drtool.weaviate")


def _headers(weaviate: WeaviateSettings) -> dict[str, str]:
    return {"Authorization": f"Bearer {weaviate.api_key}"} if weaviate.api_key else {}


_TRANSIENT_TEXT = re.compile(r"UNAVAILABLE|DEADLINE_EXCEEDED|connection (reset|refused|aborted)|timed? ?out|"
                             r"health check|broken pipe", re.IGNORECASE)


def _transient(exc: BaseException) -> bool:
    """A fault that a later try may not meet: the network or an overloaded server, not a refused request."""
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


def _split_endpoint(url: str, default_port: int) -> tuple[str, int, bool]:
    parts = urlsplit(url if "://" in url else "http://" + url)
    secure = parts.scheme == "https"
    return parts.hostname or "localhost", parts.port or (443 if secure else default_port), secure


class WeaviateTarget:
    """Builds Dify-layout Weaviate collections and switches what Dify queries with a Weaviate alias.

    Weaviate cannot rename a collection; since 1.32 an alias answers for a collection name in queries and
    writes. drtool builds a generation collection `<name>_drtool_<UTC timestamp>` and points the alias `<name>` at
    it; the previous generation is kept for `--rollback`. A Dify-created collection that holds the name itself must
    be deleted for the alias to take the name (confirmed with --yes).
    """

    backend = "weaviate"
    switches_by_alias = True

    def __init__(self, settings: WeaviateSettings, *, uuid_scheme: str = "content") -> None:
        import weaviate
        from weaviate.classes.init import AdditionalConfig, Auth, Timeout

        if not settings.endpoint:
            raise UnavailableError("weaviate.endpoint is not set", system="weaviate")
        self.settings = settings
        self.uuid_scheme = uuid_scheme
        host, port, secure = _split_endpoint(settings.endpoint, 8080)
        grpc_host, grpc_port, grpc_secure = _split_endpoint(settings.grpc_endpoint or f"{host}:50051", 50051)
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
            grpc = self.settings.grpc_endpoint or f"{_split_endpoint(self.settings.endpoint or '', 8080)[0]}:50051"
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
        self._call("delete alias", self.client.alias.delete, alias_name=name)

    def exists(self, name: str) -> bool:
        return bool(self._call("exists", self.client.collections.exists, name))

    def dimension(self, name: str) -> int | None:
        collection = self.client.collections.get(name)
        result = self._call("fetch a vector", collection.query.fetch_objects, limit=1, include_vector=True)
        for obj in result.objects:
            vector = obj.vector.get("default") if isinstance(obj.vector, dict) else obj.vector
            if vector:
                return len(vector)
        return None

    def create(self, name: str, dimension: int) -> None:
        from weaviate.classes.config import Configure, DataType, Property, Tokenization

        # Dify's properties (weaviate_vector.py); other metadata keys arrive by auto-schema, as with Dify.
        properties = [
            Property(name="text", data_type=DataType.TEXT, tokenization=Tokenization.WORD),
            Property(name="document_id", data_type=DataType.TEXT),
            Property(name="doc_id", data_type=DataType.TEXT),
            Property(name="doc_type", data_type=DataType.TEXT),
            Property(name="chunk_index", data_type=DataType.INT),
        ]
        self._call(f"create {name}", self.client.collections.create, name, retry=False, properties=properties,
                   vector_config=[Configure.Vectors.self_provided(name="default")])

    def drop(self, name: str) -> None:
        self._call(f"delete {name}", self.client.collections.delete, name)

    def load(self, name: str) -> None:
        pass  # Weaviate serves what it stores

    def object_key(self, text: str, meta: dict[str, Any]) -> str | None:
        return str(self._uuid(text, meta))

    def _uuid(self, text: str, meta: dict[str, Any]) -> uuid.UUID:
        if self.uuid_scheme == "doc-id":  # Dify after ~1.17: the chunk id is the object UUID
            try:
                return uuid.UUID(str(meta["doc_id"]))
            except ValueError:
                return uuid.uuid5(uuid.NAMESPACE_URL, str(meta["doc_id"]))
        return uuid.uuid5(uuid.NAMESPACE_URL, text)  # Dify up to ~1.17

    def insert(self, name: str, rows: list[tuple[str, dict[str, Any], list[float]]]) -> int:
        from weaviate.classes.data import DataObject

        objects = []
        for text, meta, vector in rows:
            props: dict[str, Any] = {k: v for k, v in meta.items() if v is not None}
            if "position" in props and "chunk_index" not in props and isinstance(props["position"], int):
                props["chunk_index"] = props["position"]
            props["text"] = text
            objects.append(DataObject(properties=props, uuid=self._uuid(text, meta), vector={"default": vector}))
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
        from weaviate.classes.query import MetadataQuery

        collection = self.client.collections.get(name)
        result = self._call("search", collection.query.near_vector, near_vector=vector, target_vector="default",
                            limit=k, return_metadata=MetadataQuery(distance=True))
        return self._hits(result)

    def dify_search(self, name: str, vector: list[float], k: int, document_ids: list[str]
                    ) -> tuple[list[dict[str, Any]], str]:
        from weaviate.classes.query import Filter, MetadataQuery

        collection = self.client.collections.get(name)
        result = self._call("search", collection.query.near_vector, near_vector=vector, target_vector="default",
                            limit=k, filters=Filter.by_property("document_id").contains_any(document_ids),
                            return_metadata=MetadataQuery(distance=True))
        return self._hits(result), f"document_id contains_any {document_ids}"

    def build_name(self, collection: str) -> str:
        return f"{collection}{GENERATION_MARK}{time.strftime('%Y%m%d%H%M%S', time.gmtime())}"

    def _generations(self, collection: str) -> list[str]:
        names = self._call("list collections", self.client.collections.list_all, simple=True)
        prefix = collection + GENERATION_MARK
        return sorted(n for n in names if n.startswith(prefix) and n[len(prefix):].isdigit())

    def confirm_needed(self, collection: str) -> str | None:
        if self.alias_target(collection) is None and self.exists(collection):
            return (f"{collection} is a collection, not a drtool alias: Weaviate cannot rename it, so switching "
                    "deletes it (no --rollback to it)")
        return None

    def switch(self, collection: str, build: str, *, drop_old: bool) -> str:
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

    def rollback(self, collection: str) -> str:
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

    def close(self) -> None:
        self.client.close()
