"""pgvector through psycopg 3: Dify's VECTOR_STORE=pgvector, one table per collection in a Postgres.

Dify's layout (api/core/rag/datasource/vdb/pgvector/pgvector.py, Dify 1.4.1 to 1.13.x and main as read in 2026;
the version notes are in docs/rebuild-index.md):

- table `embedding_<collection>` written in Dify's SQL WITHOUT quotes, so Postgres folds it to lower case and cuts
  it to 63 bytes: `embedding_Vector_index_<uuid>_Node` (64 characters) is really `embedding_vector_index_<uuid>_nod`.
  drtool computes the same folded, truncated name and quotes it (psycopg.sql.Identifier), so a collection name
  read from data can never inject SQL, and Dify's unquoted statements reach exactly the table drtool wrote.
- `id UUID PRIMARY KEY` (= metadata doc_id, Dify's index_node_id), `text TEXT NOT NULL`, `meta JSONB NOT NULL`,
  `embedding vector(<dim>) NOT NULL`, `USING heap`.
- `CREATE INDEX embedding_cosine_v1_idx_<md5("embedding_<collection>")[:8]> ... USING hnsw (embedding
  vector_cosine_ops) WITH (m = 16, ef_construction = 64)`, only when dim <= 2000 (pgvector's HNSW limit);
  with PGVECTOR_PG_BIGM also `bigm_idx_<same hash>` USING gin (text gin_bigm_ops).
- Dify's search: `SELECT meta, text, embedding <=> %s AS distance FROM <table> WHERE meta->>'document_id' in
  ('<id>', ...) ORDER BY distance LIMIT <k>` with the vector as a JSON string; score = 1 - distance (cosine).

Blue/green: the build is a table under a drtool name; the switch renames the live table (and its indexes) to the
previous-generation name and the build (and its indexes) to Dify's names in ONE transaction, so a concurrent
Dify query sees the old table or the new one, never no table. Postgres holds an ACCESS EXCLUSIVE lock for the
few milliseconds of the renames; a query already running keeps its table, later ones wait and then read the new.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from drtool.config import PgvectorSettings
from drtool.core import naming
from drtool.core.ports import VectorIdentity, VectorStoreDefaults
from drtool.errors import AuthError, DrtoolError, NotFoundError, UnavailableError

T = TypeVar("T")

MAX_IDENTIFIER = 63  # NAMEDATALEN - 1: Postgres cuts longer identifiers (with a NOTICE) to this many bytes
TABLE_PREFIX = "embedding_"
HNSW_MAX_DIMENSION = 2000  # pgvector cannot index more dimensions with HNSW; Dify then creates no index
SWAP_SUFFIX = "_drtool_swap"
DERIVED_SUFFIXES = (naming.BUILD_SUFFIX, naming.PREVIOUS_SUFFIX, SWAP_SUFFIX)
VECTOR_ACCESS_METHODS = ("hnsw", "ivfflat", "diskann", "vectors")
# Chunk ids that are not UUIDs (Dify's are always uuid4) become uuid5 ids in this namespace: the table's key is a
# UUID column. Dify's delete_by_ids would not find such rows by their doc_id, but Dify never wrote such ids.
DOC_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/drtool/drtool/pgvector/doc_id")
LOCK_TIMEOUT = "5s"  # the switch waits at most this long for Dify's running queries, then retries
# SQLSTATEs worth another try: serialization failure, deadlock, lock timeout, admin/crash shutdown, cannot connect.
_RETRY_SQLSTATES = frozenset({"40001", "40P01", "55P03", "57P01", "57P02", "57P03"})


# --- Dify's names ---------------------------------------------------------------------------------------------------

def _fold(name: str) -> str:
    """What Postgres does to an unquoted identifier in a UTF-8 database: ASCII A-Z to lower case, nothing else."""
    return name.translate(str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz"))


def _clip(name: str, limit: int = MAX_IDENTIFIER) -> str:
    """Cut to `limit` UTF-8 bytes on a character boundary, as Postgres's truncate_identifier does."""
    data = name.encode("utf-8")
    if len(data) <= limit:
        return name
    return data[:limit].decode("utf-8", errors="ignore")


def _hash8(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()[:8]


def dify_table_name(collection: str) -> str:
    """The table Dify's unquoted `embedding_{collection}` reaches: folded to lower case, cut to 63 bytes."""
    return _clip(_fold(TABLE_PREFIX + collection))


def dify_index_names(collection: str) -> dict[str, str]:
    """Index names Dify (>= 1.4.1) gives the table of `collection`; the hash is of the name before folding."""
    digest = _hash8(TABLE_PREFIX + collection)
    table = dify_table_name(collection)
    return {"emb": f"embedding_cosine_v1_idx_{digest}", "bigm": f"bigm_idx_{digest}",
            "pkey": _clip(table, MAX_IDENTIFIER - len("_pkey")) + "_pkey"}


def _derived_table(live: str, suffix: str) -> str:
    """`<live table><suffix>`, or, when that is over 63 bytes (the usual case: Dify's names already fill them),
    a cut live name, a hash of the whole live name and the suffix, so generations of two collections never meet."""
    if len((live + suffix).encode("utf-8")) <= MAX_IDENTIFIER:
        return live + suffix
    return _clip(live, MAX_IDENTIFIER - len(suffix) - 9) + "_" + _hash8(live) + suffix


def _split_derived(name: str) -> tuple[str, str]:
    """(collection, drtool suffix) of a build/previous/swap name; (name, "") for Dify's own name."""
    for suffix in DERIVED_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], suffix
    return name, ""


def table_name(name: str) -> str:
    """The physical table of a collection name as drtool's operations use it (Dify's or a derived one)."""
    collection, suffix = _split_derived(name)
    return _derived_table(dify_table_name(collection), suffix) if suffix else dify_table_name(collection)


def index_names(name: str) -> dict[str, str]:
    """The index names a table should carry: Dify's for Dify's name, drtool's own (unique per table) otherwise."""
    collection, suffix = _split_derived(name)
    if not suffix:
        return dify_index_names(collection)
    digest = hashlib.md5(table_name(name).encode("utf-8")).hexdigest()[:16]
    return {role: f"drtool_{digest}_{role}" for role in ("emb", "bigm", "pkey")}


def row_id(doc_id: str) -> str:
    """The `id` UUID of a chunk: its doc_id (Dify's index_node_id, a uuid4) in canonical form; see
    DOC_ID_NAMESPACE for ids that are not UUIDs."""
    try:
        return str(uuid.UUID(doc_id))
    except (ValueError, AttributeError, TypeError):
        return str(uuid.uuid5(DOC_ID_NAMESPACE, str(doc_id)))


# --- connection and errors ------------------------------------------------------------------------------------------

def _system(settings: PgvectorSettings) -> str:
    return f"pgvector {settings.host}:{settings.port}/{settings.database}"


def connect(settings: PgvectorSettings) -> psycopg.Connection[Any]:
    """An autocommit connection (each operation opens its own transaction); the password stays in keywords."""
    if not settings.host:
        raise UnavailableError("pgvector.host is not set", hint="set DRTOOL_PGVECTOR_HOST (or --dify-env with "
                               "PGVECTOR_HOST)", system="pgvector")
    params: dict[str, Any] = {
        "host": settings.host, "port": settings.port, "user": settings.user, "dbname": settings.database,
        "sslmode": settings.sslmode, "connect_timeout": settings.connect_timeout, "application_name": "drtool",
    }
    if settings.password:
        params["password"] = settings.password
    try:
        return psycopg.connect(**params, autocommit=True)
    except psycopg.Error as exc:
        raise translate_error(exc, settings) from None


def translate_error(exc: Exception, settings: PgvectorSettings) -> DrtoolError:
    """A psycopg error as the drtool error an operator acts on (exit codes of docs/exit-codes.md)."""
    system = _system(settings)
    text = str(exc).strip()
    lowered = text.lower()
    sqlstate = getattr(exc, "sqlstate", None)
    first = text.splitlines()[0] if text else type(exc).__name__
    if sqlstate == "42P01":  # undefined_table: before the text checks, a table name may contain any word
        return NotFoundError(first, system=system)
    if (sqlstate in ("28P01", "28000") or "password authentication failed" in lowered
            or "no password supplied" in lowered or ('role "' in lowered and "does not exist" in lowered)
            or "no pg_hba.conf entry" in lowered):
        return AuthError(f"authentication failed for user {settings.user}",
                         hint="check pgvector.user and pgvector.password (Dify's PGVECTOR_USER/PGVECTOR_PASSWORD)",
                         system=system)
    if sqlstate == "42501" or "permission denied" in lowered or "must be owner" in lowered:
        return AuthError(f"permission denied: {first}",
                         hint="the user needs CREATE on the schema, ownership of Dify's embedding_* tables, and "
                              "the vector extension installed (or the right to create it)", system=system)
    if sqlstate == "3D000" or ('database "' in lowered and "does not exist" in lowered):
        return NotFoundError(f"database {settings.database} does not exist", hint="check pgvector.database",
                             system=system)
    if isinstance(exc, psycopg.OperationalError) or sqlstate in _RETRY_SQLSTATES:
        return UnavailableError(f"cannot reach or use the server: {first}",
                                hint="check pgvector.host and pgvector.port, and that Postgres accepts connections",
                                system=system)
    return DrtoolError(f"{type(exc).__name__}: {first}", system=system)


def _retryable(exc: BaseException, conn: psycopg.Connection[Any] | None) -> bool:
    if not isinstance(exc, psycopg.Error):
        return False
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate in _RETRY_SQLSTATES or (sqlstate or "").startswith("08"):
        return True
    # A dropped connection (server restart, reset) surfaces without a SQLSTATE; a refused login never retries.
    return isinstance(exc, psycopg.OperationalError) and conn is not None and conn.closed != 0


def _backoff(attempt: int) -> float:
    """Exponential with jitter: 0.2 s, 0.4 s, 0.8 s ... at most 5 s, each times 0.5-1.5."""
    return min(5.0, 0.2 * 2 ** (attempt - 1)) * (0.5 + random.random())


def check(settings: PgvectorSettings) -> dict[str, Any]:
    """`drtool config check`: reachable, credentials accepted, the vector extension there, Dify's tables counted."""
    conn = connect(settings)
    try:
        with conn.cursor() as cur:
            version = cur.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
            installed = cur.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
            available = cur.execute("SELECT default_version FROM pg_available_extensions WHERE name = 'vector'"
                                    ).fetchone()
            tables = cur.execute(r"SELECT count(*) FROM pg_class c WHERE c.relkind IN ('r', 'p') AND "
                                 r"c.relnamespace = current_schema()::regnamespace AND c.relname LIKE 'embedding\_%'"
                                 ).fetchone()[0]  # type: ignore[index]
    except psycopg.Error as exc:
        raise translate_error(exc, settings) from None
    finally:
        conn.close()
    if installed is None and available is None:
        raise UnavailableError("the vector extension is not installed on this server",
                               hint="install pgvector (>= 0.5, for HNSW) where Dify's PGVECTOR_HOST points",
                               system=_system(settings))
    extension = str(installed[0]) if installed else f"not created yet (available: {available[0]})"  # type: ignore
    return {"version": str(version), "pgvector": extension, "embedding_tables": int(tables)}


# --- the VectorStore ------------------------------------------------------------------------------------------------

class PgvectorTarget(VectorStoreDefaults):
    """drtool.core.ports.VectorStore for pgvector (registered as "pgvector" in drtool.adapters.vector_stores).

    Collection names from drtool's operations (Dify's class_prefix, and naming's build/previous names) map to
    tables with table_name(); every identifier is quoted, every value is a parameter or a literal psycopg quotes.
    """

    backend = "pgvector"
    switches_by_alias = False
    switch_is_rename = True

    def __init__(self, settings: PgvectorSettings) -> None:
        self.settings = settings
        self.conn = connect(settings)

    # -- plumbing --

    def _run(self, what: str, fn: Callable[[psycopg.Cursor[Any]], T]) -> T:
        """fn in one transaction; retried on a lost connection, a deadlock or a lock timeout (every statement
        here is idempotent or all-or-nothing), never on refused credentials or an SQL error."""
        attempts = max(1, self.settings.max_attempts)
        for attempt in range(1, attempts + 1):
            if self.conn.closed:
                try:
                    self.conn = connect(self.settings)
                except UnavailableError:  # still restarting: wait and ask again (refused logins are not retried)
                    if attempt < attempts:
                        time.sleep(_backoff(attempt))
                        continue
                    raise
            try:
                with self.conn.transaction(), self.conn.cursor() as cur:
                    return fn(cur)
            except DrtoolError:
                raise
            except psycopg.Error as exc:
                if attempt < attempts and _retryable(exc, self.conn):
                    time.sleep(_backoff(attempt))
                    continue
                err = translate_error(exc, self.settings)
                err.message = f"{what}: {err.message}"
                raise err from None
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _oid(cur: psycopg.Cursor[Any], table: str) -> int | None:
        row = cur.execute("SELECT c.oid FROM pg_class c WHERE c.relname = %s AND c.relkind IN ('r', 'p') "
                          "AND c.relnamespace = current_schema()::regnamespace", (table,)).fetchone()
        return int(row[0]) if row else None

    @staticmethod
    def _indexes(cur: psycopg.Cursor[Any], oid: int) -> list[tuple[str, str]]:
        """(index name, role) of a table's indexes: pkey, emb (a vector index), bigm, or other."""
        rows = cur.execute(
            "SELECT i.relname, x.indisprimary, am.amname, pg_get_indexdef(x.indexrelid) FROM pg_index x "
            "JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_am am ON am.oid = i.relam "
            "WHERE x.indrelid = %s ORDER BY i.relname", (oid,)).fetchall()
        out = []
        for name, primary, method, definition in rows:
            role = ("pkey" if primary else "emb" if method in VECTOR_ACCESS_METHODS
                    else "bigm" if "gin_bigm_ops" in definition else "other")
            out.append((str(name), role))
        return out

    def describe(self) -> str:
        return _system(self.settings)

    # -- collections --

    def exists(self, name: str) -> bool:
        table = table_name(name)
        return self._run(f"look up {table}", lambda cur: self._oid(cur, table) is not None)

    def alias_target(self, name: str) -> str | None:
        """None: a name is its table here (Dify queries `embedding_<name>` itself); the switch renames tables."""
        return None

    def dimension(self, name: str) -> int | None:
        table = table_name(name)

        def read(cur: psycopg.Cursor[Any]) -> int | None:
            oid = self._oid(cur, table)
            if oid is None:
                raise NotFoundError(f"{name}: table {table} does not exist", system=self.describe())
            row = cur.execute("SELECT atttypmod FROM pg_attribute WHERE attrelid = %s AND attname = 'embedding' "
                              "AND NOT attisdropped", (oid,)).fetchone()
            return int(row[0]) if row and int(row[0]) > 0 else None

        return self._run(f"describe {table}", read)

    def create(self, name: str, dimension: int) -> None:
        """Dify's CREATE TABLE (the primary key named as Postgres names Dify's); the vector index follows the
        load in finish(), because pgvector builds an HNSW graph faster over loaded rows than row by row."""
        table = table_name(name)
        pkey = index_names(name)["pkey"]
        dim = int(dimension)
        if dim <= 0:
            raise DrtoolError(f"invalid vector dimension {dimension}")

        def run(cur: psycopg.Cursor[Any]) -> None:
            if cur.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone() is None:
                cur.execute("CREATE EXTENSION IF NOT EXISTS vector")  # as Dify does on its first dataset
            cur.execute(sql.SQL("CREATE TABLE {} (id UUID CONSTRAINT {} PRIMARY KEY, text TEXT NOT NULL, "
                                "meta JSONB NOT NULL, embedding vector({}) NOT NULL) USING heap").format(
                sql.Identifier(table), sql.Identifier(pkey), sql.Literal(dim)))

        self._run(f"create {table}", run)

    def drop(self, name: str) -> None:
        table = table_name(name)
        self._run(f"drop {table}", _statement(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table))))

    def load(self, name: str) -> None:
        """Nothing to load: a Postgres table is queryable as soon as its transaction commits."""

    def finish(self, name: str) -> None:
        """Dify's indexes (HNSW cosine m=16 ef_construction=64 up to 2000 dimensions; pg_bigm when configured),
        then ANALYZE so the planner knows the table's size and uses the index for Dify's ORDER BY ... LIMIT."""
        table = table_name(name)
        names = index_names(name)
        dim = self.dimension(name)
        bigm = self.settings.pg_bigm

        def run(cur: psycopg.Cursor[Any]) -> None:
            oid = self._oid(cur, table)
            if oid is None:
                raise NotFoundError(f"{name}: table {table} does not exist", system=self.describe())
            roles = {role for _, role in self._indexes(cur, oid)}
            if dim is not None and dim <= HNSW_MAX_DIMENSION and "emb" not in roles:
                cur.execute(sql.SQL("CREATE INDEX {} ON {} USING hnsw (embedding vector_cosine_ops) "
                                    "WITH (m = 16, ef_construction = 64)").format(
                    sql.Identifier(names["emb"]), sql.Identifier(table)))
            if bigm and "bigm" not in roles:
                cur.execute("CREATE EXTENSION IF NOT EXISTS pg_bigm")
                cur.execute(sql.SQL("CREATE INDEX {} ON {} USING gin (text gin_bigm_ops)").format(
                    sql.Identifier(names["bigm"]), sql.Identifier(table)))

        self._run(f"index {table}", run)
        self._run(f"analyze {table}", _statement(sql.SQL("ANALYZE {}").format(sql.Identifier(table))))

    # -- rows --

    def object_key(self, text: str, meta: dict[str, Any]) -> str | None:
        """The row's primary key, from its doc_id: two chunks with one key would be one row."""
        return row_id(str(meta.get("doc_id")))

    def insert(self, name: str, rows: list[tuple[str, dict[str, Any], list[float]]]) -> int:
        """Upsert by id (ON CONFLICT DO UPDATE): sending a batch again after a crash leaves one row per chunk."""
        if not rows:
            return 0
        table = table_name(name)
        statement = sql.SQL("INSERT INTO {} (id, text, meta, embedding) VALUES (%s, %s, %s, %s::vector) "
                            "ON CONFLICT (id) DO UPDATE SET text = EXCLUDED.text, meta = EXCLUDED.meta, "
                            "embedding = EXCLUDED.embedding").format(sql.Identifier(table))
        params = [(row_id(str(meta.get("doc_id"))), text, Jsonb(meta), _vector_text(vector))
                  for text, meta, vector in rows]
        self._run(f"insert into {table}", lambda cur: cur.executemany(statement, params))
        return len(rows)

    def delete_doc_ids(self, name: str, doc_ids: list[str]) -> int:
        if not doc_ids:
            return 0
        table = table_name(name)
        ids = [row_id(d) for d in doc_ids]
        return self._run(f"delete from {table}", lambda cur: cur.execute(
            sql.SQL("DELETE FROM {} WHERE id = ANY(%s::uuid[])").format(sql.Identifier(table)), (ids,)).rowcount)

    def count(self, name: str) -> int:
        table = table_name(name)
        return self._run(f"count {table}", lambda cur: int(cur.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()[0]))  # type: ignore[index]

    # -- searches --

    def search(self, name: str, vector: list[float], k: int) -> list[dict[str, Any]]:
        """The k nearest rows by cosine distance, through the HNSW index (ef_search at least k)."""
        table = table_name(name)

        def run(cur: psycopg.Cursor[Any]) -> list[dict[str, Any]]:
            cur.execute(sql.SQL("SET LOCAL hnsw.ef_search = {}").format(sql.Literal(max(40, int(k)))))
            cur.execute(sql.SQL("SELECT meta, text, embedding <=> %s::vector AS distance FROM {} "
                                "ORDER BY distance LIMIT %s").format(sql.Identifier(table)),
                        (_vector_text(vector), int(k)))
            return [_hit(meta, text, distance) for meta, text, distance in cur.fetchall()]

        return self._run(f"search {table}", run)

    def dify_search(self, name: str, vector: list[float], k: int, document_ids: list[str]
                    ) -> tuple[list[dict[str, Any]], str]:
        """Dify's search_by_vector statement: its filter on meta->>'document_id', its untyped JSON vector, its
        cosine distance and score = 1 - distance. Values Dify pastes into the SQL are quoted literals here."""
        table = table_name(name)
        ids = sql.SQL(", ").join(sql.Literal(str(d)) for d in document_ids)
        where = sql.SQL("meta->>'document_id' in ({})").format(ids)
        statement = sql.SQL("SELECT meta, text, embedding <=> %s AS distance FROM {} WHERE {} ORDER BY distance "
                            "LIMIT {}").format(sql.Identifier(table), where, sql.Literal(int(k)))

        def run(cur: psycopg.Cursor[Any]) -> tuple[list[dict[str, Any]], str]:
            cur.execute(statement, (json.dumps(vector),))
            return ([_hit(meta, text, distance) for meta, text, distance in cur.fetchall()],
                    where.as_string(cur))

        return self._run(f"search {table}", run)

    # -- blue/green --

    def build_name(self, collection: str) -> str:
        return naming.build_name(collection)

    def confirm_needed(self, collection: str) -> str | None:
        return None  # the switch renames: the replaced table is kept as the previous generation

    def _rename(self, cur: psycopg.Cursor[Any], src: str, dst: str) -> None:
        """Table `src` -> `dst`, and its indexes to the names `dst` carries (Dify's when dst is Dify's name)."""
        src_table, dst_table = table_name(src), table_name(dst)
        oid = self._oid(cur, src_table)
        if oid is None:
            raise NotFoundError(f"{src}: table {src_table} does not exist", system=self.describe())
        cur.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(sql.Identifier(src_table),
                                                                   sql.Identifier(dst_table)))
        wanted = index_names(dst)
        used: set[str] = set()  # a second index of one role (an old table with two vector indexes) keeps its name
        for index, role in self._indexes(cur, oid):
            target = wanted.get(role)
            if target is None or role in used:
                continue
            used.add(role)
            if index != target:
                cur.execute(sql.SQL("ALTER INDEX {} RENAME TO {}").format(sql.Identifier(index),
                                                                          sql.Identifier(target)))

    def switch(self, collection: str, build: str, *, drop_old: bool) -> str:
        """In one transaction: drop the older previous generation, live -> previous, build -> live (tables and
        indexes), and with drop_old the previous one too. Either all of it is visible or none of it."""
        previous = naming.previous_name(collection)
        live_t, prev_t, build_t = table_name(collection), table_name(previous), table_name(build)

        def run(cur: psycopg.Cursor[Any]) -> list[str]:
            cur.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT)))
            done: list[str] = []
            if self._oid(cur, build_t) is None:
                raise NotFoundError(f"{build}: build table {build_t} does not exist", system=self.describe())
            if self._oid(cur, live_t) is not None:
                if self._oid(cur, prev_t) is not None:
                    cur.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(prev_t)))  # one generation kept
                self._rename(cur, collection, previous)
                done.append(f"renamed {live_t} -> {prev_t}")
            self._rename(cur, build, collection)
            done.append(f"{build_t} -> {live_t}")
            if drop_old and self._oid(cur, prev_t) is not None:
                cur.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(prev_t)))
                done.append(f"dropped {prev_t} (--drop-old)")
            return done

        return ", ".join(self._run(f"switch {live_t}", run)) + " (one transaction)"

    def rollback(self, collection: str) -> str:
        previous = naming.previous_name(collection)
        swap = collection + SWAP_SUFFIX
        live_t, prev_t = table_name(collection), table_name(previous)

        def run(cur: psycopg.Cursor[Any]) -> None:
            cur.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT)))
            if self._oid(cur, prev_t) is None:
                raise NotFoundError(f"no previous generation of {collection} (table {prev_t}) to roll back to",
                                    hint="it was dropped (--drop-old) or no blue/green switch happened",
                                    system=self.describe())
            had_live = self._oid(cur, live_t) is not None
            if had_live:
                self._rename(cur, collection, swap)
            self._rename(cur, previous, collection)
            if had_live:
                self._rename(cur, swap, previous)

        self._run(f"roll back {live_t}", run)
        return f"swapped {live_t} <-> {prev_t} (one transaction)"

    # -- reading everything (verify) --

    def iter_metadata(self, name: str, batch_size: int = 1000) -> Iterator[tuple[str, dict[str, Any]]]:
        """(id, meta) of every row through a server-side cursor on a connection of its own: memory holds one
        batch, and the caller may use the target between rows. No vectors are transferred."""
        table = table_name(name)
        conn = connect(self.settings)
        try:
            with conn.transaction(), conn.cursor(name="drtool_scan") as cur:
                cur.itersize = max(1, int(batch_size))
                cur.execute(sql.SQL("SELECT id::text, meta FROM {}").format(sql.Identifier(table)))
                for key, meta in cur:
                    yield str(key), meta if isinstance(meta, dict) else {}
        except psycopg.Error as exc:
            err = translate_error(exc, self.settings)
            err.message = f"read {table}: {err.message}"
            raise err from None
        finally:
            conn.close()

    def iter_identities(self, name: str, batch_size: int = 1000) -> Iterator[VectorIdentity]:
        """Only the three identity keys leave the server (meta->>...), not the whole metadata."""
        table = table_name(name)
        conn = connect(self.settings)
        try:
            with conn.transaction(), conn.cursor(name="drtool_identities") as cur:
                cur.itersize = max(1, int(batch_size))
                cur.execute(sql.SQL("SELECT id::text, meta->>'doc_id', meta->>'document_id', meta->>'dataset_id' "
                                    "FROM {}").format(sql.Identifier(table)))
                for key, doc_id, document_id, dataset_id in cur:
                    yield VectorIdentity(str(key), doc_id, document_id, dataset_id)
        except psycopg.Error as exc:
            err = translate_error(exc, self.settings)
            err.message = f"read {table}: {err.message}"
            raise err from None
        finally:
            conn.close()

    def layout(self, name: str) -> dict[str, Any]:
        """What a test or an operator compares with Dify's DDL: columns, access method, indexes, constraints."""
        table = table_name(name)

        def read(cur: psycopg.Cursor[Any]) -> dict[str, Any]:
            oid = self._oid(cur, table)
            if oid is None:
                raise NotFoundError(f"{name}: table {table} does not exist", system=self.describe())
            columns = cur.execute("SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute "
                                  "WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                                  (oid,)).fetchall()
            method = cur.execute("SELECT am.amname FROM pg_class c JOIN pg_am am ON am.oid = c.relam "
                                 "WHERE c.oid = %s", (oid,)).fetchone()
            indexes = cur.execute("SELECT i.relname, pg_get_indexdef(x.indexrelid) FROM pg_index x "
                                  "JOIN pg_class i ON i.oid = x.indexrelid WHERE x.indrelid = %s ORDER BY 1",
                                  (oid,)).fetchall()
            constraints = cur.execute("SELECT conname, contype FROM pg_constraint WHERE conrelid = %s ORDER BY 1",
                                      (oid,)).fetchall()
            return {"table": table, "columns": [tuple(c) for c in columns],
                    "access_method": method[0] if method else None,
                    "indexes": {str(n): str(d) for n, d in indexes},
                    "constraints": [(str(n), str(t)) for n, t in constraints]}

        return self._run(f"describe {table}", read)

    def close(self) -> None:
        self.conn.close()


def _statement(statement: sql.Composable) -> Callable[[psycopg.Cursor[Any]], None]:
    def run(cur: psycopg.Cursor[Any]) -> None:
        cur.execute(statement)

    return run


def _vector_text(vector: list[float]) -> str:
    """pgvector's text form `[x,y,...]` (what Dify sends too, via json.dumps)."""
    return "[" + ",".join(repr(float(x)) for x in vector) + "]"


def _hit(meta: Any, text: Any, distance: Any) -> dict[str, Any]:
    return {"text": text, "metadata": meta if isinstance(meta, dict) else None,
            "score": None if distance is None else 1.0 - float(distance)}
