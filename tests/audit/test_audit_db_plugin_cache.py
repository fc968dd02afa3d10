"""Two audit checks on the seeded Dify database on `isolated_pg`: the plugin daemon's database is covered
by the snapshots (`postgres.plugin_db_not_covered`), and how much of a rebuild Dify's embedding cache answers
(`drtool.embedding_cache_coverage`, info, and its gauge).

Every plugin database here is named after the test's own Dify database (`<dbname>_plugin`, Dify's naming
convention the check also looks for) or a random name, never the global `dify_plugin`: tests that share the
server cannot see each other's databases as findings.

The file name sorts before test_audit_findings.py on purpose (as test_audit_checks_more.py's does): its site-down
test leaves failed replications in MinIO's last-hour counters, a `minio.replication_warning` that would be a second
finding here."""

from __future__ import annotations

import pickle
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from drtool.adapters.dify_embedding_cache import dify_text_hash
from tests.audit.conftest import AuditWorld
from tests.audit.test_audit_checks_more import reader_role
from tests.audit.test_audit_findings import only
from tests.stack.pg_server import PostgresServer

# --- the plugin daemon's database --------------------------------------------------------------------------------


def test_unset_plugin_database_that_exists_is_a_warning_naming_the_setting(world: AuditWorld,
                                                                           isolated_pg: PostgresServer,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"{world.db.dbname}_plugin"  # Dify's convention: DB_DATABASE=dify -> DB_PLUGIN_DATABASE=dify_plugin
    isolated_pg.create_database(name)
    try:
        finding = only(world, "postgres.plugin_db_not_covered", "warning", "--no-probe")
        assert finding["target"].endswith(f"/{name}") and f"database {name} exists" in finding["evidence"]
        for how in (f"postgres.plugin_database={name}", f"DRTOOL_POSTGRES_PLUGIN_DATABASE={name}", "--dify-env"):
            assert how in finding["fix"]
        # configured: covered, no finding, and the check says it read it
        monkeypatch.setenv("DRTOOL_POSTGRES_PLUGIN_DATABASE", name)
        done = world.audit("audit", "--json", "--no-probe")
        assert done.problems() == {}, done.findings
        assert f"postgres: plugin database {name} readable" in done.result["checked"]
    finally:
        isolated_pg.drop_database(name)


def test_configured_plugin_database_that_is_missing_is_critical(world: AuditWorld,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"no_plugin_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("DRTOOL_POSTGRES_PLUGIN_DATABASE", name)
    finding = only(world, "postgres.plugin_db_not_covered", "critical", "--no-probe")
    assert name in finding["evidence"] and "does not exist" in finding["evidence"]
    assert "every snapshot fails" in finding["evidence"]


def test_configured_plugin_database_the_role_cannot_read_is_critical(world: AuditWorld, isolated_pg: PostgresServer,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A plugin-daemon table the drtool role may not SELECT: pg_dump of the plugin database would fail."""
    name = f"plug_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(isolated_pg.create_database(name), autocommit=True) as conn:
        conn.execute("CREATE TABLE plugins (id int PRIMARY KEY, plugin_id text)")
    try:
        with reader_role(world, isolated_pg) as (role, password):
            monkeypatch.setenv("DRTOOL_POSTGRES_USER", role)
            monkeypatch.setenv("DRTOOL_POSTGRES_PASSWORD", password)
            monkeypatch.setenv("DRTOOL_POSTGRES_PLUGIN_DATABASE", name)
            finding = only(world, "postgres.plugin_db_not_covered", "critical", "--no-probe")
            assert "public.plugins" in finding["evidence"] and role in finding["evidence"]
            assert "GRANT SELECT ON ALL TABLES IN SCHEMA public TO" in finding["fix"]
    finally:
        isolated_pg.drop_database(name)


# --- embedding cache coverage -------------------------------------------------------------------------------------


def _high_quality_nodes(world: AuditWorld) -> dict[str, list[str]]:
    """dataset id -> the texts Dify indexes for it, for the high-quality datasets of the seeded database."""
    assert world.db.seed is not None
    with world.db.connect() as conn:
        hq = {str(r[0]) for r in conn.execute(
            "SELECT id::text FROM datasets WHERE indexing_technique = 'high_quality'").fetchall()}
    return {d.id: list(d.index_nodes.values()) for d in world.db.seed.datasets if d.id in hq}


def test_embedding_cache_coverage_is_the_share_of_texts_seeded_in_the_cache(world: AuditWorld, tmp_path: Path) -> None:
    seed = world.db.seed
    assert seed is not None
    nodes = _high_quality_nodes(world)
    texts = [t for ts in nodes.values() for t in ts]
    assert len(nodes) == 2 and len(texts) > 6
    chosen = sorted(set(texts))[:5]  # five distinct texts cached; every node with one of them is covered
    expected = sum(t in chosen for t in texts)
    vector = pickle.dumps([0.5, 0.5], protocol=pickle.HIGHEST_PROTOCOL)
    with world.db.connect(autocommit=True) as conn:
        conn.execute("DELETE FROM embeddings")
        for text in chosen:
            conn.execute("INSERT INTO embeddings (model_name, hash, embedding, provider_name) VALUES (%s, %s, %s, %s)",
                         (seed.embedding_model, dify_text_hash(text), vector, seed.embedding_provider))
        other = dify_text_hash(sorted(set(texts))[-1])  # cached, but for another model or another provider: no
        conn.execute("INSERT INTO embeddings (model_name, hash, embedding, provider_name) VALUES (%s, %s, %s, %s)",
                     ("another-model", other, vector, seed.embedding_provider))
        conn.execute("INSERT INTO embeddings (model_name, hash, embedding, provider_name) VALUES (%s, %s, %s, %s)",
                     (seed.embedding_model, other, vector, "another/provider"))
    metrics = tmp_path / "audit.prom"
    done = world.audit("audit", "--json", "--no-probe", "--metrics-file", str(metrics))
    assert done.problems() == {} and done.code == 0, done.findings
    [finding] = [f for f in done.findings if f["id"] == "drtool.embedding_cache_coverage"]
    assert finding["severity"] == "info"
    pct = 100 * expected / len(texts)
    assert f"{expected} of {len(texts)} text(s) of 2 high-quality dataset(s) ({pct:.1f} %)" in finding["evidence"]
    assert f"would send {len(texts) - expected} to the embedding model" in finding["evidence"]
    line = next(x for x in metrics.read_text().splitlines()
                if x.startswith("drtool_audit_embedding_cache_coverage_ratio "))
    assert float(line.split()[1]) == pytest.approx(expected / len(texts))
    assert 'drtool_audit_finding{id="drtool.embedding_cache_coverage",severity="info"} 1' in metrics.read_text()


def test_empty_cache_is_zero_coverage(world: AuditWorld) -> None:
    nodes = _high_quality_nodes(world)
    total = sum(len(t) for t in nodes.values())
    with world.db.connect(autocommit=True) as conn:
        conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier("embeddings")))
    done = world.audit("audit", "--json", "--no-probe")
    [finding] = [f for f in done.findings if f["id"] == "drtool.embedding_cache_coverage"]
    assert finding["evidence"].startswith(f"0 of {total} text(s)")
