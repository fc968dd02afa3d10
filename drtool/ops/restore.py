"""`drtool restore`: a snapshot's pinned object versions made current in a bucket, then its dump restored.

Everything that can refuse the database restore is checked before the first object is copied: the target's
version and emptiness (--yes), the pg_restore binary, and the dump itself (downloaded, decrypted, its checksum and
`pg_restore --list` checked), so a corrupt dump or a missing --yes leaves the bucket untouched too.
Objects then go first: they are additive (a server-side copy makes the pinned version the newest one, older versions
stay), so when the database restore later fails nothing points at a missing file. The database restore runs in a
single transaction, so a failure leaves the target as it was. Both steps skip what is already in place, which
makes a second run change nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from drtool.adapters import postgres as pga
from drtool.adapters import s3 as s3a
from drtool.config import PostgresSettings, Settings
from drtool.core import manifest as mf
from drtool.core.events import Emit, no_events
from drtool.errors import ConfigError, UnavailableError, UsageError, VerificationFailed
from drtool.ops import restore_stores, snapshot_databases
from drtool.ops.lock import destination_lock
from drtool.ops.snapshot import Destination
from drtool.ops.snapshot_auth import authenticate
from drtool.ops.snapshot_catalog import (
    DecryptingReader,
    SnapshotInfo,
    bounded_map,
    confinement_problems,
    expected_sums,
    local_records,
    open_artifact,
    plaintext,
    resolve,
    spool_verified,
)
from drtool.redact import register_secret

log = logging.getLogger("drtool.restore")
MARKER_META = "drtool-version"  # user metadata on restored copies: the version they restore


@dataclass
class Target:
    pg: PostgresSettings
    dbname: str

    @property
    def label(self) -> str:
        return f"{self.pg.host}:{self.pg.port}/{self.dbname}"


def parse_target(settings: Settings, text: str) -> Target:
    """A DSN (URL or key=value) or a bare database name on the configured server; the password may come from
    postgres.password or PGPASSWORD so it need not be typed on the command line."""
    import dataclasses
    import os

    if "=" not in text and "://" not in text:
        params: dict[str, Any] = {"dbname": text}
    else:
        try:
            params = conninfo_to_dict(text)
        except psycopg.ProgrammingError as exc:
            raise UsageError(f"--target-db is not a valid DSN: {str(exc).splitlines()[0]}") from None
    if not params.get("dbname"):
        raise UsageError("--target-db names no database", hint="e.g. postgresql://user@host:5432/dify_restore")
    base = settings.postgres
    password = params.get("password") or base.password or os.environ.get("PGPASSWORD")
    register_secret(password)
    pg = dataclasses.replace(base, host=params.get("host") or base.host, port=int(params.get("port") or base.port),
                             user=params.get("user") or base.user, password=password,
                             database=str(params["dbname"]), sslmode=params.get("sslmode") or base.sslmode)
    return Target(pg=pg, dbname=str(params["dbname"]))


def plugin_target(settings: Settings, text: str) -> Target:
    """--target-plugin-db (or the derived name): a bare name is on the plugin database's server
    (postgres.plugin_host/plugin_user, default the main one)."""
    return parse_target(snapshot_databases.plugin_settings(settings), text)


@dataclass
class RestoreResult:
    snapshot_id: str
    dry_run: bool
    verify_only: bool
    database: dict[str, Any] = field(default_factory=dict)
    objects: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    authentication: dict[str, Any] = field(default_factory=dict)  # authenticated, signed_by, digest
    plugin_database: dict[str, Any] = field(default_factory=dict)  # issue 13: the plugin daemon's database
    stores: list[dict[str, Any]] = field(default_factory=list)  # issue 13: extra stores restored with --stores

    def to_dict(self) -> dict[str, Any]:
        return {"snapshot": self.snapshot_id, "dry_run": self.dry_run, "verify_only": self.verify_only,
                **self.authentication, "database": self.database, "objects": self.objects,
                **({"plugin_database": self.plugin_database} if self.plugin_database else {}),
                **({"stores": self.stores} if self.stores else {}),
                "problems": self.problems[:100]}


def restore(settings: Settings, dest: Destination, ref: str, *, target_db: str | None, objects_to: str | None,
            dry_run: bool, yes: bool, verify_only: bool, identities: list[Any] | None, no_owner: bool,
            skip_objects: bool = False, emit: Emit = no_events, break_stale_lock: bool = False,
            expect_digest: str | None = None, target_plugin_db: str | None = None,
            stores: bool = False) -> RestoreResult:
    info = resolve(dest, ref)
    # Before anything else: a snapshot a trusted key did not sign (or not the pinned digest) is refused, exit 4.
    auth = authenticate(settings, dest, info, expect_digest=expect_digest)
    if info.meta.get("_corrupt"):
        raise VerificationFailed(f"snapshot {info.id}: meta.json is unreadable", hint="restore another snapshot")
    if info.encrypted and not identities:
        raise UsageError(f"snapshot {info.id} is encrypted", hint="pass --identity KEYFILE")
    result = RestoreResult(snapshot_id=info.id, dry_run=dry_run, verify_only=verify_only,
                           authentication=auth.to_dict())
    emit({"event": "restore.started", "snapshot": info.id, "fence": info.meta.get("fence")})
    sums = expected_sums(dest, info)
    meta_bytes = s3a.get_bytes(dest.client, dest.bucket, dest.folder(info.id) + mf.META)
    if hashlib.sha256(meta_bytes).hexdigest() != sums.get(mf.META):
        raise VerificationFailed(f"snapshot {info.id}: meta.json checksum mismatch",
                                 hint="run `drtool snapshots verify`; restore another snapshot")
    # Issue 13: the plugin daemon's database goes with the main one (--target-plugin-db, or derived from
    # --target-db); a snapshot taken without it restores as before.
    plugin_db = None if verify_only else snapshot_databases.plugin_target_name(info.meta, target_db,
                                                                                target_plugin_db)
    if plugin_db and not info.meta.get("artifacts", {}).get("plugin_dump"):  # never fall back to the main dump
        raise VerificationFailed(f"snapshot {info.id}: meta.json records a plugin database but no plugin dump",
                                 hint="run `drtool snapshots verify`; restore another snapshot")
    if plugin_db and target_db and plugin_target(settings, plugin_db).label == parse_target(settings, target_db).label:
        raise UsageError("--target-plugin-db is the same database as --target-db",
                         hint="the plugin daemon's database needs its own, e.g. dify_plugin")
    # Issue 13: --stores brings the extra stores (plugin storage elsewhere, archive storage) back in place.
    store_plans = restore_stores.plan(settings, info, enabled=stores)
    with _target_locks(settings, dest, info, objects_to=objects_to, skip_objects=skip_objects, target_db=target_db,
                       enabled=not (dry_run or verify_only), break_stale=break_stale_lock, emit=emit,
                       plugin_db=plugin_db, store_buckets=restore_stores.lock_targets(store_plans)):
        _restore_locked(settings, dest, info, sums, result, target_db=target_db, objects_to=objects_to,
                        dry_run=dry_run, yes=yes, verify_only=verify_only, identities=identities, no_owner=no_owner,
                        skip_objects=skip_objects, emit=emit, plugin_db=plugin_db, store_plans=store_plans)
    if verify_only and result.problems:
        raise VerificationFailed(
            f"{len(result.problems)} object(s) in the target differ from snapshot {info.id}: "
            + "; ".join(result.problems[:10]), hint="run `drtool restore` without --verify-only to fix them")
    return result


def _lock_name(kind: str, target: str) -> str:
    """A readable, bounded lock object name for a target, unique by hash."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", target)[:60]
    return f"restore-{kind}-{slug}-{hashlib.sha256(target.encode()).hexdigest()[:10]}.lock"


def _target_locks(settings: Settings, dest: Destination, info: SnapshotInfo, *, objects_to: str | None,
                  skip_objects: bool, target_db: str | None, enabled: bool, break_stale: bool,
                  emit: Emit, plugin_db: str | None = None,
                  store_buckets: list[str] | None = None) -> contextlib.ExitStack:
    """One restore per target bucket and per target database: a second one exits 11 instead of copying and
    pg_restoring into the same place at once. The locks live next to the snapshots' own lock."""
    stack = contextlib.ExitStack()
    if not enabled:
        return stack
    names: list[str] = []
    if not skip_objects:
        bucket = objects_to or settings.s3.bucket or info.meta.get("source", {}).get("bucket") or ""
        names.append(_lock_name("bucket", f"{settings.s3.endpoint or 'aws'}/{bucket}"))
    if target_db:
        names.append(_lock_name("db", parse_target(settings, target_db).label))
    if plugin_db:
        names.append(_lock_name("db", plugin_target(settings, plugin_db).label))
    names += [_lock_name("bucket", target) for target in store_buckets or ()]
    try:
        for name in sorted(set(names)):
            stack.enter_context(destination_lock(dest.client, dest.bucket, dest.key("locks", name),
                                                 holder="restore", stale_after_s=settings.snapshot.lock_stale_after,
                                                 break_stale=break_stale, emit=emit))
    except BaseException:
        stack.close()
        raise
    return stack


def _restore_locked(settings: Settings, dest: Destination, info: SnapshotInfo, sums: dict[str, str],
                    result: RestoreResult, *, target_db: str | None, objects_to: str | None, dry_run: bool, yes: bool,
                    verify_only: bool, identities: list[Any] | None, no_owner: bool, skip_objects: bool,
                    emit: Emit, plugin_db: str | None = None,
                    store_plans: list[restore_stores.StorePlan] | None = None) -> None:
    with contextlib.ExitStack() as stack:
        prepared = prepared_plugin = None
        if target_db and not verify_only:
            prepared = _prepare_database(settings, dest, info, sums, parse_target(settings, target_db),
                                         dry_run=dry_run, yes=yes, identities=identities, result=result,
                                         stack=stack)
        if plugin_db:  # checked like the main one, before the first object is copied
            prepared_plugin = _prepare_database(
                settings, dest, info, sums, plugin_target(settings, plugin_db), dry_run=dry_run, yes=yes,
                identities=identities, result=result, stack=stack,
                db_meta=info.meta.get(snapshot_databases.PLUGIN_META),
                dump_name=info.meta.get("artifacts", {}).get("plugin_dump"), slot="plugin_database")
        # Every store manifest checked (checksum, confinement) before the first object of any bucket is copied.
        restore_stores.prepare(dest, info, sums, store_plans or [], identities, stack)
        if not skip_objects:
            _restore_objects(settings, dest, info, sums, objects_to, dry_run=dry_run, verify_only=verify_only,
                             identities=identities, result=result, emit=emit)
            emit({"event": "restore.objects", **result.objects})
        if store_plans:
            result.stores = restore_stores.apply(settings, info, store_plans, dry_run=dry_run,
                                                 verify_only=verify_only, identities=identities,
                                                 problems=result.problems)
        if target_db and not verify_only:
            if prepared is not None:
                _apply_database(prepared, info, no_owner=no_owner, result=result)
            emit({"event": "restore.database", **result.database})
        if prepared_plugin is not None:
            _apply_database(prepared_plugin, info, no_owner=no_owner, result=result)


# --- objects -----------------------------------------------------------------------------------------------------

def _restore_objects(settings: Settings, dest: Destination, info: SnapshotInfo, sums: dict[str, str],
                     objects_to: str | None, *, dry_run: bool, verify_only: bool, identities: list[Any] | None,
                     result: RestoreResult, emit: Emit = no_events) -> None:
    """Copy every pinned version back (or check it, or count what would be copied). `emit` hears a `progress`
    event per object handled, against the snapshot's pinned count, for the progress display
    (drtool/cli/progress.py)."""
    source = info.meta.get("source", {})
    src_bucket = source.get("bucket") or settings.s3.bucket
    target_bucket = objects_to or settings.s3.bucket or src_bucket
    client = s3a.make_client(settings.s3)
    s3a.BucketStore.over(client, target_bucket).require_bucket(
        f"target bucket {target_bucket}",
        hint="create it (with versioning enabled) or pass --objects-to an existing bucket")
    counts = {"pinned": 0, "copied": 0, "already_current": 0, "to_copy": 0, "differ": 0, "skipped_dangling": 0,
              "missing_source": 0}

    folder, key_prefix = dest.folder(info.id), str(source.get("key_prefix") or "")

    def one(rec: mf.ManifestRecord) -> tuple[str, str | None]:
        # Every record was checked before the first copy; checked again here as the copy's own precondition.
        problem = mf.confinement_problem(rec, snapshot_folder=folder, key_prefix=key_prefix)
        if problem:
            return "refused", problem
        head = s3a.head_or_none(client, target_bucket, rec.key)
        if head is not None and is_current(head, rec, same_bucket=target_bucket == src_bucket):
            return "already_current", None
        if verify_only:
            return "differ", f"object {rec.key}: not at version {rec.version_id}"
        if dry_run:
            return "to_copy", None
        copy_client, copy_source = client, {"Bucket": src_bucket, "Key": rec.key, "VersionId": rec.version_id}
        if rec.copy_key:
            copy_client = client
            copy_source = {"Bucket": dest.bucket, "Key": rec.copy_key}
        src_head = s3a.head_or_none(copy_client, copy_source["Bucket"], copy_source["Key"],
                                    version_id=copy_source.get("VersionId"))
        if src_head is None:
            return "missing_source", f"object {rec.key}: pinned version {rec.version_id} no longer exists"
        metadata = dict(src_head.get("Metadata") or {})
        metadata[MARKER_META] = rec.version_id or ""
        extra = {"Metadata": metadata, "MetadataDirective": "REPLACE",
                 "ContentType": src_head.get("ContentType") or "application/octet-stream"}
        client.copy(copy_source, target_bucket, rec.key, ExtraArgs=extra)
        return "copied", None

    # A tampered manifest must not change the target at all: it is downloaded once, its checksum checked and every
    # record checked for confinement before the first copy, and the copy pass reads that same verified copy.
    manifest_name = info.meta.get("artifacts", {}).get("manifest", mf.MANIFEST)
    with spool_verified(dest, info, manifest_name, sums.get(manifest_name)) as local:
        _check_confinement(dest, info, local_records(local, info, identities))

        def pinned() -> Iterator[mf.ManifestRecord]:
            for r in local_records(local, info, identities):
                if r.state == mf.STATE_PINNED:
                    yield r
                elif r.state == mf.STATE_DANGLING:
                    counts["skipped_dangling"] += 1

        try:
            total = (info.meta.get("counts") or {}).get("pinned")
            for outcome, problem in bounded_map(one, pinned(), settings.snapshot.workers):
                counts["pinned"] += 1
                counts[outcome] = counts.get(outcome, 0) + 1
                emit({"event": "progress", "task": "restore objects", "unit": "objects", "done": counts["pinned"],
                      "total": total if isinstance(total, int) else None,
                      "also": {"copied": counts["copied"], "already current": counts["already_current"]}})
                if problem:
                    result.problems.append(problem)
        except ValueError as exc:
            raise VerificationFailed(f"snapshot {info.id}: manifest unreadable: {exc}") from None
        except Exception as exc:
            if hasattr(exc, "response"):
                raise s3a.translate_error(exc, what=f"restoring objects into {target_bucket}",
                                          endpoint=settings.s3.endpoint) from None
            raise
    result.objects = {"bucket": target_bucket, **counts}
    if counts.get("refused"):  # snapshot create never pins such a key: the manifest was forged and resealed
        refused = [p for p in result.problems if p.startswith("object ") and "'" in p][:5]
        raise VerificationFailed(f"{counts['refused']} key(s) in the manifest of snapshot {info.id} could escape "
                                 f"their folder and were not restored: " + "; ".join(refused),
                                 hint="the manifest was edited after the snapshot was taken; restore another one")
    if counts.get("missing_source"):
        raise VerificationFailed(f"{counts['missing_source']} pinned version(s) no longer exist in {src_bucket}: "
                                 + "; ".join(result.problems[:5]),
                                 hint="a lifecycle rule or a manual delete removed them; restore another snapshot")


def _check_confinement(dest: Destination, info: SnapshotInfo, records: Iterator[mf.ManifestRecord]) -> None:
    """Every record checked before the first copy: one that would write or copy outside its place (an unsafe key, a
    key outside the source prefix, a copy_key outside this snapshot's objects/) refuses the whole restore."""
    name = info.meta.get("artifacts", {}).get("manifest", mf.MANIFEST)
    problems = confinement_problems(dest, info, records, name, limit=5)
    if problems:
        raise VerificationFailed(f"the manifest of snapshot {info.id} has records that could escape their folder or "
                                 "this snapshot; nothing was copied: " + "; ".join(problems),
                                 hint="the manifest was edited after the snapshot was taken; restore another one")


def is_current(head: dict[str, Any], rec: mf.ManifestRecord, *, same_bucket: bool) -> bool:
    """The target's current object already is the pinned version (same version, or a copy drtool made of it)."""
    if same_bucket and not rec.copy_key and head.get("VersionId") == rec.version_id:
        return True
    if (head.get("Metadata") or {}).get(MARKER_META) == rec.version_id and head.get("ContentLength") == rec.size:
        return True
    return not same_bucket and bool(rec.etag) and (head.get("ETag") or "").strip('"') == rec.etag \
        and head.get("ContentLength") == rec.size


# --- database ----------------------------------------------------------------------------------------------------

PENDING_PREFIX = "drtool: restoring snapshot "
PENDING_SUFFIX = " (incomplete)"


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec function for the pg_restore child: be killed when drtool dies (kill -9 included), so its
    transaction rolls back instead of committing behind a run that no longer exists (Linux PR_SET_PDEATHSIG).
    libc is looked up here, before the fork, so the child only makes the call."""
    import ctypes
    import signal

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: no parent-death signal
        return None
    return lambda: prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


@dataclass
class _PreparedDump:
    """A database restore that passed every check: what remains is creating the database and running pg_restore
    on `dump`, a verified plaintext copy in an anonymous temporary file."""

    target: Target
    state: dict[str, Any]
    exists: bool
    tables: int
    tool: str
    dump: IO[bytes]
    slot: str = "database"  # the RestoreResult field that reports it (plugin_database for the plugin daemon's)


def _prepare_database(settings: Settings, dest: Destination, info: SnapshotInfo, sums: dict[str, str],
                      target: Target, *, dry_run: bool, yes: bool, identities: list[Any] | None,
                      result: RestoreResult, stack: contextlib.ExitStack, db_meta: dict[str, Any] | None = None,
                      dump_name: str | None = None, slot: str = "database") -> _PreparedDump | None:
    """Every check of the database restore, before anything is changed anywhere. None: nothing left to do (already
    restored, or a dry run; `result.database` says which)."""
    # The main database by default; the plugin daemon's (issue 13) with its own meta section, dump and result slot.
    db_meta = db_meta if isinstance(db_meta, dict) else info.meta.get("database", {})
    source_major = pga.server_major_of(int(db_meta.get("server_version_num") or 0))
    marker = f"drtool: restored from snapshot {info.id}"
    with pga.connect(target.pg, database="postgres", autocommit=True) as admin:
        version_num = int(admin.execute("SELECT current_setting('server_version_num')::int").fetchone()[0])
        target_major = pga.server_major_of(version_num)
        row = admin.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
                            (target.dbname,)).fetchone()
    if source_major and target_major < source_major:
        raise ConfigError(
            f"the dump comes from PostgreSQL {db_meta.get('server_version')} but the target server is "
            f"PostgreSQL {target_major}: a dump cannot be restored into an older major version",
            hint=f"restore into a PostgreSQL {source_major} (or newer) server")
    exists = row is not None
    state: dict[str, Any] = {"target": target.label, "exists": exists}
    setattr(result, slot, state)
    if exists and row[0] == marker:
        state["action"] = "already restored"
        return None
    # A restore killed after pg_restore committed but before the marker, or while pg_restore ran: the database is
    # drtool's own work in progress, so the re-run replaces it without --yes (the runbook says: run it again).
    interrupted = exists and bool(row[0]) and str(row[0]).startswith(PENDING_PREFIX) \
        and str(row[0]).endswith(PENDING_SUFFIX)
    if interrupted:
        state["interrupted_restore"] = str(row[0])
    tables = 0
    if exists:
        with pga.connect(target.pg, autocommit=True) as conn:
            tables = int(conn.execute(
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN "
                "('r','p','v','m','S') AND n.nspname NOT IN ('pg_catalog','information_schema')"
                " AND n.nspname NOT LIKE 'pg_toast%%'").fetchone()[0])
    state["tables_before"] = tables
    if tables and not yes and not interrupted:
        raise UsageError(f"target database {target.label} is not empty ({tables} relations); nothing was changed",
                         hint="pass --yes to replace its objects with the snapshot's (pg_restore --clean)")
    state["action"] = "replace" if tables else ("restore" if exists else "create and restore")
    if source_major and target_major > source_major:
        log.warning("restoring a PostgreSQL %s dump into PostgreSQL %s", source_major, target_major)
    if dry_run:
        return None
    dump_major = int(db_meta.get("pg_dump_major") or 0)
    tool = pga.find_pg_tool("pg_restore", server_major=target_major, bin_dir=settings.snapshot.pg_bin_dir,
                            min_major=dump_major)
    pga.check_pg_restore_reads(tool, dump_major, install_major=target_major)
    name = dump_name or info.meta.get("artifacts", {}).get("dump", mf.DUMP)
    # An anonymous file, handed to pg_restore as /dev/fd/N: a killed run leaves no copy of the dump on disk.
    tmp = stack.enter_context(tempfile.TemporaryFile(prefix="drtool-dump-", suffix=".dump"))  # noqa: SIM115
    raw = open_artifact(dest, info.id, name)
    stream = plaintext(raw, info, identities, f"{info.id}/{name}")
    while chunk := stream.read(1 << 20):
        tmp.write(chunk)
    if isinstance(stream, DecryptingReader):
        stream.finish()
    tmp.flush()
    if raw.sha256.hexdigest() != sums.get(name):
        raise VerificationFailed(f"snapshot {info.id}: {name} checksum mismatch (corrupted or truncated); nothing "
                                 "was changed", hint="run `drtool snapshots verify`; restore another snapshot")
    listing = subprocess.run([tool, "--list", f"/dev/fd/{tmp.fileno()}"], capture_output=True, check=False,
                             pass_fds=(tmp.fileno(),), preexec_fn=_die_with_parent())
    if listing.returncode != 0:
        lines = listing.stderr.decode("utf-8", "replace").strip().splitlines()
        raise VerificationFailed(f"snapshot {info.id}: {name} is not a dump pg_restore can read "
                                 f"({lines[-1] if lines else 'exit ' + str(listing.returncode)}); nothing was "
                                 "changed", hint="run `drtool snapshots verify --deep`; restore another snapshot")
    return _PreparedDump(target=target, state=state, exists=exists, tables=tables, tool=tool, dump=tmp, slot=slot)


def _apply_database(prepared: _PreparedDump, info: SnapshotInfo, *, no_owner: bool, result: RestoreResult) -> None:
    target, tmp = prepared.target, prepared.dump
    marker = f"drtool: restored from snapshot {info.id}"
    pending = f"{PENDING_PREFIX}{info.id}{PENDING_SUFFIX}"
    if not prepared.exists:  # only now: a refused restore must not leave an empty database behind
        with pga.connect(target.pg, database="postgres", autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(target.dbname)))
    with pga.connect(target.pg, database="postgres", autocommit=True) as admin:
        admin.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(target.dbname),
                                                                      sql.Literal(pending)))
    argv = [prepared.tool, "--single-transaction", "--exit-on-error", "--no-password", f"--dbname={target.dbname}"]
    if prepared.tables:
        argv += ["--clean", "--if-exists"]
    if no_owner:
        argv += ["--no-owner", "--no-privileges"]
    argv.append(f"/dev/fd/{tmp.fileno()}")
    tmp.seek(0)
    proc = subprocess.run(argv, capture_output=True, env=pga.subprocess_env(target.pg, database=target.dbname),
                          check=False, pass_fds=(tmp.fileno(),), preexec_fn=_die_with_parent())
    if proc.returncode != 0:
        lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise UnavailableError(f"pg_restore into {target.label} failed, nothing was changed (single transaction): "
                               f"{lines[-1] if lines else 'exit ' + str(proc.returncode)}",
                               hint="missing roles: pass --no-owner", system=f"postgres {target.pg.host}")
    with pga.connect(target.pg, database="postgres", autocommit=True) as admin:
        admin.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(target.dbname),
                                                                      sql.Literal(marker)))
    prepared.state["action_done"] = prepared.state["action"]
    setattr(result, prepared.slot, prepared.state)
