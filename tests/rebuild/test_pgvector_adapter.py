"""The pgvector adapter against a real PostgreSQL 16 + pgvector 0.6 (the stack's pgserver build).

What Dify relies on is checked by running Dify's own statements (api/core/rag/datasource/vdb/pgvector/pgvector.py,
Dify 1.4.1 and later, unchanged through 1.13.x): its DDL in one database gives the layout a drtool-built table
must equal, and its unquoted search statement must reach drtool's table and read drtool's rows.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
import uuid
from typing import Any

import psycopg
import pytest

from drtool.adapters.pgvector import (
    PgvectorTarget,
    dify_index_names,
    dify_table_name,
    index_names,
    row_id,
    table_name,
)
from drtool.core.naming import dify_collection_name, previous_name
from drtool.errors import AuthError, ExitCode, NotFoundError, UnavailableError
from tests.stack.pgvector_server import PgvectorDatabase, PgvectorServer
from tests.stack.ports import free_port

DIM = 8

# Dify's statements, as its pgvector.py formats them (table and index names pasted in without quotes).
DIFY_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS {table_name} (
    id UUID PRIMARY KEY,
    text TEXT NOT NULL,
    meta JSONB NOT NULL,
    embedding vector({dimension}) NOT NULL
) using heap;
"""
DIFY_CREATE_INDEX = """
CREATE INDEX IF NOT EXISTS embedding_cosine_v1_idx_{index_hash} ON {table_name}
USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64);
"""


def dify_create(conn: psycopg.Connection[Any], collection: str, dimension: int = DIM) -> None:
    """What Dify's PGVector._create_collection runs for `collection` (the index only up to 2000 dimensions)."""
    table = f"embedding_{collection}"
    index_hash = hashlib.md5(table.encode()).hexdigest()[:8]
    with conn.cursor() as cur:
        cur.execute(DIFY_CREATE_TABLE.format(table_name=table, dimension=dimension))  # type: ignore[arg-type]
        if dimension <= 2000:
            cur.execute(DIFY_CREATE_INDEX.format(table_name=table, index_hash=index_hash))  # type: ignore[arg-type]
    conn.commit()


def dify_search(conn: psycopg.Connection[Any], collection: str, vector: list[float], top_k: int,
                document_ids: list[str]) -> list[tuple[dict[str, Any], str, float]]:
    """Dify's search_by_vector statement, built as Dify builds it; returns (meta, text, score)."""
    table = f"embedding_{collection}"
    ids = ", ".join(f"'{i}'" for i in document_ids)
    where_clause = f" WHERE meta->>'document_id' in ({ids}) "
    with conn.cursor() as cur:
        cur.execute(f"SELECT meta, text, embedding <=> %s AS distance FROM {table} {where_clause}"  # type: ignore
                    f" ORDER BY distance LIMIT {top_k}", (json.dumps(vector),))
        rows = [(meta, text, 1 - distance) for meta, text, distance in cur]
    conn.rollback()
    return rows


def random_unit(seed: int, dim: int = DIM) -> list[float]:
    rng = random.Random(seed)
    v = [rng.gauss(0, 1) for _ in range(dim)]
    norm = sum(x * x for x in v) ** 0.5
    return [x / norm for x in v]


def rows_for(dataset_id: str, n: int, *, documents: int = 2, tag: str = "") -> list[tuple[str, dict[str, Any],
                                                                                        list[float]]]:
    docs = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"{dataset_id}/{d}")) for d in range(documents)]
    out = []
    for i in range(n):
        doc_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{dataset_id}/{tag}/{i}"))
        meta = {"doc_id": doc_id, "doc_hash": f"h{tag}{i}", "document_id": docs[i % documents],
                "dataset_id": dataset_id, "source": f"f{i}.txt"}
        out.append((f"text {tag}{i}", meta, random_unit(hash((dataset_id, tag, i)) & 0xFFFF)))
    return out


@pytest.fixture
def target(pgvector_db: PgvectorDatabase) -> Any:
    store = PgvectorTarget(pgvector_db.settings())
    yield store
    store.close()


def build_and_switch(store: PgvectorTarget, collection: str, rows: list[Any]) -> str:
    """What rebuild-index does against an existing table: build beside it, finish, switch."""
    build = store.build_name(collection)
    store.create(build, DIM)
    store.insert(build, rows)
    store.finish(build)
    return store.switch(collection, build, drop_old=False)


def test_the_table_name_is_difys_folded_and_truncated_name() -> None:
    collection = dify_collection_name("3f1c2a8e-5b7d-4c1e-9a2f-6d8e0b1c2d3e")
    assert len("embedding_" + collection) == 64  # one byte over Postgres's identifier limit
    assert dify_table_name(collection) == "embedding_vector_index_3f1c2a8e_5b7d_4c1e_9a2f_6d8e0b1c2d3e_nod"
    build, prev = table_name(collection + "_drtool_build"), table_name(previous_name(collection))
    assert len({dify_table_name(collection), build, prev}) == 3 and all(len(t) <= 63 for t in (build, prev))
    assert build.endswith("_drtool_build") and prev.endswith("_drtool_prev")


def test_layout_after_a_blue_green_switch_equals_difys_ddl(
        pgvector_server: PgvectorServer, pgvector_db: PgvectorDatabase, target: PgvectorTarget) -> None:
    """Same collection name in two databases: Dify's own DDL in one, drtool's in-place build plus a blue/green
    rebuild in the other. Table, columns, types, NOT NULLs, access method, index and constraint names and
    definitions must be identical, so Dify (and pg_dump, and an operator's \\d) cannot tell them apart."""
    collection = dify_collection_name(str(uuid.uuid4()))
    reference = pgvector_server.create_database(f"drtool_pgv_dify_{uuid.uuid4().hex[:8]}")
    try:
        with reference.connect() as conn:
            dify_create(conn, collection)
        dify_layout = PgvectorTarget(reference.settings()).layout(collection)
    finally:
        pgvector_server.drop_database(reference.dbname)

    target.create(collection, DIM)  # no table yet: built in place under Dify's name
    target.insert(collection, rows_for("ds", 4))
    target.finish(collection)
    assert target.layout(collection) == dify_layout
    build_and_switch(target, collection, rows_for("ds", 6, tag="b"))
    layout = target.layout(collection)
    assert layout == dify_layout
    assert layout["columns"] == [("id", "uuid", True), ("text", "text", True), ("meta", "jsonb", True),
                                 ("embedding", f"vector({DIM})", True)]
    assert layout["access_method"] == "heap"
    assert any("USING hnsw (embedding vector_cosine_ops) WITH (m='16', ef_construction='64')" in d
               for d in layout["indexes"].values())
    # the replaced table keeps its rows under drtool's name, with index names that cannot collide with Dify's
    previous = target.layout(previous_name(collection))
    assert target.count(previous_name(collection)) == 4
    assert not set(previous["indexes"]) & set(dify_layout["indexes"])


def test_difys_own_search_reaches_the_rebuilt_table(pgvector_db: PgvectorDatabase, target: PgvectorTarget) -> None:
    """Dify's unquoted statement, its JSON vector and its document filter, against what drtool wrote."""
    collection = dify_collection_name(str(uuid.uuid4()))
    rows = rows_for("ds-1", 20, documents=3)
    target.create(collection, DIM)
    target.insert(collection, rows_for("ds-1", 5, tag="old"))
    target.finish(collection)
    build_and_switch(target, collection, rows)
    text, meta, vector = rows[7]
    with pgvector_db.connect() as conn:
        hits = dify_search(conn, collection, vector, 4, [meta["document_id"]])
    assert hits[0][1] == text and hits[0][0] == meta and hits[0][2] == pytest.approx(1.0, abs=1e-5)
    assert {m["document_id"] for m, _, _ in hits} == {meta["document_id"]}
    ours, used = target.dify_search(collection, vector, 4, [meta["document_id"]])
    assert [(h["metadata"], h["text"]) for h in ours] == [(m, t) for m, t, _ in hits]
    assert used == f"meta->>'document_id' in ('{meta['document_id']}')"


def test_switch_is_atomic_under_a_concurrent_reader(pgvector_db: PgvectorDatabase, target: PgvectorTarget) -> None:
    """A Dify-like reader counts and searches the live name in a loop while drtool switches, rolls back and rolls
    back again: every read answers (no 'relation does not exist' between two renames) with the old or the new."""
    collection = dify_collection_name(str(uuid.uuid4()))
    table = f"embedding_{collection}"  # Dify's unquoted spelling
    target.create(collection, DIM)
    target.insert(collection, rows_for("ds", 3, tag="old"))
    target.finish(collection)
    seen: list[int] = []
    errors: list[str] = []
    stop = threading.Event()
    started = threading.Event()

    def reader() -> None:
        with pgvector_db.connect(autocommit=True) as conn:
            while not stop.is_set():
                try:
                    seen.append(int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]))  # type: ignore
                    conn.execute(f"SELECT meta, text, embedding <=> %s AS distance FROM {table} "  # type: ignore
                                 "ORDER BY distance LIMIT 4", (json.dumps(random_unit(1)),)).fetchall()
                except psycopg.Error as exc:
                    errors.append(str(exc))
                started.set()

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    assert started.wait(10)
    done = [build_and_switch(target, collection, rows_for("ds", 7, tag="new"))]
    for _ in range(6):  # a rollback is three renames: split over transactions, a reader hits the gaps
        time.sleep(0.05)
        done.append(target.rollback(collection))
    time.sleep(0.05)
    stop.set()
    thread.join(10)
    assert not errors, errors[:3]
    assert set(seen) == {3, 7}, (sorted(set(seen)), done)
    assert target.count(collection) == 7  # an even number of rollbacks: the new build is live


def test_rollback_swaps_back_and_forth_and_needs_a_previous_table(target: PgvectorTarget) -> None:
    collection = dify_collection_name(str(uuid.uuid4()))
    with pytest.raises(NotFoundError) as caught:
        target.rollback(collection)
    assert caught.value.exit_code == ExitCode.NOT_FOUND and collection in str(caught.value)
    target.create(collection, DIM)
    target.insert(collection, rows_for("ds", 2))
    target.finish(collection)
    build_and_switch(target, collection, rows_for("ds", 5, tag="b"))
    assert target.count(collection) == 5
    target.rollback(collection)
    assert (target.count(collection), target.count(previous_name(collection))) == (2, 5)
    wanted = dify_index_names(collection)
    assert set(target.layout(collection)["indexes"]) == {wanted["emb"], wanted["pkey"]}  # Dify's names again
    target.rollback(collection)
    assert (target.count(collection), target.count(previous_name(collection))) == (5, 2)
    # --drop-old on the next switch removes the previous generation: nothing left to roll back to
    build = target.build_name(collection)
    target.create(build, DIM)
    target.insert(build, rows_for("ds", 1, tag="c"))
    target.finish(build)
    assert "dropped" in target.switch(collection, build, drop_old=True)
    assert not target.exists(previous_name(collection)) and not target.exists(build)
    with pytest.raises(NotFoundError):
        target.rollback(collection)


def test_a_failed_switch_changes_nothing(pgvector_db: PgvectorDatabase, target: PgvectorTarget) -> None:
    """One transaction: when the second rename cannot happen (its index name is taken by a foreign table), the
    first is undone too, and Dify's name still answers with the old rows."""
    collection = dify_collection_name(str(uuid.uuid4()))
    target.create(collection, DIM)
    target.insert(collection, rows_for("ds", 3))
    target.finish(collection)
    build = target.build_name(collection)
    target.create(build, DIM)
    target.insert(build, rows_for("ds", 5, tag="b"))
    target.finish(build)
    # The live table's pkey moves to the previous generation's index name: occupy that name with another table.
    blocker = index_names(previous_name(collection))["pkey"]
    with pgvector_db.connect(autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("CREATE TABLE {} (x int)").format(psycopg.sql.Identifier(blocker)))
    with pytest.raises(Exception):  # noqa: B017 - any drtool error: the point is what it leaves behind
        target.switch(collection, build, drop_old=False)
    assert target.count(collection) == 3 and target.count(build) == 5
    assert not target.exists(previous_name(collection))
    assert any(n.startswith("embedding_cosine_v1_idx_") for n in target.layout(collection)["indexes"])


def test_insert_is_idempotent_and_delete_takes_exactly_those_rows(target: PgvectorTarget) -> None:
    collection = dify_collection_name(str(uuid.uuid4()))
    rows = rows_for("ds", 6)
    target.create(collection, DIM)
    assert target.insert(collection, rows) == 6
    assert target.insert(collection, rows[2:5]) == 3  # a batch sent again after a crash
    assert target.count(collection) == 6
    changed = [("new text", rows[0][1], rows[0][2])]
    target.insert(collection, changed)
    hits = target.search(collection, rows[0][2], 1)
    assert hits[0]["text"] == "new text" and target.count(collection) == 6
    gone = [rows[1][1]["doc_id"], rows[3][1]["doc_id"], str(uuid.uuid4())]
    assert target.delete_doc_ids(collection, gone) == 2
    left = {i.doc_id for i in target.iter_identities(collection)}
    assert left == {r[1]["doc_id"] for r in rows} - set(gone)


def test_chunk_ids_that_are_not_uuids_get_stable_uuid_keys(target: PgvectorTarget) -> None:
    """Dify's id column is a UUID (its index_node_id): other chunk ids map to a uuid5, the same every time."""
    collection = dify_collection_name(str(uuid.uuid4()))
    meta = {"doc_id": "node-17", "document_id": "d", "dataset_id": "ds", "doc_hash": "h"}
    target.create(collection, DIM)
    target.insert(collection, [("t", meta, random_unit(1))])
    target.insert(collection, [("t", meta, random_unit(1))])
    (identity,) = list(target.iter_identities(collection))
    assert identity.key == row_id("node-17") == target.object_key("t", meta) and identity.doc_id == "node-17"
    assert uuid.UUID(identity.key).version == 5
    assert target.delete_doc_ids(collection, ["node-17"]) == 1


def test_a_hostile_collection_name_is_only_ever_a_name(pgvector_db: PgvectorDatabase, target: PgvectorTarget
                                                       ) -> None:
    """A class_prefix read from Postgres or a chunk file is data: quotes, semicolons and comment markers in it
    must name a table, never run SQL. A canary table would disappear if any statement were injected."""
    with pgvector_db.connect(autocommit=True) as conn:
        conn.execute("CREATE TABLE canary (x int)")
    hostile = 'x"; DROP TABLE canary; --\' OR 1=1'
    rows = rows_for("ds", 3)
    target.create(hostile, DIM)
    target.insert(hostile, rows)
    target.finish(hostile)
    assert target.exists(hostile) and target.count(hostile) == 3 and target.dimension(hostile) == DIM
    build_and_switch(target, hostile, rows_for("ds", 4, tag="b"))
    target.rollback(hostile)
    hits, _ = target.dify_search(hostile, rows[0][2], 3, [rows[0][1]["document_id"], "a') OR ('1'='1"])
    assert hits[0]["text"] == rows[0][0]
    assert {h["metadata"]["document_id"] for h in hits} == {rows[0][1]["document_id"]}
    assert len(list(target.iter_identities(hostile))) == 3
    target.purge(hostile)
    with pgvector_db.connect() as conn:
        assert conn.execute("SELECT to_regclass('public.canary') IS NOT NULL").fetchone()[0]
        names = [r[0] for r in conn.execute("SELECT relname FROM pg_class WHERE relkind = 'r' AND "
                                            "relnamespace = 'public'::regnamespace")]
    assert names == ["canary"], names


def test_wrong_password_is_exit_12_and_never_printed(pgvector_db: PgvectorDatabase) -> None:
    settings = pgvector_db.settings(password="wrong-" + uuid.uuid4().hex)
    with pytest.raises(AuthError) as caught:
        PgvectorTarget(settings)
    assert caught.value.exit_code == ExitCode.AUTH == 12
    assert str(settings.password) not in str(caught.value) and "pgvector.password" in str(caught.value)


def test_missing_privilege_is_exit_12(pgvector_db: PgvectorDatabase) -> None:
    """A role that may log in but not create tables in the schema (Postgres >= 15 default for public)."""
    password = pgvector_db.create_role("drtool_reader_" + uuid.uuid4().hex[:6])
    role = pgvector_db.server.roles[-1]
    store = PgvectorTarget(pgvector_db.settings(user=role, password=password))
    try:
        with pytest.raises(AuthError) as caught:
            store.create(dify_collection_name(str(uuid.uuid4())), DIM)
        assert caught.value.exit_code == ExitCode.AUTH and "permission denied" in caught.value.message
    finally:
        store.close()


def test_unreachable_server_is_the_network_exit_code(pgvector_db: PgvectorDatabase) -> None:
    settings = pgvector_db.settings(port=free_port(), connect_timeout=3)
    with pytest.raises(UnavailableError) as caught:
        PgvectorTarget(settings)
    assert caught.value.exit_code == ExitCode.ERROR == 1


def test_a_missing_database_is_not_found(pgvector_db: PgvectorDatabase) -> None:
    with pytest.raises(NotFoundError) as caught:
        PgvectorTarget(pgvector_db.settings(database="no_such_db_" + uuid.uuid4().hex[:6]))
    assert caught.value.exit_code == ExitCode.NOT_FOUND


def test_identities_stream_through_a_server_side_cursor(pgvector_db: PgvectorDatabase, target: PgvectorTarget
                                                        ) -> None:
    """verify reads every row: the adapter FETCHes batches from a named cursor instead of loading the table."""
    collection = dify_collection_name(str(uuid.uuid4()))
    rows = rows_for("ds", 250, documents=5)
    target.create(collection, DIM)
    for start in range(0, len(rows), 100):
        target.insert(collection, rows[start:start + 100])
    stream = target.iter_identities(collection, batch_size=40)
    first = next(stream)
    with pgvector_db.connect(autocommit=True) as conn:
        queries = [r[0] for r in conn.execute("SELECT query FROM pg_stat_activity WHERE application_name = "
                                              "'drtool' AND query LIKE 'FETCH FORWARD 40 FROM %%'")]
    assert queries, "no FETCH from a server-side cursor in progress"
    keys = [first.key, *(i.key for i in stream)]
    assert len(keys) == len(set(keys)) == 250
    assert set(keys) == {r[1]["doc_id"] for r in rows}


def test_more_than_2000_dimensions_get_no_index_as_in_dify(target: PgvectorTarget) -> None:
    collection = dify_collection_name(str(uuid.uuid4()))
    target.create(collection, 2001)
    target.insert(collection, [("t", {"doc_id": str(uuid.uuid4()), "document_id": "d"}, [1.0] + [0.0] * 2000)])
    target.finish(collection)
    layout = target.layout(collection)
    assert layout["columns"][3] == ("embedding", "vector(2001)", True)
    assert [n for n in layout["indexes"] if not n.endswith("_pkey")] == []
    assert target.search(collection, [1.0] + [0.0] * 2000, 1)[0]["text"] == "t"


def test_config_check_reports_versions(pgvector_db: PgvectorDatabase, target: PgvectorTarget) -> None:
    from drtool.adapters.pgvector import check

    target.create(dify_collection_name(str(uuid.uuid4())), DIM)
    info = check(pgvector_db.settings())
    assert info["version"] == pgvector_db.server.server_version
    assert info["pgvector"] == pgvector_db.server.pgvector_version and info["embedding_tables"] == 1


def test_pg_bigm_without_the_extension_fails_the_finish_and_says_why(pgvector_db: PgvectorDatabase) -> None:
    """PGVECTOR_PG_BIGM=true asks for Dify's gin index too; this server has no pg_bigm: a clear error, not exit 0
    with a table Dify's full-text search would then fail on."""
    store = PgvectorTarget(pgvector_db.settings(pg_bigm=True))
    try:
        collection = dify_collection_name(str(uuid.uuid4()))
        store.create(collection, DIM)
        store.insert(collection, rows_for("ds", 2))
        with pytest.raises(Exception) as caught:
            store.finish(collection)
        assert "pg_bigm" in str(caught.value) and caught.value.exit_code == ExitCode.ERROR  # type: ignore
        assert store.count(collection) == 2
    finally:
        store.close()


def test_a_dropped_connection_is_reopened_and_the_statement_retried(pgvector_db: PgvectorDatabase,
                                                                   target: PgvectorTarget) -> None:
    """A Postgres restart or a proxy reset kills drtool's session: the next statement reconnects (bounded
    retries), instead of failing a long rebuild; a refused login is never retried (see the exit-12 tests)."""
    collection = dify_collection_name(str(uuid.uuid4()))
    target.create(collection, DIM)
    target.insert(collection, rows_for("ds", 3))
    pid = target.conn.info.backend_pid
    with pgvector_db.connect(autocommit=True) as conn:
        assert conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
    assert target.count(collection) == 3
    assert target.conn.info.backend_pid != pid


def test_a_table_dify_created_is_switched_out_and_rolled_back_in(pgvector_db: PgvectorDatabase,
                                                                target: PgvectorTarget) -> None:
    """The live table is Dify's own, from a Dify before 1.4.1 (its index is the fixed `embedding_cosine_v1_idx`,
    issue #19670), with a row Dify inserted. drtool's build takes Dify's names; the old table keeps its rows under
    drtool's names, and a rollback brings it back with Dify's current names."""
    collection = dify_collection_name(str(uuid.uuid4()))
    table = f"embedding_{collection}"
    doc_id = str(uuid.uuid4())
    with pgvector_db.connect() as conn:
        conn.execute(DIFY_CREATE_TABLE.format(table_name=table, dimension=DIM))  # type: ignore[arg-type]
        conn.execute(f"CREATE INDEX IF NOT EXISTS embedding_cosine_v1_idx ON {table} "  # type: ignore[arg-type]
                     "USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)")
        conn.execute(f"INSERT INTO {table} (id, text, meta, embedding) VALUES (%s, %s, %s, %s)",  # type: ignore
                     (doc_id, "Dify's row", json.dumps({"doc_id": doc_id, "document_id": "d"}), str(random_unit(5))))
        conn.commit()
    assert target.exists(collection) and target.count(collection) == 1
    build_and_switch(target, collection, rows_for("ds", 4))
    wanted = dify_index_names(collection)
    assert set(target.layout(collection)["indexes"]) == {wanted["emb"], wanted["pkey"]}
    old = target.layout(previous_name(collection))
    assert "embedding_cosine_v1_idx" not in old["indexes"] and all(n.startswith("drtool_") for n in old["indexes"])
    target.rollback(collection)
    with pgvector_db.connect() as conn:
        assert conn.execute(f"SELECT text FROM {table}").fetchall() == [("Dify's row",)]  # type: ignore
    assert set(target.layout(collection)["indexes"]) == {wanted["emb"], wanted["pkey"]}
