"""`drtool snapshot create`: a Postgres dump and the object versions it refers to, taken at one instant.

How the instant is shared: a REPEATABLE READ transaction exports its snapshot (pg_export_snapshot) and records
clock_timestamp() as the fence; pg_dump runs with --snapshot=<id>, so it sees exactly what drtool's own reads see.
Every key the rows reference is read in that transaction, then the bucket's version listing is streamed and, for
each referenced or configured key, the newest version not after the fence is pinned. The dump is streamed to the
destination while the listing runs, so the wall time is close to pg_dump's alone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from drtool import __version__, wiring
from drtool.adapters import age as agea
from drtool.adapters import postgres as pga
from drtool.adapters import s3 as s3a
from drtool.config import Settings
from drtool.core import manifest as mf
from drtool.core.events import Emit, no_events
from drtool.core.keys import (
    KeyPatterns,
    ReferenceIndex,
    parse_reference_columns,
)
from drtool.core.retention import Policy
from drtool.errors import (
    ConfigError,
    DrtoolError,
    ExitCode,
    UnavailableError,
)
from drtool.ops.lock import destination_lock
from drtool.ops.snapshot import auth as snapshot_auth
from drtool.ops.snapshot import databases as snapshot_databases
from drtool.ops.snapshot import listing as snapshot_listing
from drtool.ops.snapshot import stores as snapshot_stores
from drtool.ops.snapshot.destination import Destination, open_destination
from drtool.ops.snapshot.dump_upload import dump_worker
from drtool.ops.snapshot.pinning import write_manifest
from drtool.ops.snapshot.preflight import check_pg_dump, object_lock, replication_verdict, s3_endpoint_key

log = logging.getLogger("drtool.snapshot")


# --- create ------------------------------------------------------------------------------------------------------

@dataclass
class CreateOptions:
    schemas: tuple[str, ...] = ()
    tables: tuple[str, ...] = ()
    encrypt_to: tuple[str, ...] = ()
    copy_unversioned: bool = False
    require_replication: bool = False
    break_stale_lock: bool = False
    retain_until: str | None = None  # Object Lock: a date or a duration (30d); overrides snapshot.object_lock_days
    signing_key: Any = field(default=None, repr=False)  # Ed25519 private key (ops.snapshot.auth.signing_key)


@dataclass
class CreateResult:
    snapshot_id: str
    fence: str
    meta: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    digest: str = ""  # sha256 of SHA256SUMS: what --expect-digest pins out of band
    signed_by: str | None = None  # key id of the signing key, None when unsigned

    @property
    def exit_code(self) -> int:
        return int(ExitCode.DEGRADED) if self.warnings else int(ExitCode.OK)



def create_snapshot(settings: Settings, options: CreateOptions, *, emit: Emit = no_events) -> CreateResult:
    """Take one consistent snapshot; see the module docstring for the mechanics."""
    started = time.monotonic()
    settings.require("postgres.host", "postgres.database")
    settings.require_s3()
    source = settings.s3
    columns = parse_reference_columns(settings.snapshot.reference_columns)
    # Issue 13: the plugin daemon's storage prefixes, pinned like include_prefixes when it is Dify's own bucket.
    plugin_storage = snapshot_databases.plugin_storage_plan(settings)
    patterns = KeyPatterns.parse(",".join([settings.snapshot.include_prefixes, *plugin_storage.patterns]))
    # Issue 13: storages outside Dify's bucket (plugin storage elsewhere, archive storage), each its own manifest.
    stores = snapshot_stores.configured_stores(settings)
    recipients = agea.parse_recipients(options.encrypt_to) if options.encrypt_to else None
    if options.signing_key is None:  # read before any work: a bad key file stops the run with nothing written
        options = dataclasses.replace(options, signing_key=snapshot_auth.signing_key(settings))
    src_client = wiring.s3_client(source)
    src_bucket = str(source.bucket)
    dest = open_destination(settings)
    dest.retention = object_lock(settings, options.retain_until, dest)  # before the lock: a refusal writes nothing
    warnings: list[str] = []

    try:
        versioning = s3a.bucket_versioning(src_client, src_bucket)
        expiry = s3a.noncurrent_expiry_days(src_client, src_bucket)
        s3_date = s3a.server_date(src_client, src_bucket)
        s3_date_at = time.monotonic()
    except Exception as exc:
        raise s3a.translate_error(exc, what=f"source bucket {src_bucket}", endpoint=source.endpoint) from None
    if versioning != "Enabled":
        if not options.copy_unversioned:
            raise ConfigError(
                f"source bucket {src_bucket} is not versioned ({versioning}): a snapshot cannot pin object versions",
                hint="enable versioning on the bucket (recommended), or pass --copy-unversioned to copy the "
                     "referenced objects into the snapshot")
        if s3_endpoint_key(source) != s3_endpoint_key(dest.s3):
            raise ConfigError("--copy-unversioned copies server-side: the snapshot bucket must be on the source's "
                              "endpoint", hint="set snapshot.endpoint to s3.endpoint, or enable versioning")
        warnings.append(f"source bucket {src_bucket} is not versioned: referenced objects are copied into the "
                        "snapshot; objects changed after the fence cannot be pinned")
    horizon = Policy(settings.snapshot.keep_last, settings.snapshot.keep_daily, settings.snapshot.keep_weekly,
                     settings.snapshot.keep_monthly).horizon_days
    for rule, days in expiry:
        if days < horizon:
            warnings.append(
                f"lifecycle rule {rule!r} on bucket {src_bucket} expires noncurrent versions after {days} days but "
                f"retention keeps snapshots up to {horizon} days: older snapshots would lose their pinned objects")
    prepared_stores, store_warnings = snapshot_stores.prepare(stores, copy_unversioned=options.copy_unversioned,
                                                              horizon_days=horizon)
    warnings += store_warnings
    replication = replication_verdict(settings, options.require_replication)
    check_pg_dump(settings)  # before the lock, which is the first write: a refusal leaves the bucket untouched
    snapshot_databases.check_plugin_database(settings)  # likewise: a configured but missing plugin database
    if plugin_storage.warning:
        warnings.append(plugin_storage.warning)

    with destination_lock(dest.client, dest.bucket, dest.lock_key, holder="snapshot create",
                          stale_after_s=settings.snapshot.lock_stale_after, break_stale=options.break_stale_lock,
                          emit=emit):
        result = _create_locked(settings, options, dest, src_client, src_bucket, versioning, columns, patterns,
                                recipients, warnings, emit, replication,
                                # The store's clock, carried forward to now: the replication check and the lock
                                # take a while, and that time is not clock skew.
                                None if s3_date is None else s3_date + timedelta(seconds=time.monotonic() - s3_date_at),
                                stores=prepared_stores)
    result.meta["durations"]["total_s"] = round(time.monotonic() - started, 3)
    for w in result.warnings:
        log.warning("%s", w)
    return result


def _create_locked(settings: Settings, options: CreateOptions, dest: Destination, src_client: Any, src_bucket: str,
                   versioning: str, columns: list[tuple[str, ...]], patterns: KeyPatterns,
                   recipients: list[Any] | None, warnings: list[str], emit: Emit,
                   replication: dict[str, Any] | None, s3_date: datetime | None,
                   stores: list[snapshot_stores.PreparedStore] | None = None) -> CreateResult:
    pg = settings.postgres
    encrypted = bool(recipients)
    t0 = time.monotonic()
    conn, pg_snapshot, fence, version_num, server_version, window_start = pga.open_exported_snapshot(pg)
    proc: subprocess.Popen[bytes] | None = None
    dump_thread: threading.Thread | None = None
    writers: list[s3a.MultipartWriter] = []
    snapshot_id = mf.new_snapshot_id()
    folder = dest.folder(snapshot_id)
    plugin_dump: snapshot_databases.DatabaseDump | None = None
    try:
        # Issue 13: the plugin daemon's database, exported right after the main one (one time window). Objects
        # are pinned at the later fence, so no row of either database points at a version newer than the fence.
        plugin_dump = snapshot_databases.open_plugin_dump(settings)
        db_fence = fence
        if plugin_dump is not None:
            fence = max(fence, plugin_dump.fence)
        server_major = pga.server_major_of(version_num)
        pg_dump = pga.find_pg_tool("pg_dump", server_major=server_major, bin_dir=settings.snapshot.pg_bin_dir)
        dump_major, dump_text = pga.tool_version(pg_dump)
        pga.check_tool_not_older("pg_dump", dump_major, dump_text, server_major, server_version, path=pg_dump)
        if s3_date is not None:
            skew = abs((s3_date - fence).total_seconds())
            if skew > 5:
                warnings.append(f"the object store's clock differs from the database's by about {int(skew)} s: "
                                "versions written near the fence may be pinned wrongly; synchronise clocks (NTP)")
        emit({"event": "snapshot.started", "snapshot": snapshot_id, "fence": fence.isoformat(),
              "destination": dest.url})
        log.info("snapshot %s: fence %s, server %s", snapshot_id, fence.isoformat(), server_version)

        argv = [pg_dump, "--format=custom", f"--snapshot={pg_snapshot}", "--no-password"]
        argv += [f"--schema={s}" for s in options.schemas] + [f"--table={t}" for t in options.tables]
        stderr_file = tempfile.TemporaryFile()  # noqa: SIM115 - closed after pg_dump ends, below
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr_file, env=pga.subprocess_env(pg))
        part_size = max(5, settings.snapshot.part_size_mb) << 20
        dump_name = mf.artifact_name(mf.DUMP, encrypted)
        dump_sink = dest.artifact_writer(folder + dump_name, part_size=part_size)
        writers.append(dump_sink)
        dump_outcome: dict[str, Any] = {}
        dump_thread = threading.Thread(target=dump_worker, args=(proc, dump_sink, recipients, dump_outcome),
                                       name="pg_dump-upload", daemon=True)
        dump_thread.start()
        if plugin_dump is not None:
            plugin_dump.start(dest, folder, pg_bin_dir=settings.snapshot.pg_bin_dir, recipients=recipients,
                              part_size=part_size)

        # Issue 16: sub-prefixes listed in parallel; one request-rate cap shared by every listing of this run.
        listing_workers = max(1, settings.snapshot.listing_workers)
        pace = snapshot_listing.request_pacer(settings.snapshot.max_requests_per_second)

        # Referenced keys, read in the exported snapshot's transaction (same instant as the dump).
        t_refs = time.monotonic()
        key_prefix = settings.s3.key_prefix
        with ReferenceIndex() as index:
            missing_columns: list[str] = []
            for column in columns:
                if not pga.column_exists(conn, column):
                    missing_columns.append(".".join(column))
                    continue
                name = ".".join(column)
                index.add_many((key_prefix + value, name) for value in pga.iter_column_values(conn, column))
            if missing_columns:
                log.info("reference columns not in this database (skipped): %s", ", ".join(missing_columns))
            refs_s = time.monotonic() - t_refs

            # Stream the version listing into the manifest.
            t_list = time.monotonic()
            manifest_name = mf.artifact_name(mf.MANIFEST, encrypted)
            manifest_sink = dest.artifact_writer(folder + manifest_name, part_size=part_size)
            writers.append(manifest_sink)
            inner: Any = agea.EncryptingWriter(manifest_sink, recipients) if recipients else manifest_sink
            writer = mf.ManifestWriter(inner)
            listed = write_manifest(writer, index, patterns, src_client, src_bucket, key_prefix, fence,
                                     versioning, dest if versioning != "Enabled" else None, folder, emit=emit,
                                     workers=listing_workers, pace=pace)
            writer.close()
            if recipients:
                inner.close()
            manifest_sink.close()
            list_s = time.monotonic() - t_list
            referenced = index.count

        # Extra stores (issue 13): each store's versions at the same fence, into its own manifest artifact.
        store_meta: list[dict[str, Any]] = []
        store_sums: dict[str, str] = {}
        for prepared in stores or ():
            section, digest = snapshot_stores.pin(prepared, dest, folder, fence, recipients=recipients,
                                                  part_size=part_size, writers=writers, emit=emit,
                                                  workers=listing_workers, pace=pace)
            store_meta.append(section)
            store_sums[section["artifact"]] = digest
            if section["refused"]:
                warnings.append(f"{section['refused']} key(s) of {section['name']} storage were refused because "
                                "they could escape their folder ('../', absolute, control characters)")

        dump_thread.join()
        stderr_file.seek(0)
        dump_err = stderr_file.read().decode("utf-8", "replace").strip()
        stderr_file.close()
        if "error" in dump_outcome:
            exc = dump_outcome["error"]
            if not isinstance(exc, DrtoolError) and s3a.is_sdk_error(exc):  # name the cause
                exc = s3a.translate_error(exc, what="uploading the dump", endpoint=dest.s3.endpoint)
            raise exc if isinstance(exc, DrtoolError) else UnavailableError(
                f"uploading the dump failed: {exc}", system=f"object store {dest.s3.endpoint}")
        if dump_outcome.get("returncode") != 0:
            raise UnavailableError(f"pg_dump failed (exit {dump_outcome.get('returncode')}): "
                                   f"{dump_err.splitlines()[-1] if dump_err else 'no message'}",
                                   system=f"postgres {pg.host}:{pg.port}")
        plugin_meta = plugin_dump.finish(dest.s3.endpoint) if plugin_dump is not None else None
        dump_s = time.monotonic() - t0
        emit({"event": "snapshot.dumped", "snapshot": snapshot_id, "bytes": dump_sink.size})

        counts = writer.counts
        dangling = counts.get(mf.STATE_DANGLING, 0)
        refused = counts.get(mf.STATE_REFUSED, 0)
        changed = counts.get(mf.STATE_CHANGED, 0)
        if dangling:
            warnings.append(f"{dangling} referenced key(s) had no object version at the fence: rows point at "
                            "missing files (listed in the manifest with state 'dangling')")
        if refused:
            warnings.append(f"{refused} key(s) were refused because they could escape their folder ('../', "
                            "absolute, control characters)")
        if changed:
            warnings.append(f"{changed} object(s) of the unversioned bucket changed after the fence and could not "
                            "be pinned")
        meta: dict[str, Any] = {
            "format": mf.MANIFEST_FORMAT,
            "id": snapshot_id,
            "fence": fence.astimezone(UTC).isoformat(),
            "fence_window_start": window_start.astimezone(UTC).isoformat(),
            "created_at": datetime.now(UTC).isoformat(),
            "drtool_version": __version__,
            "database": {"name": pg.database, "host": pg.host, "port": pg.port, "server_version": server_version,
                         "server_version_num": version_num, "pg_dump_version": dump_text,
                         "pg_dump_major": dump_major, "schemas": list(options.schemas),
                         "tables": list(options.tables)},
            "source": {"bucket": src_bucket, "endpoint": settings.s3.endpoint, "key_prefix": key_prefix,
                       "versioning": versioning},
            "encryption": {"age_recipients": [str(r) for r in recipients]} if recipients else None,
            "artifacts": {"dump": dump_name, "manifest": manifest_name,
                          **({"plugin_dump": plugin_meta["artifact"]} if plugin_meta else {})},
            # Issue 13 (absent in older snapshots): the plugin daemon's database and storage, and the main
            # database's own fence (meta["fence"] is the later of the two, the one objects are pinned at).
            snapshot_databases.PLUGIN_META: plugin_meta,
            "plugin_storage": _plugin_storage_meta(settings, store_meta),
            snapshot_stores.META_KEY: store_meta,
            "database_fence": db_fence.astimezone(UTC).isoformat(),
            "counts": {"referenced_keys": referenced, "listed_versions": listed, "pinned": counts.get("pinned", 0),
                       "dangling": dangling, "refused": refused, "changed": changed},
            "bytes": {"dump": dump_sink.size, "manifest": manifest_sink.size, "pinned_objects": writer.pinned_bytes,
                      **({"stores": sum(int(s["bytes"]) for s in store_meta)} if store_meta else {})},
            "durations": {"references_s": round(refs_s, 3), "listing_s": round(list_s, 3),
                          "dump_s": round(dump_s, 3)},
            "replication": replication,
            "retention": dest.retention.to_meta() if dest.retention else None,
            "warnings": warnings,
        }
        meta_bytes = json.dumps(meta, indent=1, default=str).encode()
        dest.put_artifact(folder + mf.META, meta_bytes, content_type="application/json")
        if plugin_dump is not None and plugin_meta is not None:
            meta["bytes"]["plugin_dump"] = plugin_meta["bytes"]
        sums = {dump_name: dump_sink.sha256.hexdigest(), manifest_name: manifest_sink.sha256.hexdigest(),
                **({plugin_meta["artifact"]: plugin_dump.sha256} if plugin_dump and plugin_meta else {}),
                **store_sums,
                mf.META: hashlib.sha256(meta_bytes).hexdigest()}
        sums_bytes = mf.format_sums(sums)
        dest.put_artifact(folder + mf.SUMS, sums_bytes)
        # The marker goes last: until it exists the snapshot is invisible to every command but gc.
        digest = hashlib.sha256(sums_bytes).hexdigest()
        signature = snapshot_auth.sign_commit(options.signing_key, snapshot_id, digest)
        dest.put_artifact(folder + mf.COMMITTED, mf.committed_marker(
            snapshot_id, digest, datetime.now(UTC), signature=signature))
        emit({"event": "snapshot.committed", "snapshot": snapshot_id, "pinned": meta["counts"]["pinned"],
              "dangling": dangling, "dump_bytes": dump_sink.size})
        if signature is None:
            log.info("snapshot %s is not signed (set snapshot.signing_key_file to authenticate it)", snapshot_id)
        return CreateResult(snapshot_id=snapshot_id, fence=meta["fence"], meta=meta, warnings=warnings,
                            digest=digest, signed_by=signature["key_id"] if signature else None)
    except BaseException as exc:
        if proc is not None and proc.poll() is None:
            proc.kill()
        if dump_thread is not None:
            dump_thread.join(timeout=30)
        for w in writers:
            w.abort()
        if plugin_dump is not None:
            plugin_dump.abort()
        _cleanup_failed(dest, folder)
        if isinstance(exc, DrtoolError | KeyboardInterrupt):
            raise
        if s3a.is_sdk_error(exc):
            raise s3a.translate_error(exc, what="snapshot", endpoint=dest.s3.endpoint) from None
        if type(exc).__module__.startswith("psycopg"):
            raise pga.translate_error(exc, pg) from None
        raise
    finally:
        if plugin_dump is not None:
            plugin_dump.close()
        conn.close()


def _plugin_storage_meta(settings: Settings, store_meta: list[dict[str, Any]]) -> dict[str, Any] | None:
    """meta.json's `plugin_storage`: pinned in the main manifest, or as the extra store `plugin` when it was."""
    meta = snapshot_databases.plugin_storage_plan(settings).meta
    if meta is not None and not snapshot_stores.plugin_in_main_manifest(settings):
        pinned = any(s["name"] == "plugin" for s in store_meta)
        meta = {**meta, "pinned": pinned, **({"store": "plugin"} if pinned else {})}
    return meta


def _cleanup_failed(dest: Destination, folder: str) -> None:
    """Best effort: a failed run removes what it wrote; whatever is left, gc removes after the grace period."""
    try:
        s3a.delete_prefix(dest.client, dest.bucket, folder)
    except Exception as exc:
        log.warning("could not remove the partial snapshot %s (run `drtool snapshots gc`): %s", folder, exc)
