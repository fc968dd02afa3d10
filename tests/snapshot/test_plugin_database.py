"""Issue 13: a restore point holds the plugin daemon's database and storage, not only Dify's main database and files.

Real Postgres and MinIO. The plugin database is the daemon's schema (tests/stack/plugin_db_schema.sql, reconstructed
from dify-plugin-daemon bdb5642a), seeded with installed plugins, model and tool installations, endpoints and
plugin storage objects under the daemon's prefixes in Dify's bucket (PLUGIN_STORAGE_TYPE=aws_s3, same bucket).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.snapshot.conftest import SnapshotEnv, new_bucket

SCHEMA = Path(__file__).resolve().parents[1] / "stack" / "plugin_db_schema.sql"
PLUGIN_PREFIXES = ("plugin/", "plugin_packages/", "persistence/", "assets/")


@dataclass
class PluginWorld:
    e: SnapshotEnv
    plugin_db: str
    objects: dict[str, bytes]  # plugin storage keys -> bytes

    @property
    def main_db(self) -> str:
        return self.e.db.dbname


def _uuid7ish() -> str:
    return str(uuid.uuid4())


def seed_plugin_database(dsn: str, tenant_id: str) -> dict[str, bytes]:
    """The daemon's rows for three installed plugins (a model provider with the embedding model, a tool and an
    endpoint plugin), and the storage objects those rows imply, keyed as the daemon keys them."""
    now = datetime.now(UTC)
    objects: dict[str, bytes] = {}
    plugins = [("langgenius/openai", "0.2.3", "model"), ("langgenius/tavily", "0.1.1", "tool"),
               ("langgenius/webhook", "0.0.4", "endpoint")]
    with psycopg.connect(dsn) as conn:
        conn.execute(SCHEMA.read_bytes())
        for plugin_id, version, kind in plugins:
            package = f"difypkg {plugin_id} {version}".encode() * 40
            uid = f"{plugin_id}:{version}@{hashlib.sha256(package).hexdigest()}"
            icon = hashlib.sha256(package + b"icon.svg").hexdigest() + ".svg"
            declaration = {"plugin_unique_identifier": uid, "icon": icon, "type": kind, "version": version}
            conn.execute("INSERT INTO plugins (id, created_at, updated_at, plugin_unique_identifier, plugin_id, refers,"
                         " install_type, manifest_type, source) VALUES (%s,%s,%s,%s,%s,1,'local','plugin',"
                         "'marketplace')", (_uuid7ish(), now, now, uid, plugin_id))
            conn.execute("INSERT INTO plugin_declarations (id, created_at, updated_at, plugin_unique_identifier,"
                         " plugin_id, declaration) VALUES (%s,%s,%s,%s,%s,%s)",
                         (_uuid7ish(), now, now, uid, plugin_id, json.dumps(declaration)))
            conn.execute("INSERT INTO plugin_installations (id, created_at, updated_at, tenant_id, plugin_id,"
                         " plugin_unique_identifier, runtime_type, endpoints_setups, endpoints_active, source, meta)"
                         " VALUES (%s,%s,%s,%s,%s,%s,'local',%s,%s,'marketplace','{}')",
                         (_uuid7ish(), now, now, tenant_id, plugin_id, uid, int(kind == "endpoint"),
                          int(kind == "endpoint")))
            table = {"model": "ai_model_installations", "tool": "tool_installations"}.get(kind)
            if table:
                conn.execute(sql.SQL("INSERT INTO {} (id, created_at, updated_at, provider, tenant_id,"
                                     " plugin_unique_identifier, plugin_id) VALUES (%s,%s,%s,%s,%s,%s,%s)")
                             .format(sql.Identifier(table)),
                             (_uuid7ish(), now, now, plugin_id.split("/")[1], tenant_id, uid, plugin_id))
            if kind == "endpoint":
                conn.execute("INSERT INTO endpoints (id, created_at, updated_at, name, hook_id, tenant_id, user_id,"
                             " plugin_id, expired_at, enabled, settings) VALUES (%s,%s,%s,'default',%s,%s,%s,%s,"
                             "%s,true,%s)", (_uuid7ish(), now, now, uuid.uuid4().hex, tenant_id, str(uuid.uuid4()),
                                             plugin_id, now, json.dumps({"secret": "x"})))
            objects[f"plugin/{uid}"] = package
            objects[f"plugin_packages/{uid}"] = package
            objects[f"assets/{icon}"] = b"<svg/>" + package[:16]
        state = b'{"access_token": "opaque"}'
        objects[f"persistence/{tenant_id}/langgenius/openai/credentials"] = state
        conn.execute("INSERT INTO tenant_storages (id, created_at, updated_at, tenant_id, plugin_id, size)"
                     " VALUES (%s,%s,%s,%s,'langgenius/openai',%s)", (_uuid7ish(), now, now, tenant_id, len(state)))
        conn.execute("INSERT INTO install_tasks (id, created_at, updated_at, status, tenant_id, total_plugins,"
                     " completed_plugins, plugins) VALUES (%s,%s,%s,'success',%s,3,3,'[]')",
                     (_uuid7ish(), now, now, tenant_id))
    return objects


@pytest.fixture
def plugin_world(minio_env: SnapshotEnv) -> Iterator[PluginWorld]:
    e = minio_env
    name = f"dify_plugin_{uuid.uuid4().hex[:8]}"
    dsn = e.pg.create_database(name)
    try:
        objects = seed_plugin_database(dsn, str(e.db.tenant_id))
        for key, body in objects.items():
            e.client.put_object(Bucket=e.source_bucket, Key=key, Body=body)
        e.env.update({"DRTOOL_POSTGRES_PLUGIN_DATABASE": name,
                      "DRTOOL_SNAPSHOT_PLUGIN_STORAGE_BUCKET": e.source_bucket})
        yield PluginWorld(e=e, plugin_db=name, objects=objects)
    finally:
        e.pg.drop_database(name)


def table_rows(dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, sorted: two databases are equal when these are."""
    with psycopg.connect(dsn) as conn:
        tables = [t for (t,) in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]
        return {t: sorted(conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(t))).fetchall(), key=repr)
                for t in tables}


def test_snapshot_holds_both_databases_and_plugin_storage_and_restore_brings_them_back(
        plugin_world: PluginWorld) -> None:
    w, e = plugin_world, plugin_world.e
    main_before, plugin_before = table_rows(e.pg.dsn(w.main_db)), table_rows(e.pg.dsn(w.plugin_db))
    assert plugin_before["plugins"] and plugin_before["ai_model_installations"] and plugin_before["endpoints"]
    run = e.run("snapshot", "create", "--json")
    assert run.code == 0, run.stderr
    sid = run.result()["snapshot"]
    folder = f"drtool/snapshots/{sid}/"
    meta = json.loads(e.client.get_object(Bucket=e.dest_bucket, Key=folder + "meta.json")["Body"].read())
    plugin = meta["plugin_database"]
    assert plugin["name"] == w.plugin_db and plugin["artifact"] == "plugin_db.dump"
    assert plugin["row_counts"]["plugins"] == 3 and plugin["row_counts"]["ai_model_installations"] == 1
    assert meta["artifacts"]["plugin_dump"] == "plugin_db.dump"
    # One time window: the main export, then the plugin export; objects are pinned at the later fence.
    assert meta["fence_window_start"] <= meta["database_fence"] <= plugin["fence"] == meta["fence"]
    assert meta["plugin_storage"] == {"bucket": e.source_bucket, "endpoint": e.env["DRTOOL_S3_ENDPOINT"],
                                      "prefixes": list(PLUGIN_PREFIXES), "pinned": True}
    sums = e.client.get_object(Bucket=e.dest_bucket, Key=folder + "SHA256SUMS")["Body"].read().decode()
    dump = e.client.get_object(Bucket=e.dest_bucket, Key=folder + "plugin_db.dump")["Body"].read()
    assert f"{hashlib.sha256(dump).hexdigest()}  plugin_db.dump" in sums.splitlines()
    assert run.result()["counts"]["pinned"] == len(e.files) - 1 + len(w.objects)
    assert e.run("snapshots", "verify", sid, "--deep").code == 0

    # The disaster: both databases gone, the plugin objects deleted (their versions stay behind delete markers).
    e.pg.drop_database(w.main_db)
    e.pg.drop_database(w.plugin_db)
    for key in w.objects:
        e.client.delete_object(Bucket=e.source_bucket, Key=key)
    dry = e.run("restore", sid, "--target-db", w.main_db, "--dry-run", "--json")
    assert dry.code == 0, dry.stderr
    assert dry.result()["plugin_database"]["action"] == "create and restore"
    assert dry.result()["plugin_database"]["target"].endswith(f"/{w.plugin_db}")  # in place: its own name
    r = e.run("restore", sid, "--target-db", w.main_db, "--json")
    assert r.code == 0, r.stderr
    assert r.result()["database"]["action"] == "create and restore"
    assert r.result()["plugin_database"]["action"] == "create and restore"
    assert table_rows(e.pg.dsn(w.main_db)) == main_before
    assert table_rows(e.pg.dsn(w.plugin_db)) == plugin_before
    for key, body in w.objects.items():
        assert e.client.get_object(Bucket=e.source_bucket, Key=key)["Body"].read() == body, key
    again = e.run("restore", sid, "--target-db", w.main_db)
    assert again.code == 0, again.stderr
    assert "plugin database" in again.stdout and "already restored" in again.stdout


def test_a_non_empty_plugin_target_is_refused_before_anything_changes(plugin_world: PluginWorld,
                                                                     new_database) -> None:
    w, e = plugin_world, plugin_world.e
    run = e.run("snapshot", "create", "--json")
    assert run.code == 0, run.stderr
    sid = run.result()["snapshot"]
    main_target = new_database()
    refused = e.run("restore", sid, "--target-db", main_target, "--target-plugin-db", w.plugin_db, "--no-objects")
    assert refused.code == 2, refused.stdout + refused.stderr
    assert "not empty" in refused.stderr and w.plugin_db in refused.stderr
    with psycopg.connect(e.pg.admin_dsn) as conn:  # the main target was not created either
        assert conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (main_target,)).fetchone() is None
    # Derived name for another target: <target>_plugin; dropped afterwards with the main one.
    ok = e.run("restore", sid, "--target-db", main_target, "--no-objects", "--json")
    assert ok.code == 0, ok.stderr
    derived = f"{main_target}_plugin"
    try:
        assert ok.result()["plugin_database"]["target"].endswith("/" + derived)
        assert table_rows(e.pg.dsn(derived)) == table_rows(e.pg.dsn(w.plugin_db))
    finally:
        e.pg.drop_database(derived)


def test_a_configured_but_missing_plugin_database_writes_nothing(minio_env: SnapshotEnv) -> None:
    e = minio_env
    run = e.run("snapshot", "create", extra_env={"DRTOOL_POSTGRES_PLUGIN_DATABASE": "no_such_plugin_db"})
    assert run.code == 10, run.stdout + run.stderr
    assert "no_such_plugin_db" in run.stderr and "postgres.plugin_database" in run.stderr
    assert e.keys(e.dest_bucket) == []  # not even the lock


def test_plugin_storage_in_another_bucket_is_pinned_as_an_extra_store(minio_env: SnapshotEnv) -> None:
    """No longer a warning: another bucket is the extra store `plugin` (tests/snapshot/test_extra_stores.py)."""
    e = minio_env
    other = new_bucket(e.client)
    e.client.put_object(Bucket=other, Key="plugin/p.difypkg", Body=b"pkg")
    run = e.run("snapshot", "create", "--json", extra_env={"DRTOOL_SNAPSHOT_PLUGIN_STORAGE_BUCKET": other})
    assert run.code == 0 and not run.result()["warnings"], run.stdout + run.stderr
    folder = f"drtool/snapshots/{run.result()['snapshot']}/"
    meta = json.loads(e.client.get_object(Bucket=e.dest_bucket, Key=folder + "meta.json")["Body"].read())
    assert meta["plugin_storage"]["pinned"] is True
    assert [(st["name"], st["bucket"], st["count"]) for st in meta["stores"]] == [("plugin", other, 1)]


def reseal_meta(client: Any, bucket: str, folder: str, edit: Callable[[dict[str, Any]], None]) -> None:
    """Edit an unsigned snapshot's meta.json and reseal SHA256SUMS and COMMITTED, as a writer of the bucket could."""
    meta = json.loads(client.get_object(Bucket=bucket, Key=folder + "meta.json")["Body"].read())
    edit(meta)
    body = json.dumps(meta, indent=1).encode()
    client.put_object(Bucket=bucket, Key=folder + "meta.json", Body=body)
    sums = client.get_object(Bucket=bucket, Key=folder + "SHA256SUMS")["Body"].read().decode()
    lines = [ln for ln in sums.splitlines() if not ln.endswith("  meta.json")]
    lines.append(f"{hashlib.sha256(body).hexdigest()}  meta.json")
    new_sums = "".join(f"{ln}\n" for ln in sorted(lines, key=lambda ln: ln.split("  ", 1)[1])).encode()
    client.put_object(Bucket=bucket, Key=folder + "SHA256SUMS", Body=new_sums)
    committed = json.loads(client.get_object(Bucket=bucket, Key=folder + "COMMITTED")["Body"].read())
    committed["sha256sums"] = hashlib.sha256(new_sums).hexdigest()
    client.put_object(Bucket=bucket, Key=folder + "COMMITTED", Body=json.dumps(committed).encode())


def _rewrite_as_pre_issue_13(e: SnapshotEnv, sid: str) -> None:
    """What a snapshot taken before issue 13 looks like: no plugin keys in meta.json (unsigned, resealed)."""
    def edit(meta: dict[str, Any]) -> None:
        for key in ("plugin_database", "plugin_storage", "database_fence"):
            meta.pop(key)
        meta["artifacts"].pop("plugin_dump", None)

    reseal_meta(e.client, e.dest_bucket, f"drtool/snapshots/{sid}/", edit)


def test_a_snapshot_without_plugin_database_and_an_old_format_one_still_restore(minio_env: SnapshotEnv,
                                                                               new_database) -> None:
    e = minio_env
    run = e.run("snapshot", "create", "--json")
    assert run.code == 0, run.stderr
    sid = run.result()["snapshot"]
    meta = json.loads(e.client.get_object(Bucket=e.dest_bucket, Key=f"drtool/snapshots/{sid}/meta.json")
                      ["Body"].read())
    assert meta["plugin_database"] is None and "plugin_dump" not in meta["artifacts"]
    _rewrite_as_pre_issue_13(e, sid)
    assert e.run("snapshots", "verify", sid, "--deep").code == 0
    target = new_database()
    refused = e.run("restore", sid, "--target-db", target, "--target-plugin-db", "anything", "--no-objects")
    assert refused.code == 2 and "holds no plugin database dump" in refused.stderr, refused.stderr
    r = e.run("restore", sid, "--target-db", target, "--no-objects", "--json",
              extra_env={"DRTOOL_POSTGRES_PLUGIN_DATABASE": "dify_plugin"})  # configured now, absent then: fine
    assert r.code == 0, r.stderr
    assert r.result()["database"]["action"] == "create and restore" and "plugin_database" not in r.result()
    assert table_rows(e.pg.dsn(target)) == table_rows(e.pg.dsn(e.db.dbname))


def test_a_damaged_plugin_dump_fails_verify_and_restore_changes_nothing(plugin_world: PluginWorld,
                                                                        new_database) -> None:
    e = plugin_world.e
    run = e.run("snapshot", "create", "--json")
    assert run.code == 0, run.stderr
    sid = run.result()["snapshot"]
    key = f"drtool/snapshots/{sid}/plugin_db.dump"
    good = e.client.get_object(Bucket=e.dest_bucket, Key=key)["Body"].read()
    e.client.put_object(Bucket=e.dest_bucket, Key=key, Body=good[: len(good) // 2])  # truncated
    verify = e.run("snapshots", "verify", sid)
    assert verify.code == 4 and "plugin_db.dump: checksum mismatch" in verify.stderr, verify.stderr
    target, target_bucket = new_database(), new_bucket(e.client)
    r = e.run("restore", sid, "--target-db", target, "--objects-to", target_bucket)
    assert r.code == 4 and "plugin_db.dump checksum mismatch" in r.stderr, r.stderr
    assert e.keys(target_bucket) == []  # not one object copied
    with psycopg.connect(e.pg.admin_dsn) as conn:
        names = {n for (n,) in conn.execute("SELECT datname FROM pg_database")}
    assert target not in names and f"{target}_plugin" not in names


def test_an_encrypted_snapshot_encrypts_the_plugin_dump_and_restores_it_with_the_identity(
        plugin_world: PluginWorld, new_database, tmp_path: Path) -> None:
    import pyrage

    w, e = plugin_world, plugin_world.e
    identity = pyrage.x25519.Identity.generate()
    key = tmp_path / "key.txt"
    key.write_text(f"{identity}\n")
    run = e.run("snapshot", "create", "--encrypt-to", str(identity.to_public()), "--json")
    assert run.code == 0, run.stderr
    sid = run.result()["snapshot"]
    folder = f"drtool/snapshots/{sid}/"
    assert folder + "plugin_db.dump.age" in e.keys(e.dest_bucket, folder)
    assert folder + "plugin_db.dump" not in e.keys(e.dest_bucket, folder)
    stored = e.client.get_object(Bucket=e.dest_bucket, Key=folder + "plugin_db.dump.age")["Body"].read()
    assert stored.startswith(b"age-encryption.org/v1") and b"plugins" not in stored
    assert e.run("snapshots", "verify", sid, "--deep", "--identity", str(key)).code == 0
    target, plugin_target = new_database(), new_database()
    r = e.run("restore", sid, "--target-db", target, "--target-plugin-db", plugin_target, "--no-objects",
              "--identity", str(key), "--json")
    assert r.code == 0, r.stderr
    assert table_rows(e.pg.dsn(plugin_target)) == table_rows(e.pg.dsn(w.plugin_db))
