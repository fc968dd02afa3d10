"""Fresh Dify metadata databases inside the session's Postgres server.

A database per test costs a few tens of milliseconds (CREATE DATABASE from template0, the DDL of
dify_schema.sql, one executemany per table), so tests that export, dump, restore or mutate Dify's rows each
get their own and never see each other's changes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from tests.stack.dify_seed import SeedSummary, seed_knowledge_base
from tests.stack.pg_server import PostgresServer

__all__ = ["SCHEMA_PATH", "DifyDatabase", "apply_dify_schema", "create_dify_database"]

SCHEMA_PATH = Path(__file__).with_name("dify_schema.sql")


@dataclass(frozen=True)
class DifyDatabase:
    """A database with Dify's knowledge-base tables, seeded unless created with seed=False."""

    dsn: str
    dataset_ids: tuple[str, ...]
    dbname: str
    tenant_id: str | None
    seed: SeedSummary | None = field(default=None, repr=False)

    def connect(self, **kwargs: Any) -> psycopg.Connection[Any]:
        """Open a psycopg connection to this database (caller closes it; use it in a with-block)."""
        return psycopg.connect(self.dsn, **kwargs)


def apply_dify_schema(conn: psycopg.Connection[Any]) -> None:
    """Create Dify's knowledge-base tables (dify_schema.sql) and commit."""
    conn.execute(SCHEMA_PATH.read_text(encoding="utf-8").encode())
    conn.commit()


def create_dify_database(
    pg: PostgresServer, *, name: str | None = None, seed: bool = True, **seed_options: Any
) -> DifyDatabase:
    """Create a new database in `pg`, apply the Dify schema and (by default) seed a knowledge base.

    `seed_options` go to seed_knowledge_base (datasets=, documents_per_dataset=, embed=, seed=, ...).
    """
    dbname = name or f"dify_{uuid.uuid4().hex[:12]}"
    dsn = pg.create_database(dbname)
    with psycopg.connect(dsn) as conn:
        apply_dify_schema(conn)
        summary = seed_knowledge_base(conn, **seed_options) if seed else None
    return DifyDatabase(
        dsn=dsn,
        dataset_ids=summary.dataset_ids if summary else (),
        dbname=dbname,
        tenant_id=summary.tenant_id if summary else None,
        seed=summary,
    )
