"""Dify's PGVECTOR_* variables become drtool's pgvector settings, as Dify's docker/.env writes them."""

from __future__ import annotations

from pathlib import Path

from drtool.adapters import vector_stores
from drtool.config import load_settings
from drtool.redact import redact

# The block of Dify's docker/.env.example (1.13.x), with VECTOR_STORE switched to pgvector.
DIFY_ENV = """\
VECTOR_STORE=pgvector
PGVECTOR_HOST=pgvector
PGVECTOR_PORT=5433
PGVECTOR_USER=postgres
PGVECTOR_PASSWORD=difyai123456
PGVECTOR_DATABASE=dify_vectors
PGVECTOR_MIN_CONNECTION=1
PGVECTOR_MAX_CONNECTION=5
PGVECTOR_PG_BIGM=true
PGVECTOR_PG_BIGM_VERSION=1.2-20240606
"""


def test_dify_env_maps_pgvector(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text(DIFY_ENV)
    s = load_settings(flags={"dify.hosts": "pgvector=10.0.0.7"}, environ={}, dify_env_path=env)
    assert s.vector.store == "pgvector"
    p = s.pgvector
    assert (p.host, p.port, p.user, p.password, p.database, p.pg_bigm) == (
        "10.0.0.7", 5433, "postgres", "difyai123456", "dify_vectors", True)
    assert s.sources["pgvector.password"] == "dify-env:PGVECTOR_PASSWORD"
    assert "difyai123456" not in redact("connect failed: difyai123456")  # a secret: never printed
    backend = vector_stores.selected(s)
    assert backend.name == "pgvector" and backend.configured(s)
    assert backend.location(s) == "10.0.0.7:5433/dify_vectors"


def test_diskann_index_type_is_noted(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text(DIFY_ENV + "PGVECTOR_INDEX_TYPE=diskann\n")
    s = load_settings(environ={}, dify_env_path=env)
    assert any("PGVECTOR_INDEX_TYPE=diskann" in note for note in s.notes)
