"""The `pgvector_server` fixture is a real PostgreSQL with pgvector >= 0.5 that demands a password over TCP."""

from __future__ import annotations

import os

import psycopg
import pytest

from tests.stack.pgvector_server import MIN_PGVECTOR, PgvectorDatabase, PgvectorServer


def test_versions_and_password_auth(pgvector_server: PgvectorServer) -> None:
    if not os.environ.get("DRTOOL_TEST_PGVECTOR_DSN"):
        assert pgvector_server.server_version.startswith("16.") and pgvector_server.pgvector_version == "0.6.2"
        assert pgvector_server.pg.host == "127.0.0.1" and pgvector_server.pg.password
    assert tuple(int(p) for p in pgvector_server.pgvector_version.split(".")[:2]) >= MIN_PGVECTOR
    pg = pgvector_server.pg
    wrong = pg.dsn("postgres").replace(f":{pg.password}@", ":not-the-password@", 1)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(wrong, connect_timeout=5)


def test_an_hnsw_cosine_index_answers_nearest_neighbour_queries(pgvector_db: PgvectorDatabase) -> None:
    """The extension is the real one: an HNSW index on vector_cosine_ops serves ORDER BY <=> LIMIT."""
    with pgvector_db.connect() as conn:
        assert conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, embedding vector(3) NOT NULL)")
        conn.execute("INSERT INTO items SELECT i, ARRAY[cos(i), sin(i), 0.5]::vector FROM generate_series(1, 200) i")
        conn.execute("CREATE INDEX ON items USING hnsw (embedding vector_cosine_ops) "
                     "WITH (m = 16, ef_construction = 64)")
        conn.execute("SET enable_seqscan = off")
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN SELECT id FROM items ORDER BY embedding <=> '[1,0,0.5]' "
                                                    "LIMIT 3"))
        assert "Index Scan using items_embedding_idx" in plan, plan
        nearest = conn.execute("SELECT id FROM items ORDER BY embedding <=> %s::vector LIMIT 1",
                               ("[0.5403023,0.84147096,0.5]",)).fetchone()
        assert nearest == (1,)
