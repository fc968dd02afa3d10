"""Milvus through pymilvus: a server URI or a Milvus Lite file, one code path for both."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from importlib.util import find_spec
from typing import Any

from drtool.config import MilvusSettings
from drtool.core import naming
from drtool.core.ports import VectorStoreDefaults
from drtool.errors import AuthError, ConfigError, DrtoolError, LockedError, NotFoundError, UnavailableError

log = logging.getLogger("drtool.milvus")


def connect(milvus: MilvusSettings) -> Any:
    # pymilvus is slow to import (gRPC, protobuf); only a Milvus run needs it, not `drtool --help`
    from pymilvus import MilvusClient

    if not milvus.uri:
        raise UnavailableError("milvus.uri is not set", system="milvus")
    kwargs: dict[str, Any] = {"uri": milvus.uri}
    if milvus.token:
        kwargs["token"] = milvus.token
    elif milvus.user:
        kwargs["user"], kwargs["password"] = milvus.user, milvus.password or ""
    if milvus.database and milvus.database != "default" and "://" in milvus.uri:
        kwargs["db_name"] = milvus.database
    if "://" not in milvus.uri and not _lite_installed():
        raise ConfigError(f"milvus.uri {milvus.uri} is a Milvus Lite file, and Milvus Lite is not installed",
                          hint="pip install 'drtool[lite]', or set milvus.uri to a Milvus server "
                               "(http://HOST:19530)")
    try:
        return MilvusClient(**kwargs)
    except Exception as exc:
        if "://" not in milvus.uri and _lite_file_in_use(milvus.uri):
            raise LockedError(f"the Milvus Lite file {milvus.uri} is open in another process (Milvus Lite serves "
                              "one process per file)",
                              hint="wait for that process (another drtool run, or the application using the "
                                   "file) to finish, or use a Milvus server", system=f"milvus {milvus.uri}") from None
        raise translate_error(exc, milvus) from None


def _lite_installed() -> bool:
    """Milvus Lite (the `lite` extra) is optional: pymilvus alone talks to a server."""
    return find_spec("milvus_lite") is not None


def _lite_file_in_use(uri: str) -> bool:
    """Milvus Lite holds an exclusive flock on <file>/LOCK while a process has the file open."""
    # fcntl is POSIX-only; Milvus Lite, its only user here, has no Windows build
    import fcntl

    lock = os.path.join(uri, "LOCK")
    try:
        fd = os.open(lock, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


# gRPC status names that mean "who you are" or "what you may do" was refused (never retried, exit 12).
_AUTH_STATUS = frozenset({"UNAUTHENTICATED", "PERMISSION_DENIED"})


def _grpc_refusal(exc: BaseException) -> str | None:
    """The gRPC details of an auth refusal anywhere in the exception chain, else None.

    A Milvus server with authorization on refuses bad credentials while pymilvus connects, and pymilvus reports that
    as "Fail connecting to server ... illegal connection params or server unavailable" (code 2) with the
    UNAUTHENTICATED RpcError only as its cause; a missing privilege comes back as a bare PERMISSION_DENIED RpcError.
    pymilvus chains `raise e from e`, so the walk stops at an exception seen before.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        code = getattr(current, "code", None)
        try:
            status = getattr(code() if callable(code) else code, "name", None)
        except TypeError:  # a `code` method of some other exception type that wants arguments
            status = None
        if status in _AUTH_STATUS:
            details = getattr(current, "details", None)
            return f"{status}: {details() if callable(details) else current}"
        current = current.__cause__ or current.__context__
    return None


_COLLECTION_NOT_EXISTS = 100
_MISSING_ALIAS = re.compile(r"alias .*(?:not exist|not found)|can't find alias", re.I)  # a name that is no alias
_MISSING_COLLECTION = re.compile(r"collection \S+ does not exist|collection not found|can't find collection", re.I)


def translate_error(exc: Exception, milvus: MilvusSettings) -> DrtoolError:
    text = str(exc)
    system = f"milvus {milvus.uri}"
    refusal = _grpc_refusal(exc)
    if refusal is not None:
        return AuthError(f"refused: {refusal}", hint="check milvus.token or milvus.user/password and the user's "
                         "privileges", system=system)
    if any(s in text.lower() for s in ("auth", "credential", "permission", "unauthenticated", "privilege")):
        return AuthError(f"refused: {text}", hint="check milvus.token or milvus.user/password", system=system)
    # Milvus' CollectionNotExists (code 100): "collection 'x' does not exist" (Lite, 2.4+), "collection not
    # found[...]" (2.3). A name that is not there is exit 10, as for the other vector stores, not a server fault.
    if getattr(exc, "code", None) == _COLLECTION_NOT_EXISTS or _MISSING_COLLECTION.search(text):
        return NotFoundError(f"{type(exc).__name__}: {text}", hint="check the collection name (datasets.index_struct "
                             "or vector.index_prefix) and milvus.database", system=system)
    return UnavailableError(f"{type(exc).__name__}: {text}", hint="check milvus.uri and that Milvus is running",
                            system=system)


def check(milvus: MilvusSettings) -> dict[str, Any]:
    uri = milvus.uri or ""
    if uri and "://" not in uri and not _lite_installed():
        connect(milvus)  # the configuration error naming the `lite` extra comes first
    if uri and "://" not in uri and not os.path.exists(uri):
        # Opening a Lite path creates it: a mistyped path would pass here and leave an empty index file behind.
        raise NotFoundError(f"Milvus Lite file {uri} does not exist (not created by config check)",
                            hint="check milvus.uri for a typo; a new index is created by the first rebuild-index",
                            system=f"milvus {uri}")
    client = connect(milvus)
    try:
        collections = client.list_collections()
        try:
            version = client.get_server_version()
        except Exception:  # Milvus Lite does not report a version on every release
            version = "lite" if "://" not in (milvus.uri or "") else "unknown"
    except Exception as exc:
        raise translate_error(exc, milvus) from None
    finally:
        client.close()
    return {"version": version, "collections": len(collections)}


# --- rebuild-index target ----------------------------------------------------------------------------------------

# Dify's layout (core/rag/datasource/vdb/milvus/milvus_vector.py); the exact names matter, Dify queries them.
FIELD_ID, FIELD_TEXT, FIELD_META, FIELD_VECTOR = "id", "page_content", "metadata", "vector"
INDEX_PARAMS = {"M": 8, "efConstruction": 64}
# Dify's hybrid search (MILVUS_ENABLE_HYBRID_SEARCH, Milvus >= 2.5): Milvus computes this field from the text with
# a BM25 function at insert time, so a rebuild only declares it; nothing is embedded for it.
FIELD_SPARSE, BM25_FUNCTION = "sparse_vector", "text_bm25_emb"


def full_text_supported(server_version: str) -> bool:
    """Dify's own test (milvus_vector.py `_check_hybrid_search_support`): a server of 2.5.0 or newer. Milvus Lite
    (`milvus_lite-<v>`, which Dify does not run) has BM25 functions since 2.5 as well."""
    text = server_version.removeprefix("milvus_lite-").lstrip("v")
    try:
        major, minor = (int(part) for part in text.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (2, 5)
# Every read drtool judges by (the gate's count and searches, resume's "what did the killed run store", verify's
# scan) waits until the server has applied every earlier write. A server otherwise answers at bounded/session
# consistency: a process that did not write (a --resume, `drtool verify`) may see a partial collection. Costs
# about one time-tick (~0.2 s) per read on a server; Milvus Lite answers at once either way.
READ_CONSISTENCY = "Strong"


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


LITE_FLUSH_ROWS = 8192  # Milvus Lite: flush a collection being filled every this many rows (bounds the index build)


class MilvusTarget(VectorStoreDefaults):
    """drtool.core.ports.VectorStore for Milvus (registered as "milvus" in drtool.adapters.vector_stores): builds,
    checks and switches Dify-layout collections; one code path for a server URI and Milvus Lite.

    Switching is a rename (`rename_collection`), not an alias: Dify calls has_collection/drop_collection on the
    name it knows, which must therefore be a real collection. Renaming releases a collection, so it is loaded again.
    """

    backend = "milvus"
    switches_by_alias = False
    switch_is_rename = True

    def __init__(self, settings: MilvusSettings) -> None:
        self.settings = settings
        self.client = connect(settings)
        self.lite = "://" not in (settings.uri or "")
        self._json_in_supported = True
        self._unflushed: dict[str, int] = {}  # Lite: rows inserted per collection since its last flush
        self.flushes = 0

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DrtoolError:
            raise
        except Exception as exc:
            err = translate_error(exc, self.settings)
            err.message = f"{what}: {err.message}"
            raise err from None

    @property
    def single_process(self) -> bool:
        """Milvus Lite is a file one process opens: a sharded rebuild's workers could not share it."""
        return self.lite

    def describe(self) -> str:
        return f"milvus {self.settings.uri}"

    def exists(self, name: str) -> bool:
        return bool(self._call("has_collection", self.client.has_collection, name))

    def alias_target(self, name: str) -> str | None:
        """drtool makes no Milvus alias, but an operator may have (Lite has them too); has_collection is true for
        one, so only describe_alias tells them apart."""
        quiet = logging.getLogger("pymilvus")
        level = quiet.level
        quiet.setLevel(logging.CRITICAL)  # pymilvus logs a traceback for every name that is not an alias
        try:
            answer = self._call(f"describe_alias {name}", self.client.describe_alias, name)
        except NotFoundError:  # "alias 'x' does not exist" comes with CollectionNotExists' code 100
            return None
        except UnavailableError as exc:
            if _MISSING_ALIAS.search(exc.message):
                return None
            raise
        finally:
            quiet.setLevel(level)
        target = answer.get("collection_name") if isinstance(answer, dict) else None
        return str(target) if target else None

    def dimension(self, name: str) -> int | None:
        info = self._call(f"describe {name}", self.client.describe_collection, name)
        for f in info.get("fields", []):
            if f.get("name") == FIELD_VECTOR:
                return int(f.get("params", {}).get("dim"))
        return None

    def create(self, name: str, dimension: int) -> None:
        # pymilvus, as in connect: loaded with the store, not with this module
        from pymilvus import DataType, Function, FunctionType, MilvusClient

        hybrid = self._hybrid()
        schema = MilvusClient.create_schema(auto_id=True, enable_dynamic_field=False)
        schema.add_field(FIELD_ID, DataType.INT64, is_primary=True)
        analyzer: dict[str, Any] = {"enable_analyzer": True} if hybrid else {}
        if hybrid and self.settings.analyzer_params:
            try:
                analyzer["analyzer_params"] = json.loads(self.settings.analyzer_params)
            except ValueError as exc:
                raise ConfigError(f"milvus.analyzer_params is not JSON: {exc}",
                                  hint="copy MILVUS_ANALYZER_PARAMS from Dify's .env as it is") from None
        schema.add_field(FIELD_TEXT, DataType.VARCHAR, max_length=65535, **analyzer)
        schema.add_field(FIELD_META, DataType.JSON)
        schema.add_field(FIELD_VECTOR, DataType.FLOAT_VECTOR, dim=dimension)
        index = self.client.prepare_index_params()
        index.add_index(field_name=FIELD_VECTOR, index_type="HNSW", metric_type="IP", params=INDEX_PARAMS)
        if hybrid:
            schema.add_field(FIELD_SPARSE, DataType.SPARSE_FLOAT_VECTOR)
            schema.add_function(Function(name=BM25_FUNCTION, input_field_names=[FIELD_TEXT],
                                         output_field_names=[FIELD_SPARSE], function_type=FunctionType.BM25))
            # Dify asks a server for AUTOINDEX; Milvus Lite accepts only the index AUTOINDEX resolves to.
            index.add_index(field_name=FIELD_SPARSE, metric_type="BM25",
                            index_type="SPARSE_INVERTED_INDEX" if self.lite else "AUTOINDEX")
        self._call(f"create {name}", self.client.create_collection, name, schema=schema, index_params=index,
                   consistency_level="Session")

    def _hybrid(self) -> bool:
        """Whether collections get Dify's full-text fields: asked for, and the server has BM25 functions. Dify
        itself leaves them out on an older server (and then answers full-text searches with nothing), so drtool
        does the same, and says so."""
        if not self.settings.enable_hybrid_search:
            return False
        version = str(self._call("get_server_version", self.client.get_server_version))
        if full_text_supported(version):
            return True
        if not getattr(self, "_warned_hybrid", False):
            self._warned_hybrid = True
            log.warning("milvus.enable_hybrid_search is on but %s runs Milvus %s: without BM25 functions (>= 2.5) "
                        "Dify builds no full-text fields either, so none are built", self.describe(), version)
        return False

    def drop(self, name: str) -> None:
        self._call(f"drop {name}", self.client.drop_collection, name)

    def load(self, name: str) -> None:
        self._call(f"load {name}", self.client.load_collection, name)

    def insert(self, name: str, rows: list[tuple[str, dict[str, Any], list[float]]]) -> int:
        data = [{FIELD_TEXT: text, FIELD_META: meta, FIELD_VECTOR: vector} for text, meta, vector in rows]
        result = self._call(f"insert into {name}", self.client.insert, name, data)
        if self.lite:
            # Milvus Lite runs in this process and indexes at flush every row not yet flushed: one flush at the end
            # of 30,000 rows peaked at 787 MiB, one every 8,192 rows at 433 MiB (bench/rebuild/lite_flush.py). A
            # server flushes by itself, and each explicit flush there costs seconds: only Lite gets these.
            self._unflushed[name] = self._unflushed.get(name, 0) + len(rows)
            if self._unflushed[name] >= LITE_FLUSH_ROWS and hasattr(self.client, "flush"):
                self._call(f"flush {name}", self.client.flush, name)
                self._unflushed[name] = 0
                self.flushes += 1
        return int(result.get("insert_count", len(rows)))

    def delete_doc_ids(self, name: str, doc_ids: list[str]) -> int:
        """Remove rows of these chunks (rows a killed run stored but did not checkpoint)."""
        if not doc_ids:
            return 0
        # Milvus Lite rejects `metadata["doc_id"] in [...]`; an OR of equalities works on both.
        expr = " or ".join(f'{FIELD_META}["doc_id"] == {_quote(d)}' for d in doc_ids)
        self.load(name)  # a collection reopened after a crash is released
        ids = [r[FIELD_ID] for r in self._call("query", self.client.query, name, filter=expr,
                                                 output_fields=[FIELD_ID], consistency_level=READ_CONSISTENCY)]
        if ids:
            self._call(f"delete from {name}", self.client.delete, name, ids=ids)
        return len(ids)

    def count(self, name: str) -> int:
        self.load(name)
        rows = self._call(f"count {name}", self.client.query, name, filter="", output_fields=["count(*)"],
                          consistency_level=READ_CONSISTENCY)
        return int(rows[0]["count(*)"])

    def finish(self, name: str) -> None:
        """Flush, wait for the index, and load: Dify never loads a collection itself."""
        if hasattr(self.client, "flush"):
            self._call(f"flush {name}", self.client.flush, name)
        self.load(name)

    def search(self, name: str, vector: list[float], k: int) -> list[dict[str, Any]]:
        hits = self._call("search", self.client.search, name, data=[vector], anns_field=FIELD_VECTOR, limit=k,
                          output_fields=[FIELD_TEXT, FIELD_META], search_params={"params": {"ef": max(64, k)}},
                          consistency_level=READ_CONSISTENCY)
        return [{"text": h["entity"].get(FIELD_TEXT), "metadata": h["entity"].get(FIELD_META),
                 "score": h["distance"]} for h in hits[0]]

    def dify_search(self, name: str, vector: list[float], k: int, document_ids: list[str]
                    ) -> tuple[list[dict[str, Any]], str]:
        """Dify's own search call (its filter, fields and limit; read at Strong consistency so the gate judges
        the whole collection); returns the hits and the filter expression actually used."""
        quoted = ", ".join(_quote(d) for d in document_ids)
        expr = f'{FIELD_META}["document_id"] in [{quoted}]'
        hits = None
        if self._json_in_supported:
            quiet = logging.getLogger("pymilvus")
            level = quiet.level
            quiet.setLevel(logging.CRITICAL)  # pymilvus logs every refused expression as an ERROR
            try:
                hits = self.client.search(name, data=[vector], anns_field=FIELD_VECTOR, limit=k,
                                          output_fields=[FIELD_TEXT, FIELD_META], filter=expr,
                                          consistency_level=READ_CONSISTENCY)
            except Exception as exc:
                if not (self.lite and "field reference" in str(exc)):
                    raise translate_error(exc, self.settings) from None
                self._json_in_supported = False
            finally:
                quiet.setLevel(level)
        if hits is None:
            # Milvus Lite cannot evaluate `in` on a JSON path (a server can); same semantics with ==.
            expr = " or ".join(f'{FIELD_META}["document_id"] == {_quote(d)}' for d in document_ids)
            hits = self._call("search", self.client.search, name, data=[vector], anns_field=FIELD_VECTOR, limit=k,
                              output_fields=[FIELD_TEXT, FIELD_META], filter=expr,
                              consistency_level=READ_CONSISTENCY)
        return ([{"text": h["entity"].get(FIELD_TEXT), "metadata": h["entity"].get(FIELD_META),
                  "score": h["distance"]} for h in hits[0]], expr)

    def search_batch(self, name: str, vectors: list[list[float]], k: int) -> list[list[dict[str, Any]]]:
        """search() for many vectors in ONE Strong read (nq > 1: each vector keeps its own top-k), in input order.

        On a server each Strong read waits about one time-tick (~0.2 s): one read per sampled chunk made a gate of
        50 samples take ~20 s there.
        """
        out: list[list[dict[str, Any]]] = []
        for start in range(0, len(vectors), 64):  # bounds one answer: 64 x k texts of up to 64 KiB
            hits = self._call("search", self.client.search, name, data=vectors[start:start + 64],
                              anns_field=FIELD_VECTOR, limit=k, output_fields=[FIELD_TEXT, FIELD_META],
                              search_params={"params": {"ef": max(64, k)}}, consistency_level=READ_CONSISTENCY)
            out.extend([{"text": h["entity"].get(FIELD_TEXT), "metadata": h["entity"].get(FIELD_META),
                         "score": h["distance"]} for h in per_vector] for per_vector in hits)
        return out

    def dify_search_batch(self, name: str, vectors: list[list[float]], k: int, document_ids: list[str]
                          ) -> list[tuple[list[dict[str, Any]], str]]:
        """dify_search for each (vector, its document id), in input order. Dify's filter names one document, so
        the vectors of one document share one call (nq > 1: each keeps its own top-k under that same filter),
        and the calls run concurrently on a server, so the Strong reads' time-tick waits overlap. On Milvus Lite
        each filtered call scans the collection (~45 ms at 2,000 rows): fewer calls is what counts there."""
        if not vectors:
            return []
        first = self.dify_search(name, vectors[0], k, [document_ids[0]])  # settles Lite's filter fallback once
        exact = self._json_in_supported
        if not exact and len(vectors) > 1:
            return [first, *self._lite_dify_search_together(name, vectors[1:], k, document_ids[1:], first[1])]
        groups: dict[str, list[int]] = {}
        for i in range(1, len(vectors)):
            groups.setdefault(document_ids[i], []).append(i)
        calls = [(doc, idx[start:start + 64]) for doc, idx in groups.items() for start in range(0, len(idx), 64)]

        def one(call: tuple[str, list[int]]) -> list[tuple[int, tuple[list[dict[str, Any]], str]]]:
            doc, idx = _quote(call[0]), call[1]
            expr = f'{FIELD_META}["document_id"] in [{doc}]' if exact else f'{FIELD_META}["document_id"] == {doc}'
            hits = self._call("search", self.client.search, name, data=[vectors[i] for i in idx],
                              anns_field=FIELD_VECTOR, limit=k, output_fields=[FIELD_TEXT, FIELD_META], filter=expr,
                              consistency_level=READ_CONSISTENCY)
            return [(i, ([{"text": h["entity"].get(FIELD_TEXT), "metadata": h["entity"].get(FIELD_META),
                           "score": h["distance"]} for h in per_vector], expr))
                    for i, per_vector in zip(idx, hits, strict=True)]

        out: list[tuple[list[dict[str, Any]], str]] = [first] * len(vectors)
        with ThreadPoolExecutor(max_workers=1 if self.lite else 8, thread_name_prefix="drtool-milvus-gate") as pool:
            for answered in pool.map(one, calls):
                for i, result in answered:
                    out[i] = result
        return out

    def _lite_dify_search_together(self, name: str, vectors: list[list[float]], k: int, document_ids: list[str],
                                   reported: str) -> list[tuple[list[dict[str, Any]], str]]:
        """Milvus Lite: one filtered call for the whole sample, its filter ORing the sampled documents, instead of
        one per document: each filtered call scans every row's JSON there (~0.7 s at 20,000 rows; 50 calls made
        a warm 20,000-chunk gate take 23 s of a 31 s rebuild).

        Per vector, the hits of the other sampled documents are dropped: what is left is the start of its own
        document's top-k (a vector's own row, the nearest, stays first), possibly shorter than k. Hits of any
        other document stay, so the gate still sees a filter that lets them through; a chunk crowded out of the
        shared top-k (more than k near-duplicates elsewhere) is asked again alone by the gate. Each answer
        carries `reported`, the single-document filter that the first call ran.
        """
        sampled = set(document_ids)
        expr = " or ".join(f'{FIELD_META}["document_id"] == {_quote(d)}' for d in sorted(sampled))
        out: list[tuple[list[dict[str, Any]], str]] = []
        for start in range(0, len(vectors), 64):  # bounds one answer, as search_batch does
            hits = self._call("search", self.client.search, name, data=vectors[start:start + 64],
                              anns_field=FIELD_VECTOR, limit=k, output_fields=[FIELD_TEXT, FIELD_META], filter=expr,
                              consistency_level=READ_CONSISTENCY)
            for document_id, per_vector in zip(document_ids[start:start + 64], hits, strict=True):
                others = sampled - {document_id}
                out.append(([{"text": h["entity"].get(FIELD_TEXT), "metadata": h["entity"].get(FIELD_META),
                              "score": h["distance"]} for h in per_vector
                             if str((h["entity"].get(FIELD_META) or {}).get("document_id")) not in others],
                            reported))
        return out

    def rename(self, old: str, new: str) -> None:
        self._call(f"rename {old} to {new}", self.client.rename_collection, old, new)

    def build_name(self, collection: str) -> str:
        return naming.build_name(collection)

    def confirm_needed(self, collection: str) -> str | None:
        return None  # the switch renames: nothing is deleted

    def object_key(self, text: str, meta: dict[str, Any]) -> str | None:
        return None  # auto_id primary keys never collide

    def switch(self, collection: str, build: str, *, drop_old: bool) -> str:
        """collection -> collection_drtool_prev, build -> collection, then load (renaming releases)."""
        previous = naming.previous_name(collection)
        done = []
        if self.exists(collection):
            if self.exists(previous):
                self.drop(previous)  # one generation is kept
            self.rename(collection, previous)
            done.append(f"renamed {collection} -> {previous}")
        if self.exists(build):
            self.rename(build, collection)
            done.append(f"{build} -> {collection}")
        self.load(collection)
        if drop_old and self.exists(previous):
            self.drop(previous)
            done.append(f"dropped {previous} (--drop-old)")
        return ", ".join(done)

    def rollback(self, collection: str) -> str:
        previous = naming.previous_name(collection)
        if not self.exists(previous):
            raise NotFoundError(f"no previous collection {previous} to roll back to",
                                hint="it was dropped (--drop-old) or no blue/green switch happened",
                                system=self.describe())
        swap = collection + "_drtool_swap"
        if self.exists(collection):
            self.rename(collection, swap)
        self.rename(previous, collection)
        if self.exists(swap):
            self.rename(swap, previous)
        self.load(collection)
        return f"swapped {collection} <-> {previous}"

    def layout(self, name: str) -> dict[str, Any]:
        """What a test or an operator checks against Dify's layout."""
        info = self._call(f"describe {name}", self.client.describe_collection, name)
        index = self._call("describe_index", self.client.describe_index, name, FIELD_VECTOR)
        state = self._call("get_load_state", self.client.get_load_state, name)
        return {"fields": info.get("fields"), "auto_id": info.get("auto_id"),
                "consistency_level": info.get("consistency_level_name"), "index": index,
                "load_state": str(state.get("state"))}

    def iter_metadata(self, name: str, batch_size: int = 1000) -> Iterator[tuple[str, dict[str, Any]]]:
        """(primary key, metadata) of every entity, streamed with a query iterator; no vectors are transferred."""
        self.load(name)  # a collection of a reopened Milvus Lite file, or a renamed one, is released
        quiet = logging.getLogger("pymilvus")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # Milvus Lite warns on every iterator that it uses a client-side timestamp
        try:
            iterator = self._call(f"iterate {name}", self.client.query_iterator, name, batch_size=batch_size,
                                  filter="", output_fields=[FIELD_ID, "metadata"],
                                  consistency_level=READ_CONSISTENCY)
            try:
                while batch := self._call(f"iterate {name}", iterator.next):
                    for row in batch:
                        meta = row.get("metadata")
                        yield str(row.get(FIELD_ID)), meta if isinstance(meta, dict) else {}
            finally:
                iterator.close()
        finally:
            quiet.setLevel(level)

    def close(self) -> None:
        self.client.close()
