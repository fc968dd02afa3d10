"""Issue 13: the plugin daemon can point at another server with another role; the snapshot dumps its database there
and restore brings it back there, while the main database stays on the main server.

Real servers: the session's Postgres for Dify's database and a second, fresh Postgres cluster for the plugin
database, owned by a role of its own whose password the main role does not share.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql

from tests.snapshot.conftest import SnapshotEnv, minio_env  # noqa: F401  (fixture)
from tests.snapshot.test_plugin_database import seed_plugin_database, table_rows
from tests.stack.pg_server import PostgresServer, local_postgres


@pytest.fixture(scope="module")
def other_server() -> Iterator[PostgresServer]:
    with local_postgres() as server:
        yield server


def test_a_plugin_database_on_another_server_with_its_own_role_is_dumped_and_restored_there(
        minio_env: SnapshotEnv, other_server: PostgresServer) -> None:  # noqa: F811
    e = minio_env
    role, password = "plugin_owner", "pw-" + secrets.token_urlsafe(12)
    name = f"dify_plugin_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(other_server.admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(sql.Identifier(role),
                                                                                  sql.Literal(password)))
        admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(role)))
    dsn = (f"postgresql://{role}:{quote(password, safe='')}@{other_server.host}:{other_server.port}/{name}")
    seed_plugin_database(dsn, str(e.db.tenant_id))
    before = table_rows(dsn)
    e.env.update({"DRTOOL_POSTGRES_PLUGIN_DATABASE": name, "DRTOOL_POSTGRES_PLUGIN_HOST": other_server.host,
                  "DRTOOL_POSTGRES_PLUGIN_PORT": str(other_server.port), "DRTOOL_POSTGRES_PLUGIN_USER": role,
                  "DRTOOL_POSTGRES_PLUGIN_PASSWORD": password})

    run = e.run("snapshot", "create", "--json")
    assert run.code == 0, run.stderr
    sid = run.result()["snapshot"]
    assert password not in run.stdout + run.stderr
    assert e.run("snapshots", "verify", sid, "--deep").code == 0

    target = f"restored_{uuid.uuid4().hex[:8]}"
    try:
        r = e.run("restore", sid, "--target-db", target, "--no-objects", "--json")
        assert r.code == 0, r.stderr
        plugin_target = f"{target}_plugin"
        assert r.result()["plugin_database"]["target"].endswith(f"{other_server.port}/{plugin_target}"), r.result()
        restored = f"postgresql://{role}:{quote(password, safe='')}@{other_server.host}:{other_server.port}/" \
                   f"{plugin_target}"
        assert table_rows(restored) == before
        with psycopg.connect(e.pg.admin_dsn) as conn:  # the main server got the main database only
            found = {n for (n,) in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s",
                                                (target + "%",))}
        assert found == {target}
    finally:
        e.pg.drop_database(target)


def test_another_plugin_user_never_gets_the_main_password() -> None:
    from drtool.config import load_settings
    from drtool.ops.snapshot.databases import plugin_postgres

    base = {"DRTOOL_POSTGRES_PASSWORD": "main-secret", "DRTOOL_POSTGRES_PLUGIN_DATABASE": "dify_plugin"}
    same = plugin_postgres(load_settings(environ=base))
    assert same is not None and (same.user, same.password) == ("postgres", "main-secret")
    other = plugin_postgres(load_settings(environ={**base, "DRTOOL_POSTGRES_PLUGIN_USER": "plugin"}))
    assert other is not None and other.user == "plugin" and other.password is None
    moved = plugin_postgres(load_settings(environ={**base, "DRTOOL_POSTGRES_PLUGIN_HOST": "10.0.0.9"}))
    assert moved is not None and (moved.host, moved.password) == ("10.0.0.9", "main-secret")
