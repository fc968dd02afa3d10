"""Dify's knowledge-base tables, read the way Dify's indexer reads them, streamed with server-side cursors.

export-chunks and verify must agree with Dify about which rows are "indexed": a chunk file or a vector check that
counts a disabled segment or an archived document would report breaks that are not there (or hide real ones). The
filters are Dify's (api/services, api/core/indexing_runner.py): documents indexing_status='completed', enabled, not
archived; segments status='completed', enabled; for `hierarchical_model` documents the child chunks of those
segments are embedded instead of the segments. All reads of one run happen in one REPEATABLE READ, READ ONLY
transaction, so a dataset's rows are a consistent picture even while Dify keeps writing.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

import psycopg

from drtool.adapters import postgres
from drtool.config import PostgresSettings
from drtool.errors import DrtoolError, NotFoundError

log = logging.getLogger("drtool.dify")

FETCH_ROWS = 2000  # rows per round trip of a server-side cursor


def _chunked_rows() -> bool:
    """Whether psycopg can stream a query's rows in chunks (psycopg 3.2 and libpq 17 or later)."""
    caps = getattr(psycopg, "capabilities", None)
    return bool(caps is not None and caps.has_stream_chunked())


@dataclass(frozen=True)
class DatasetRow:
    id: str
    tenant_id: str
    name: str
    provider: str | None
    indexing_technique: str | None
    index_struct: str | None
    embedding_model: str | None
    embedding_provider: str | None


@dataclass(frozen=True, slots=True)
class IndexNode:
    """One text Dify embeds (a segment, or a child chunk in parent-child mode), with what the chunk file carries."""

    id: str  # index_node_id, the vector's metadata doc_id
    text: str
    dataset_id: str
    document_id: str
    doc_hash: str | None
    position: int
    doc_form: str
    parent_id: str | None  # document_segments.id of a child chunk's parent segment
    answer: str | None
    document_name: str


@dataclass(frozen=True, slots=True)
class FileRef:
    table: str  # upload_files | tool_files
    row_id: str
    key: str
    tenant_id: str | None
    storage_type: str | None


# Segments of text_model / qa_model documents, and child chunks of hierarchical_model documents, in one ordered
# stream: documents by position then id, segments by position then id, children by position then id. The order
# only has to be deterministic, so that an unchanged dataset gives byte-identical output (and the same hash).
_NODES_SQL = """
SELECT n.index_node_id, n.content, n.document_id, n.index_node_hash, n.position, n.doc_form, n.parent_id,
       n.answer, n.document_name
FROM (
    SELECT s.index_node_id, s.content, d.id::text AS document_id, s.index_node_hash, s.position, d.doc_form,
           NULL::text AS parent_id, s.answer, d.name AS document_name,
           d.position AS d_pos, d.id AS d_id, s.position AS s_pos, s.id AS s_id, 0 AS c_pos, s.id AS c_id
    FROM documents d JOIN document_segments s ON s.document_id = d.id AND s.dataset_id = d.dataset_id
    WHERE d.dataset_id = %(ds)s AND d.indexing_status = 'completed' AND d.enabled AND NOT d.archived
      AND d.doc_form <> 'hierarchical_model'
      AND s.status = 'completed' AND s.enabled AND s.index_node_id IS NOT NULL
    UNION ALL
    SELECT c.index_node_id, c.content, d.id::text, c.index_node_hash, c.position, d.doc_form,
           s.id::text, NULL::text, d.name,
           d.position, d.id, s.position, s.id, c.position, c.id
    FROM documents d JOIN document_segments s ON s.document_id = d.id AND s.dataset_id = d.dataset_id
         JOIN child_chunks c ON c.segment_id = s.id AND c.document_id = d.id
    WHERE d.dataset_id = %(ds)s AND d.indexing_status = 'completed' AND d.enabled AND NOT d.archived
      AND d.doc_form = 'hierarchical_model'
      AND s.status = 'completed' AND s.enabled AND c.index_node_id IS NOT NULL
) n
ORDER BY n.d_pos, n.d_id, n.s_pos, n.s_id, n.c_pos, n.c_id
"""

_DATASET_COLUMNS = ("id::text, tenant_id::text, name, provider, indexing_technique, index_struct, embedding_model, "
                    "embedding_model_provider")


class DifyReader:
    """One connection and one consistent read-only snapshot of Dify's database for a whole run."""

    def __init__(self, settings: PostgresSettings) -> None:
        self.settings = settings
        self.conn: psycopg.Connection[Any] = postgres.connect(settings)
        try:
            self.conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            missing = self.conn.execute(
                "SELECT t FROM unnest(ARRAY['datasets','documents','document_segments','child_chunks']) t"
                " WHERE to_regclass('public.' || t) IS NULL").fetchall()
        except psycopg.Error as exc:
            self.close()
            raise postgres.translate_error(exc, settings) from None
        if missing:
            self.close()
            raise NotFoundError(f"database {settings.database} has no Dify table(s) {', '.join(r[0] for r in missing)}",
                                hint="check postgres.database: it must be Dify's metadata database",
                                system=f"postgres {settings.host}:{settings.port}")

    def _error(self, exc: Exception) -> DrtoolError:
        return postgres.translate_error(exc, self.settings)

    def datasets(self, ids: tuple[str, ...] = ()) -> list[DatasetRow]:
        """Datasets in creation order (all of them, or the given ids; an unknown id is a NotFoundError)."""
        try:
            if ids:
                rows = self.conn.execute(
                    f"SELECT {_DATASET_COLUMNS} FROM datasets WHERE id::text = ANY(%s) ORDER BY created_at, id",
                    (list(ids),)).fetchall()
            else:
                rows = self.conn.execute(f"SELECT {_DATASET_COLUMNS} FROM datasets ORDER BY created_at, id").fetchall()
        except psycopg.Error as exc:
            raise self._error(exc) from None
        found = [DatasetRow(*r) for r in rows]
        unknown = sorted(set(ids) - {d.id for d in found})
        if unknown:
            raise NotFoundError(f"dataset(s) not in Dify's datasets table: {', '.join(unknown)}",
                                hint="check --dataset (a dataset id is a UUID) and postgres.database",
                                system=f"postgres {self.settings.host}:{self.settings.port}")
        if ids:  # keep the operator's order
            by_id = {d.id: d for d in found}
            return [by_id[i] for i in dict.fromkeys(ids)]
        return found

    def iter_index_nodes(self, dataset_id: str) -> Iterator[IndexNode]:
        """Every text Dify embeds for a dataset, streamed in a deterministic order."""
        try:
            with self.conn.cursor(name=f"drtool_nodes_{dataset_id.replace('-', '')[:32]}") as cur:
                cur.itersize = FETCH_ROWS
                cur.execute(_NODES_SQL, {"ds": dataset_id})
                for node_id, text, document_id, doc_hash, position, doc_form, parent_id, answer, name in cur:
                    yield IndexNode(id=node_id, text=text, dataset_id=dataset_id, document_id=document_id,
                                    doc_hash=doc_hash, position=int(position), doc_form=doc_form,
                                    parent_id=parent_id, answer=answer, document_name=name)
        except psycopg.Error as exc:
            raise self._error(exc) from None

    def iter_index_node_rows(self, dataset_id: str) -> Iterator[list[tuple[Any, ...]]]:
        """The rows of iter_index_nodes as plain tuples in batches of up to FETCH_ROWS, columns in _NODES_SQL order.

        For export-chunks, whose per-row work is the bottleneck: the rows stream while the client encodes (a
        server-side cursor waits for each FETCH), and no IndexNode is built per row. Memory stays bounded: the server
        blocks when the socket's buffer is full. With libpq 17 or later (psycopg-binary bundles it) the query runs in
        chunked-rows mode with binary results: psycopg's C loader builds each batch, which costs the client about
        half of what parsing the same rows out of `COPY ... TO STDOUT` text does, for the same server time
        (bench/results/export.md). With an older libpq, COPY.
        """
        if _chunked_rows():
            yield from self._stream_index_node_rows(dataset_id)
            return
        try:
            with self.conn.cursor() as cur, cur.copy(f"COPY ({_NODES_SQL}) TO STDOUT", {"ds": dataset_id}) as copy:
                copy.set_types(["text", "text", "text", "text", "int8", "text", "text", "text", "text"])
                batch: list[tuple[Any, ...]] = []
                for row in copy.rows():
                    batch.append(row)
                    if len(batch) >= FETCH_ROWS:
                        yield batch
                        batch = []
                if batch:
                    yield batch
        except psycopg.Error as exc:
            raise self._error(exc) from None

    def _stream_index_node_rows(self, dataset_id: str) -> Iterator[list[tuple[Any, ...]]]:
        try:
            with self.conn.cursor() as cur:
                rows = cur.stream(_NODES_SQL, {"ds": dataset_id}, binary=True, size=FETCH_ROWS)
                try:
                    while batch := list(islice(rows, FETCH_ROWS)):  # batched in C, not by a Python loop per row
                        yield batch
                finally:
                    rows.close()  # a consumer that stops early: psycopg cancels the query, the connection is free
        except psycopg.Error as exc:
            raise self._error(exc) from None

    def count_index_nodes(self, dataset_id: str) -> int:
        """How many rows iter_index_nodes would yield, counted by the server from the same query (Dify's filters
        live in one place), without sending a single chunk text: what `drtool audit` compares with a collection's
        count."""
        try:
            row = self.conn.execute(f"SELECT count(*) FROM ({_NODES_SQL}) n_all", {"ds": dataset_id}).fetchone()
        except psycopg.Error as exc:
            raise self._error(exc) from None
        return int(row[0]) if row else 0

    def count_cached_index_nodes(self, dataset_id: str, model_name: str, provider_name: str) -> tuple[int, int]:
        """(texts, texts with a vector in Dify's `embeddings` cache for this model): the rows of iter_index_nodes,
        each looked up by the key Dify and `rebuild-index` use (sha256 of the text + "None", model, provider),
        counted by the server in one query: the unique (model_name, hash, provider_name) index answers each
        EXISTS, and no text or vector crosses the wire. None of the `embeddings` table: (texts, 0)."""
        try:
            if self.conn.execute("SELECT to_regclass('public.embeddings') IS NULL").fetchone()[0]:  # type: ignore[index]
                return self.count_index_nodes(dataset_id), 0
            row = self.conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE EXISTS ("
                " SELECT 1 FROM embeddings e WHERE e.model_name = %(model)s AND e.provider_name = %(provider)s"
                " AND e.hash = encode(sha256(convert_to(n_all.content || 'None', 'UTF8')), 'hex')))"
                f" FROM ({_NODES_SQL}) n_all",
                {"ds": dataset_id, "model": model_name, "provider": provider_name}).fetchone()
        except psycopg.Error as exc:
            raise self._error(exc) from None
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def iter_file_refs(self) -> Iterator[FileRef]:
        """Every object key Dify's rows point at: upload_files.key and tool_files.file_key (if the table exists)."""
        queries = [("upload_files", "SELECT id::text, key, tenant_id::text, storage_type FROM upload_files"
                                    " WHERE key IS NOT NULL AND key <> '' ORDER BY key")]
        try:
            if self.conn.execute("SELECT to_regclass('public.tool_files') IS NOT NULL").fetchone()[0]:  # type: ignore[index]
                queries.append(("tool_files", "SELECT id::text, file_key, tenant_id::text, NULL FROM tool_files"
                                              " WHERE file_key IS NOT NULL AND file_key <> '' ORDER BY file_key"))
            for table, query in queries:
                with self.conn.cursor(name=f"drtool_files_{table}") as cur:
                    cur.itersize = FETCH_ROWS
                    cur.execute(query)
                    for row_id, key, tenant_id, storage_type in cur:
                        yield FileRef(table, row_id, key, tenant_id, storage_type)
        except psycopg.Error as exc:
            raise self._error(exc) from None

    def close(self) -> None:
        with contextlib.suppress(psycopg.Error):
            self.conn.rollback()  # read-only: nothing to keep
        self.conn.close()

    def __enter__(self) -> DifyReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
