"""Dify's own tables as rebuild needs them: the `datasets` rows (collection name, model) and the `embeddings` cache.

Cache values are pickles written by Dify; they are decoded with drtool.core.pickle_safe, never `pickle.loads`, so
a row planted by an attacker with database access cannot run code on the machine doing the rebuild.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from drtool.adapters import postgres
from drtool.config import PostgresSettings
from drtool.core.pickle_safe import UnsafePickle, loads_float_list
from drtool.core.vectors import cached_vector_problem

log = logging.getLogger("drtool.rebuild")


@dataclass(frozen=True)
class DifyDataset:
    id: str
    index_struct: str | None
    embedding_model: str | None
    embedding_provider: str | None
    indexing_technique: str | None


def dify_text_hash(text: str) -> str:
    """Dify's cache key: sha256 of the text followed by the literal string "None"."""
    return hashlib.sha256((text + "None").encode("utf-8")).hexdigest()


class DifyMetadata:
    """One connection to Dify's database, shared by the dataset lookup and the embedding cache."""

    def __init__(self, settings: PostgresSettings) -> None:
        self.settings = settings
        self.conn: psycopg.Connection[Any] = postgres.connect(settings, autocommit=True)
        self._lock = threading.Lock()

    def dataset(self, dataset_id: str) -> DifyDataset | None:
        try:
            with self._lock:
                row = self.conn.execute(
                    "SELECT id::text, index_struct, embedding_model, embedding_model_provider, indexing_technique"
                    " FROM datasets WHERE id::text = %s", (dataset_id,)).fetchone()
        except psycopg.Error as exc:
            raise postgres.translate_error(exc, self.settings) from None
        return DifyDataset(*row) if row else None

    def cache(self, model_name: str, provider_name: str) -> DifyEmbeddingCache:
        return DifyEmbeddingCache(self, model_name, provider_name)

    def close(self) -> None:
        self.conn.close()


class DifyEmbeddingCache:
    """Lookups in Dify's `embeddings` table for one (model_name, provider_name)."""

    def __init__(self, meta: DifyMetadata, model_name: str, provider_name: str) -> None:
        self.meta = meta
        self.model_name = model_name
        self.provider_name = provider_name
        self.refused = 0  # rows whose pickle was not a flat list of floats
        self.ignored = 0  # rows that parsed but hold no sane vector (NaN/inf, wrong dimension, not unit norm)

    def probe_dimension(self) -> int | None:
        """The dimension of one cached vector for this model, to catch a mismatch before writing."""
        with self.meta._lock:
            row = self.meta.conn.execute(
                "SELECT embedding FROM embeddings WHERE model_name = %s AND provider_name = %s LIMIT 1",
                (self.model_name, self.provider_name)).fetchone()
        if not row:
            return None
        try:
            return len(loads_float_list(row[0]))
        except UnsafePickle:
            return None

    def lookup(self, texts: Sequence[str], dimension: int | None = None) -> dict[int, list[float]]:
        """Vectors for the texts Dify has cached, by position in `texts`.

        With `dimension`, a vector that fails cached_vector_problem is left out (so it is re-embedded) and counted
        in `ignored`: anyone who can write the table could otherwise plant a vector that tops every search.
        """
        hashes = [dify_text_hash(t) for t in texts]
        try:
            with self.meta._lock:
                rows = self.meta.conn.execute(
                    "SELECT hash, embedding FROM embeddings WHERE model_name = %s AND provider_name = %s"
                    " AND hash = ANY(%s)", (self.model_name, self.provider_name, list(set(hashes)))).fetchall()
        except psycopg.Error as exc:
            raise postgres.translate_error(exc, self.meta.settings) from None
        found: dict[str, list[float]] = {}
        for text_hash, blob in rows:
            try:
                vector = loads_float_list(bytes(blob))
            except UnsafePickle as exc:
                self.refused += 1
                log.warning("ignored Dify embedding cache row %s: %s", text_hash, exc)
                continue
            problem = cached_vector_problem(vector, dimension) if dimension is not None else None
            if problem is not None:
                self.ignored += 1
                if self.ignored <= 10:  # a wholly poisoned table must not flood the log; the report has the count
                    log.warning("ignored Dify embedding cache row %s: vector %s; re-embedding", text_hash, problem)
                continue
            found[text_hash] = vector
        return {i: found[h] for i, h in enumerate(hashes) if h in found}
