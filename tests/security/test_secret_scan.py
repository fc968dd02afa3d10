"""Every drtool command, run with known and distinctive secrets, in success and failure modes: no secret may appear
in stdout, stderr (logs, JSON events, tracebacks with -vv), metrics files, or any object drtool wrote to a bucket
(meta.json, manifests, checksums, ledgers, chunk files, decrypted artifacts), raw, URL-encoded or base64."""

from __future__ import annotations

import gzip
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
import zstandard
from psycopg import sql

from tests.security.conftest import ProcessRun, add_minio_user, find_leaks, leak_forms, new_bucket, run_module
from tests.snapshot.conftest import fill_source
from tests.stack.dify_db import DifyDatabase
from tests.stack.embedding_server import EmbeddingServer
from tests.stack.minio_sites import MinioSites
from tests.stack.pg_server import PostgresServer
from tests.stack.ports import free_port

# Distinctive values with URL metacharacters, so an unescaped or escaped echo is both found.
S3_SECRET = "S3sec+Kq9/Zm4vLw2Xy7Rt5Pn3"
S3_WRONG = "S3bad+Bq8/Jh3uKe1Wz6Qs4Vd7"
PG_PASSWORD = "PGpw/Secr3t+Lq8@Zx#9"
PG_WRONG = "PGbad/Tq4@Vx#2+Mn7"
EMBED_WRONG = "sk-WRONGembedKey-Zq93LmX0"
REDIS_PASSWORD = "RDpw/Hy6+Fz2@Kc8"
WEAVIATE_KEY = "wv-secretKey-Nm5Rs8Tq2Wx"
# Forms only patterns and registration catch: a key in a URL's query, raw (unencoded) passwords with '/', '@' and
# '#' inside URLs, and the credentials of replication sites written into replication.sites.
EMBED_QUERY_KEY = "azQueryKey-Hv7Lp2Rt9Wd4"
PG_RAW_WRONG = "PGraw/Wq5@Lz#8+Tn3"
REDIS_RAW_PASSWORD = "RDraw/Gk4@Mz7#Pq1"
SITE_KEY = "SiteAK-Bq7Xr2Lm9"
SITE_SECRET = "SiteSK/Jw4@Nd8#Fz6"
REPL_SECRET = "ReplSK-Tq3Vz8Hk5Yw"


@pytest.fixture
def pg_role(pg: PostgresServer, dify_db: DifyDatabase) -> Iterator[str]:
    """A login role whose password is PG_PASSWORD (superuser: snapshot, restore and create database)."""
    role = f"sec_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg.admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(PG_PASSWORD)))
    yield role
    with psycopg.connect(pg.admin_dsn, autocommit=True) as conn:
        for (name,) in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'secrestore_%'").fetchall():
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("REASSIGN OWNED BY {} TO {}").format(sql.Identifier(role), sql.Identifier(pg.user)))
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


OWN_BUCKET_PREFIXES = ("secsrc", "secdst", "secrst")


def _objects(client: Any, identity: Any, since: datetime) -> Iterator[tuple[str, bytes]]:
    """(where, bytes) of every object version written since `since` in every bucket, decrypted and decompressed
    where drtool packed it. Older versions are other tests' (the shared pair holds thousands by then): reading
    them all took minutes of CI and could not hold anything this test's runs wrote."""
    import pyrage

    for bucket in client.list_buckets()["Buckets"]:
        name = bucket["Name"]
        for page in client.get_paginator("list_object_versions").paginate(Bucket=name):
            for v in page.get("Versions", []):
                if v["LastModified"] < since:
                    continue
                body = client.get_object(Bucket=name, Key=v["Key"], VersionId=v["VersionId"])["Body"].read()
                where = f"s3://{name}/{v['Key']}"
                yield where, body
                key = v["Key"]
                if key.endswith(".age"):
                    try:
                        body = pyrage.decrypt(body, [identity])
                    except pyrage.DecryptError:  # another test's snapshot, encrypted to its own key
                        continue
                    key = key[:-4]
                    yield where + " (decrypted)", body
                try:
                    if key.endswith(".zst"):
                        yield where + " (decompressed)", zstandard.ZstdDecompressor().stream_reader(body).read()
                    elif key.endswith(".gz"):
                        yield where + " (decompressed)", gzip.decompress(body)
                except (EOFError, OSError, zstandard.ZstdError):
                    # Other tests leave deliberately damaged chunk files (their raw bytes were scanned above);
                    # a damaged file in one of this test's buckets is drtool's doing.
                    assert not name.startswith(OWN_BUCKET_PREFIXES), f"{where}: drtool wrote a damaged compressed file"


def test_no_secret_in_any_output_or_artifact(minio_pair: MinioSites, pg: PostgresServer, dify_db: DifyDatabase,
                                             pg_role: str, embedding_server: EmbeddingServer, redis_url: str,
                                             weaviate_server: Any, milvus_uri: str, tmp_path: Path) -> None:
    import pyrage

    started = datetime.now(UTC) - timedelta(seconds=5)  # MinIO runs on this host: the same clock, a little slack
    identity, wrong_identity = pyrage.x25519.Identity.generate(), pyrage.x25519.Identity.generate()
    secrets = {
        "s3.secret_key": S3_SECRET, "wrong s3.secret_key": S3_WRONG, "postgres.password": PG_PASSWORD,
        "wrong postgres.password": PG_WRONG, "embedding.api_key": embedding_server.api_key,
        "wrong embedding.api_key": EMBED_WRONG, "redis password": REDIS_PASSWORD, "weaviate.api_key": WEAVIATE_KEY,
        "age identity": str(identity), "wrong age identity": str(wrong_identity),
        "embedding URL query key": EMBED_QUERY_KEY, "raw postgres DSN password": PG_RAW_WRONG,
        "raw redis URL password": REDIS_RAW_PASSWORD, "site access key": SITE_KEY, "site secret": SITE_SECRET,
        "replication.secret_key": REPL_SECRET,
    }
    inputs = tmp_path / "inputs"  # files that hold secrets on purpose: never scanned
    inputs.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    (inputs / "key.txt").write_text(f"{identity}\n")
    (inputs / "wrong.txt").write_text(f"{wrong_identity}\n")

    site = minio_pair.a
    user, _ = add_minio_user(minio_pair, builtin="consoleAdmin", secret=S3_SECRET)
    client = site.s3_client()
    source, dest = new_bucket(client, "secsrc"), new_bucket(client, "secdst")
    fill_source(client, source, dify_db)
    closed = free_port()
    env = {
        "DRTOOL_S3_ENDPOINT": site.endpoint, "DRTOOL_S3_ACCESS_KEY": user, "DRTOOL_S3_SECRET_KEY": S3_SECRET,
        "DRTOOL_S3_BUCKET": source, "DRTOOL_S3_ADDRESS_STYLE": "path", "DRTOOL_SNAPSHOT_BUCKET": dest,
        "DRTOOL_SNAPSHOT_PG_BIN_DIR": str(pg.bin_dir), "DRTOOL_POSTGRES_HOST": pg.host,
        "DRTOOL_POSTGRES_PORT": str(pg.port), "DRTOOL_POSTGRES_USER": pg_role,
        "DRTOOL_POSTGRES_PASSWORD": PG_PASSWORD, "DRTOOL_POSTGRES_DATABASE": dify_db.dbname,
        "DRTOOL_POSTGRES_SSLMODE": "disable", "DRTOOL_VECTOR_STORE": "milvus", "DRTOOL_MILVUS_URI": milvus_uri,
        "DRTOOL_EMBEDDING_PROVIDER": "openai", "DRTOOL_EMBEDDING_BASE_URL": embedding_server.base_url,
        "DRTOOL_EMBEDDING_API_KEY": embedding_server.api_key, "DRTOOL_EMBEDDING_MODEL": embedding_server.model_name,
        "DRTOOL_EMBEDDING_DIMENSIONS": str(embedding_server.dimensions), "DRTOOL_EMBEDDING_BATCH_SIZE": "32",
        "DRTOOL_REBUILD_SAMPLE": "10", "DRTOOL_REPLICATION_SITES": f"A={site.endpoint},B={minio_pair.b.endpoint}",
        "DRTOOL_REPLICATION_SETTLE_SECONDS": "0",
        # Retries are not under test here: one try keeps the unreachable cases quick.
        "DRTOOL_S3_MAX_ATTEMPTS": "1", "DRTOOL_EMBEDDING_MAX_ATTEMPTS": "1", "DRTOOL_POSTGRES_CONNECT_TIMEOUT": "5",
    }
    runs: list[tuple[ProcessRun, set[int]]] = []

    def run(*args: str, expect: set[int], label: str = "", **overrides: str) -> ProcessRun:
        result = run_module(*args, env=dict(env, **overrides), cwd=work, label=label, timeout=400)
        runs.append((result, expect))
        return result

    key, wrong = str(inputs / "key.txt"), str(inputs / "wrong.txt")
    redis_with_password = redis_url.replace("redis://", f"redis://:{quote(REDIS_PASSWORD, safe='')}@")

    # --- success modes ---------------------------------------------------------------------------------------
    run("config", "show", expect={0})
    run("config", "show", "--json", "-vv", expect={0})
    run("export-chunks", "--all", "--json", "-vv", "--metrics-file", str(work / "export.prom"), expect={0})
    run("snapshot", "create", "--encrypt-to", str(identity.to_public()), "--json", "-vv",
        "--metrics-file", str(work / "snapshot.prom"), expect={0})
    run("snapshots", "list", "--json", "-vv", expect={0})
    run("snapshots", "verify", "--latest", "--deep", "--identity", key, "-vv", expect={0})
    run("snapshots", "prune", "--dry-run", "--json", "-vv", expect={0})
    run("snapshots", "gc", "--dry-run", "-vv", expect={0})
    run("snapshots", "unlock", "-vv", expect={0, 10})
    run("restore", "latest", "--target-db", f"secrestore_{uuid.uuid4().hex[:6]}", "--objects-to",
        new_bucket(client, "secrst"), "--identity", key, "--json", "-vv", expect={0})
    # Refused and unreachable embedders first, while no vector is cached yet and every chunk needs a call.
    # (--force from the second run on: a refused run leaves a checkpoint that a plain run would refuse to ignore)
    for flags in ((), ("--force", "-vv", "--json")):
        run("rebuild-index", "--all", *flags, expect={12}, label="rebuild wrong embedding key",
            DRTOOL_EMBEDDING_API_KEY=EMBED_WRONG)
    run("rebuild-index", "--all", "--force", "-vv", expect={1}, label="rebuild embedder unreachable",
        DRTOOL_EMBEDDING_BASE_URL=f"http://127.0.0.1:{closed}/v1")
    for flags in (("-vv",), ("--json", "-vv")):  # Azure-style key in the query: the requests fail, the URL is shown
        run("rebuild-index", "--all", "--force", *flags, expect={1, 2, 3, 4, 12}, label="rebuild query-key URL",
            DRTOOL_EMBEDDING_BASE_URL=f"{embedding_server.base_url}?api-key={EMBED_QUERY_KEY}")
        run("rebuild-index", "--all", "--force", *flags, expect={1}, label="rebuild query-key URL unreachable",
            DRTOOL_EMBEDDING_BASE_URL=f"http://127.0.0.1:{closed}/v1?api-key={EMBED_QUERY_KEY}")
    run("rebuild-index", "--all", "--force", "--json", "-vv", expect={0})
    run("config", "check", "-vv", expect={0, 3})  # after the first rebuild: the Milvus Lite file exists now
    run("verify", "--json", "-vv", "--metrics-file", str(work / "verify.prom"), expect={0})
    run("verify", "--snapshot", "latest", "--identity", key, "--skip-vectors", "-vv", expect={0})
    run("drill", "--identity", key, "--report-dir", str(work / "drills"), "--json", "-vv",
        "--metrics-file", str(work / "drill.prom"), expect={0})
    run("drill", "history", "--json", "-vv", expect={0})
    run("replication", "status", "--json", "-vv", "--metrics-file", str(work / "replication.prom"),
        expect={0, 3, 4})
    run("replication", "verify", "--bucket", source, "--json", "-vv", expect={0, 3, 4})
    run("replication", "probe", "--bucket", source, "--timeout", "60", "--json", "-vv", expect={0, 3})

    # --- the same secrets from drtool.toml and from a Dify .env ------------------------------------------------
    (inputs / "drtool.toml").write_text(
        f'[s3]\nsecret_key = "{S3_SECRET}"\n[postgres]\npassword = "{PG_PASSWORD}"\n'
        f'[embedding]\napi_key = "{embedding_server.api_key}"\n[weaviate]\napi_key = "{WEAVIATE_KEY}"\n'
        f'[redis]\nurl = "{redis_with_password}"\n')
    bare = {k: "" for k in ("DRTOOL_S3_SECRET_KEY", "DRTOOL_POSTGRES_PASSWORD", "DRTOOL_EMBEDDING_API_KEY")}
    run("config", "show", "--config", str(inputs / "drtool.toml"), "--json", expect={0}, **bare)
    (inputs / "dify.env").write_text(
        f"STORAGE_TYPE=s3\nS3_ENDPOINT={site.endpoint}\nS3_BUCKET_NAME={source}\nS3_ACCESS_KEY={user}\n"
        f"S3_SECRET_KEY={S3_SECRET}\nDB_USERNAME={pg_role}\nDB_PASSWORD={PG_PASSWORD}\nDB_HOST={pg.host}\n"
        f"DB_PORT={pg.port}\nREDIS_PASSWORD={REDIS_PASSWORD}\nWEAVIATE_API_KEY={WEAVIATE_KEY}\n"
        f"VECTOR_STORE=weaviate\nWEAVIATE_ENDPOINT={weaviate_server.http_url}\n")
    run("config", "show", "--dify-env", str(inputs / "dify.env"), expect={0}, **bare)
    run("config", "check", "--dify-env", str(inputs / "dify.env"), "--json", "-vv", expect={0, 1, 3, 4, 12}, **bare)

    # --- failure modes: refused credentials, unreachable systems, in human, -vv and --json output --------------
    # Two lanes run side by side (a minute less of CI): the first lane's runs can neither take nor meet a lock (a
    # refused S3 key fails on its first request; status, check and show take none); the second keeps its order.
    lockless: list[Callable[[], ProcessRun]] = []
    ordered: list[Callable[[], ProcessRun]] = []

    def later(lane: list[Callable[[], ProcessRun]], *args: str, expect: set[int], label: str = "",
              **overrides: str) -> None:
        lane.append(lambda: run(*args, expect=expect, label=label, **overrides))

    for flags in ((), ("-vv", "--json")):
        later(lockless, "snapshot", "create", *flags, expect={12}, label="snapshot wrong s3 key",
              DRTOOL_S3_SECRET_KEY=S3_WRONG)
        later(ordered, "snapshot", "create", *flags, expect={12}, label="snapshot wrong pg password",
              DRTOOL_POSTGRES_PASSWORD=PG_WRONG)
    later(lockless, "config", "check", "--json", "-vv", expect={1, 3, 4, 12}, label="check wrong everything",
          DRTOOL_S3_SECRET_KEY=S3_WRONG, DRTOOL_POSTGRES_PASSWORD=PG_WRONG, DRTOOL_EMBEDDING_API_KEY=EMBED_WRONG,
          DRTOOL_REDIS_URL=redis_with_password, DRTOOL_WEAVIATE_API_KEY=WEAVIATE_KEY,
          DRTOOL_WEAVIATE_ENDPOINT=weaviate_server.http_url)
    later(lockless, "config", "check", "-vv", expect={0, 1, 3, 4, 12}, label="check redis password",
          DRTOOL_REDIS_URL=redis_with_password)
    later(lockless, "config", "show", "--json", "-vv", expect={0}, label="show query key and raw passwords",
          DRTOOL_EMBEDDING_BASE_URL=f"{embedding_server.base_url}?api-key={EMBED_QUERY_KEY}",
          DRTOOL_REDIS_URL=f"redis://:{REDIS_RAW_PASSWORD}@127.0.0.1:{closed}/0",
          DRTOOL_REPLICATION_SITES=f"A=http://{SITE_KEY}:{SITE_SECRET}@127.0.0.1:{closed}")
    later(lockless, "config", "check", "-vv", expect={0, 1, 2, 3, 4, 12}, label="check raw redis password",
          DRTOOL_REDIS_URL=f"redis://:{REDIS_RAW_PASSWORD}@127.0.0.1:{closed}/0")
    raw_dsn = f"postgresql://{pg_role}:{PG_RAW_WRONG}@{pg.host}:{pg.port}/secrestore_raw"
    for flags in (("-vv",), ("--json", "-vv")):
        later(ordered, "restore", "latest", "--target-db", raw_dsn, "--no-objects", "--identity", key, *flags,
              expect={1, 2, 12}, label="restore raw DSN password")
        later(lockless, "replication", "status", *flags, expect={0, 1, 2, 3, 4, 12},
              label="status sites with credentials",
              DRTOOL_REPLICATION_SITES=f"A=http://{SITE_KEY}:{SITE_SECRET}@{site.endpoint.split('://', 1)[1]},"
                                       f"GONE=http://{SITE_KEY}:{SITE_SECRET}@127.0.0.1:{closed}",
              DRTOOL_REPLICATION_SECRET_KEY=REPL_SECRET)
        later(lockless, "replication", "status", *flags, expect={0, 1, 2, 3, 4, 12},
              label="status wrong replication key",
              DRTOOL_REPLICATION_ACCESS_KEY=SITE_KEY, DRTOOL_REPLICATION_SECRET_KEY=REPL_SECRET)
    later(lockless, "snapshots", "list", "-vv", expect={12}, DRTOOL_S3_SECRET_KEY=S3_WRONG)
    later(lockless, "snapshots", "verify", "--latest", "--json", expect={12}, DRTOOL_S3_SECRET_KEY=S3_WRONG)
    later(lockless, "snapshots", "prune", "-vv", expect={12}, DRTOOL_S3_SECRET_KEY=S3_WRONG)
    later(lockless, "snapshots", "gc", "--json", expect={12}, DRTOOL_S3_SECRET_KEY=S3_WRONG)
    later(lockless, "snapshots", "unlock", "-vv", expect={12}, DRTOOL_S3_SECRET_KEY=S3_WRONG)
    later(ordered, "restore", "latest", "--target-db", f"secrestore_{uuid.uuid4().hex[:6]}", "--no-objects",
          "--identity", wrong, "-vv", expect={12}, label="restore wrong identity")
    later(ordered, "restore", "latest", "--target-db", f"secrestore_{uuid.uuid4().hex[:6]}", "--no-objects",
          "--json", expect={2}, label="restore no identity")
    dsn = f"postgresql://{pg_role}:{quote(PG_WRONG, safe='')}@{pg.host}:{pg.port}/secrestore_dsn"
    later(ordered, "restore", "latest", "--target-db", dsn, "--no-objects", "--identity", key, "-vv", expect={12},
          label="restore DSN with wrong password")
    later(ordered, "drill", "--identity", key, "--report-dir", str(work / "drills"), "-vv", expect={12},
          DRTOOL_POSTGRES_PASSWORD=PG_WRONG)
    later(ordered, "drill", "--identity", wrong, "--report-dir", str(work / "drills"), "--json", expect={4, 12})
    later(ordered, "export-chunks", "--all", "-vv", expect={12}, DRTOOL_POSTGRES_PASSWORD=PG_WRONG)
    later(lockless, "export-chunks", "--all", "--json", expect={12}, DRTOOL_S3_SECRET_KEY=S3_WRONG)
    later(ordered, "verify", "--json", "-vv", expect={12}, DRTOOL_POSTGRES_PASSWORD=PG_WRONG)
    later(lockless, "verify", "-vv", expect={12}, DRTOOL_S3_SECRET_KEY=S3_WRONG)
    later(lockless, "replication", "status", "-vv", expect={12}, DRTOOL_S3_SECRET_KEY=S3_WRONG)
    later(lockless, "replication", "verify", "--bucket", source, "--json", expect={12},
          DRTOOL_S3_SECRET_KEY=S3_WRONG)
    later(lockless, "replication", "probe", "--bucket", source, "-vv", expect={12}, DRTOOL_S3_SECRET_KEY=S3_WRONG)
    later(ordered, "snapshot", "create", "-vv", expect={1}, label="snapshot pg unreachable",
          DRTOOL_POSTGRES_PORT=str(closed))
    later(lockless, "snapshots", "list", "--json", "-vv", expect={1}, label="list s3 unreachable",
          DRTOOL_S3_ENDPOINT=f"http://127.0.0.1:{closed}")
    later(lockless, "replication", "status", "--json", "-vv", expect={4}, label="status site unreachable",
          DRTOOL_REPLICATION_SITES=f"A={site.endpoint},GONE=http://127.0.0.1:{closed}")
    with ThreadPoolExecutor(max_workers=2) as pool:
        for lane in [pool.submit(lambda steps=steps: [step() for step in steps]) for steps in (lockless, ordered)]:
            lane.result()

    # --- the scan ------------------------------------------------------------------------------------------
    leaks: list[str] = []
    for result, _ in runs:
        leaks += find_leaks(secrets, result.stdout, f"stdout of {result.label} {result.args}")
        leaks += find_leaks(secrets, result.stderr, f"stderr of {result.label} {result.args}")
    scanned_files = 0
    for path in sorted(tmp_path.rglob("*")):
        if path.is_file() and inputs not in path.parents:
            leaks += find_leaks(secrets, path.read_bytes(), str(path))
            scanned_files += 1
    scanned_objects = 0
    for where, body in _objects(client, identity, started):
        leaks += find_leaks(secrets, body, where)
        scanned_objects += 1

    print(f"secret scan: {len(runs)} runs, {len(secrets)} secrets x {len(leak_forms(S3_SECRET))} forms, "
          f"{scanned_files} local files, {scanned_objects} objects, {len(leaks)} leaks")
    slowest = sorted(runs, key=lambda pair: -pair[0].seconds)[:8]
    print("slowest runs:", [(r.label, r.args[:3], round(r.seconds, 1)) for r, _ in slowest])
    wrong_codes = [f"{r.label} {r.args}: exit {r.code}, expected {sorted(e)}\n{r.stderr[-600:]}{r.stdout[-300:]}"
                   for r, e in runs if r.code not in e]
    assert not leaks, "\n".join(leaks)
    assert not wrong_codes, "\n\n".join(wrong_codes)
    # The scan saw real work: metrics files, the snapshot's artifacts, chunk files and the rebuild ledger.
    assert scanned_files >= 4 and scanned_objects >= 20, (scanned_files, scanned_objects)
    assert len(runs) >= 45
