"""`drtool drill`: a real restore from a snapshot into scratch targets, timed, verified, reported, then removed.

Phases (RTO is their sum; each is the step an operator would run during an incident):
1. snapshot_check   - `snapshots verify --deep`: checksums, every pinned object version still exists, dump readable;
2. restore_database - `restore --target-db <scratch>` (no object copies: the pinned versions are read in place);
3. rebuild_index    - `rebuild-index` of every high-quality dataset of the restored database into scratch
                      collections, from the chunk files at the versions the snapshot pinned, with the gate; and
                      `rebuild-index --annotations` of every app the restored database has annotation reply
                      enabled for (app_annotation_settings + dataset_collection_bindings), from the annotation
                      files at their pinned versions, with Dify's annotation query as the gate (issue #13);
4. verify           - `verify --snapshot --annotations` against the scratch database and collections.

Nothing live is written except two additive things: the drill's history object under the snapshot prefix and
rebuild's embedding sidecar cache (which later rebuilds reuse). The scratch collections get their own names
(`Drill_<id>_<name>`) because the restored rows are rewritten to point at them, so rebuild and verify, which take
collection names from `datasets.index_struct`, find the scratch ones through their normal code path. Annotation
collections have no index_struct: their name is Dify's gen_collection_name_by_id(app id) under vector.index_prefix,
so the scratch settings prepend the same `Drill_<id>_` to that prefix and both commands land on scratch names.
Every scratch target is removed afterwards (also on failure, Ctrl-C or SIGTERM) unless --keep.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import re
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from psycopg import sql

from drtool import __version__
from drtool.adapters import postgres as pga
from drtool.adapters import s3 as s3a
from drtool.adapters import vector_stores
from drtool.config import Settings
from drtool.core import drill_report as dr
from drtool.core import manifest as mf
from drtool.core import naming
from drtool.core.drill_record import build_record, is_record
from drtool.core.events import Emit
from drtool.core.ports import ObjectStore, VectorStore
from drtool.errors import DrtoolError, NotFoundError, UsageError
from drtool.ops.snapshot import databases as snapshot_databases
from drtool.ops.snapshot.auth import authenticate
from drtool.ops.snapshot.catalog import SnapshotInfo, iter_records, resolve
from drtool.ops.snapshot.destination import Destination, destination_store, open_destination
from drtool.redact import redact_obj
from drtool.wiring import rebuild_parts

if TYPE_CHECKING:
    from drtool.adapters.dify_annotations import AnnotationApp
    from drtool.ops.rebuild.options import DatasetReport

log = logging.getLogger("drtool.drill")

_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# Dataset chunk files and annotation files (issue #13): both are read at the version the snapshot pinned.
_CHUNK_FILE = re.compile(r"^(datasets|annotations)/[^/]+/processed/chunks\.jsonl(\.gz|\.zst)?$")


@dataclass
class DrillOptions:
    snapshot: str = "latest"
    rto_slo: float | None = None
    rpo_slo: float | None = None
    report_dir: Path = Path("drill-reports")
    keep: bool = False
    scratch_db: str | None = None
    identity: str | None = None
    expect_digest: str | None = None  # --expect-digest: the snapshot must be exactly the one pinned out of band


@dataclass
class DrillOutcome:
    record: dict[str, Any]
    reports: dict[str, str]
    history_key: str | None
    history_error: str | None = None


class _Interrupted(KeyboardInterrupt):
    """SIGTERM (cron timeout, Kubernetes) handled like Ctrl-C: clean up, then stop."""


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(_signum: int, _frame: Any) -> None:
        raise _Interrupted()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """While cleaning up, a second Ctrl-C or SIGTERM must not stop the cleanup half way: ignore both."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# --- history in object storage ----------------------------------------------------------------------------------

def history_prefix(dest: Destination) -> str:
    return dest.key("drills") + "/"


def load_history(dest: Destination, limit: int) -> list[dict[str, Any]]:
    """The newest `limit` drill records, newest first. One object per drill (ids sort by time), so concurrent
    drills never overwrite each other's entry."""
    prefix = history_prefix(dest)
    try:
        keys = sorted(o["Key"] for o in s3a.iter_keys(dest.client, dest.bucket, prefix)
                      if o["Key"].endswith(".json"))
    except Exception as exc:
        raise dest.s3_error(exc, f"listing {dest.url}/drills/") from None
    out: list[dict[str, Any]] = []
    for key in reversed(keys[-limit:] if limit > 0 else []):
        try:
            data = json.loads(s3a.get_bytes(dest.client, dest.bucket, key))
        except ValueError:
            log.warning("skipping unreadable drill record s3://%s/%s", dest.bucket, key)
            continue
        except Exception as exc:
            raise dest.s3_error(exc, f"s3://{dest.bucket}/{key}") from None
        if is_record(data):
            out.append(data)
        else:
            log.warning("skipping s3://%s/%s: not a drill record drtool can read", dest.bucket, key)
    return out


def append_history(dest: Destination, record: dict[str, Any]) -> str:
    key = history_prefix(dest) + f"{record['drill_id']}.json"
    destination_store(dest).put(key, dr.render_json(record).encode(), content_type="application/json")
    return key


# --- chunk files at the snapshot's versions -----------------------------------------------------------------------

class PinnedChunkStore:
    """The source bucket as rebuild sees it (a BucketStore), except that chunk files pinned by the snapshot are
    read at their pinned version: the index is rebuilt from what existed at the fence, like the database."""

    def __init__(self, store: Any, dest: Destination, pins: dict[str, mf.ManifestRecord], source_bucket: str
                 ) -> None:
        self._store = store
        self._dest = dest
        self._pins = pins
        self._bucket = source_bucket
        self.pinned_reads: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def _where(self, rec: mf.ManifestRecord) -> tuple[ObjectStore, str, str | None]:
        """(store, whole key, version): a copy in the snapshot folder, or the source's pinned version."""
        if rec.copy_key:
            return destination_store(self._dest), rec.copy_key, None
        return self._store.at(self._bucket), rec.key, rec.version_id

    def head(self, key: str) -> dict[str, Any] | None:
        rec = self._pins.get(key)
        if rec is None:
            return self._store.head(key)
        store, whole, version = self._where(rec)
        return store.head(whole, version_id=version)

    def open(self, key: str) -> Any:
        rec = self._pins.get(key)
        if rec is None:
            return self._store.open(key)
        store, whole, version = self._where(rec)
        self.pinned_reads.add(key)
        return store.open(whole, version_id=version)


def _chunk_pins(dest: Destination, info: SnapshotInfo, identities: list[Any] | None, key_prefix: str
                ) -> dict[str, mf.ManifestRecord]:
    records, _raw = iter_records(dest, info, identities)
    pins: dict[str, mf.ManifestRecord] = {}
    folder = dest.folder(info.id)
    for rec in records:
        if rec.state != mf.STATE_PINNED or not rec.key.startswith(key_prefix):
            continue
        if mf.confinement_problem(rec, snapshot_folder=folder, key_prefix=key_prefix):
            continue  # never read from outside the snapshot (snapshot_check has already failed the drill)
        key = rec.key[len(key_prefix):]
        if _CHUNK_FILE.match(key):
            pins[key] = rec
    return pins


# --- the drill ------------------------------------------------------------------------------------------------------

@dataclass
class _Scratch:
    database: str
    prefix: str  # collection-name prefix
    ledger_prefix: str
    db_created: bool = False
    collections: list[str] = field(default_factory=list)
    backend: str | None = None
    plugin_database: str | None = None  # issue 13: the plugin daemon's database, when the snapshot holds one
    plugin_db_created: bool = False
    # issue 13: apps with annotation reply enabled in the restored database, and their scratch collections
    annotation_apps: list[AnnotationApp] = field(default_factory=list)
    annotation_collections: dict[str, str] = field(default_factory=dict)


class Drill:
    def __init__(self, settings: Settings, options: DrillOptions, *, emit: Emit) -> None:
        self.settings = settings
        self.options = options
        self.emit = emit
        self.started = datetime.now(UTC)
        self.token = secrets.token_hex(3)
        self.drill_id = f"{self.started:%Y%m%dT%H%M%SZ}-{self.token}"
        self.phases: list[dict[str, Any]] = []
        self.problems: list[str] = []
        self.identities: list[Any] | None = None
        name = options.scratch_db or f"drtool_drill_{self.token}"
        self.scratch = _Scratch(database=name, prefix=f"Drill_{self.token}_",
                                ledger_prefix=f"{settings.rebuild.ledger_prefix.rstrip('/')}/drill-{self.drill_id}")

    # -- checks before anything is created
    def preflight(self) -> tuple[Destination, SnapshotInfo]:
        s = self.settings
        name = self.scratch.database
        if not _DB_NAME.match(name):
            raise UsageError(f"scratch database name {name!r} is not a plain lower-case identifier of up to 63 "
                             "characters", hint="e.g. --scratch-db drtool_drill")
        if name == s.postgres.database:
            raise UsageError(f"--scratch-db {name} is the configured live database (postgres.database)",
                             hint="a drill restores into a scratch database and drops it afterwards: choose "
                                  "another name")
        if not s.vector.store:
            raise UsageError("no vector store chosen for the scratch collections",
                             hint=f"set vector.store (DRTOOL_VECTOR_STORE={'|'.join(vector_stores.names())}) and "
                                  "its endpoint")
        backend = vector_stores.get(s.vector.store)
        if not backend.configured(s):
            raise UsageError(f"{backend.name} is not configured for the scratch collections", hint=backend.hint)
        s.require_s3()
        self.scratch.backend = backend.name
        if self.options.identity:
            from drtool.adapters.age import load_identities

            self.identities = load_identities(self.options.identity)
        dest = open_destination(s)
        info = resolve(dest, self.options.snapshot)
        # Before any scratch target exists: an unauthenticated snapshot (with trusted keys set) is refused, exit 4.
        authenticate(s, dest, info, expect_digest=self.options.expect_digest)
        if info.encrypted and not self.identities:
            raise UsageError(f"snapshot {info.id} is encrypted", hint="pass --identity KEYFILE")
        with pga.connect(s.postgres, database="postgres", autocommit=True) as admin:
            exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists:
            raise UsageError(f"scratch database {name} already exists on {s.postgres.host}:{s.postgres.port}",
                             hint="a drill never reuses a database it did not create: drop it (a --keep drill "
                                  "leaves one) or pass another --scratch-db")
        if isinstance(info.meta.get(snapshot_databases.PLUGIN_META), dict):
            plugin = f"{name[:56]}_plugin"
            with pga.connect(s.postgres, database="postgres", autocommit=True) as admin:
                taken = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (plugin,)).fetchone()
            if taken or plugin in (s.postgres.database, s.postgres.plugin_database):
                raise UsageError(f"scratch plugin database {plugin} already exists on {s.postgres.host}:"
                                 f"{s.postgres.port}", hint="drop it (a --keep drill leaves one) or pass another "
                                                            "--scratch-db")
            self.scratch.plugin_database = plugin
        return dest, info

    def scratch_settings(self) -> Settings:
        s = self.settings
        return dataclasses.replace(
            s, postgres=dataclasses.replace(s.postgres, database=self.scratch.database),
            vector=dataclasses.replace(s.vector, index_prefix=self.scratch.prefix + s.vector.index_prefix),
            rebuild=dataclasses.replace(s.rebuild, ledger_prefix=self.scratch.ledger_prefix),
            redis=dataclasses.replace(s.redis, url=None))  # never touch live Dify's Redis keys

    def _progress_only(self, event: dict[str, Any]) -> None:
        """What a phase's command reports, reduced to its unit counts: the drill's own events are its JSON contract,
        so verify's or restore's events stay out of it, but their `progress` reaches the display (never stdout)."""
        if event.get("event") == "progress":
            self.emit(event)

    # -- phases
    def _phase(self, name: str, fn: Callable[[dict[str, Any]], None]) -> bool:
        phase: dict[str, Any] = {"name": name, "status": "running", "seconds": 0.0, "detail": {}, "error": None}
        self.phases.append(phase)
        self.emit({"event": "drill.phase_started", "phase": name})
        t = time.monotonic()
        try:
            fn(phase["detail"])
            phase["status"] = "ok"
        except DrtoolError as exc:
            phase["status"], phase["error"] = "failed", str(exc)
        except KeyboardInterrupt:
            phase["status"], phase["error"] = "failed", "interrupted"
            phase["seconds"] = round(time.monotonic() - t, 3)
            raise
        except Exception as exc:  # an unexpected failure is still a failed drill, with a report
            log.debug("phase %s", name, exc_info=True)
            phase["status"], phase["error"] = "failed", f"unexpected error: {type(exc).__name__}: {exc}"
        phase["seconds"] = round(time.monotonic() - t, 3)
        if phase["error"]:
            self.problems.append(f"{name}: {phase['error']}")
        self.emit({"event": "drill.phase", **phase})
        return phase["status"] == "ok"

    def check_snapshot(self, dest: Destination, info: SnapshotInfo, detail: dict[str, Any]) -> None:
        from drtool.errors import VerificationFailed
        from drtool.ops.snapshot.verify import verify as verify_snapshot

        broken = verify_snapshot(self.settings, dest, info, deep=True, identities=self.identities,
                                 expect_digest=self.options.expect_digest)
        counts = info.meta.get("counts", {})
        detail.update(pinned=counts.get("pinned", 0), broken=len(broken), examples=broken[:20])
        if broken:
            raise VerificationFailed(f"snapshot {info.id} is not restorable: {len(broken)} problem(s): "
                                     + "; ".join(broken[:5]),
                                     hint="a lifecycle rule or a manual delete removed pinned data; "
                                          "take a new snapshot and find what deletes versions")

    def restore_database(self, dest: Destination, info: SnapshotInfo, detail: dict[str, Any]) -> None:
        from drtool.ops.snapshot.restore import restore

        self.scratch.db_created = True  # from here on the database may exist: cleanup drops it if it does
        self.scratch.plugin_db_created = self.scratch.plugin_database is not None
        # The scratch plugin database lives on the main server, where the drill made sure it was free and drops
        # it: not on postgres.plugin_host, which a bare --target-plugin-db name would otherwise mean.
        on_main = dataclasses.replace(self.settings, postgres=dataclasses.replace(
            self.settings.postgres, plugin_host=None, plugin_port=None, plugin_user=None, plugin_password=None))
        result = restore(on_main, dest, info.id, target_db=self.scratch.database, objects_to=None,
                         dry_run=False, yes=False, verify_only=False, identities=self.identities, no_owner=True,
                         skip_objects=True, expect_digest=self.options.expect_digest,
                         target_plugin_db=self.scratch.plugin_database, emit=self._progress_only)
        detail["database"] = result.database
        if self.scratch.plugin_database:
            detail["plugin_database"] = result.plugin_database
            self._check_plugin_rows(info, detail)
        detail["collections"] = self._point_at_scratch_collections()
        detail["annotation_collections"] = self._annotation_collections(detail)

    def _check_plugin_rows(self, info: SnapshotInfo, detail: dict[str, Any]) -> None:
        """Every table of the restored plugin database holds the rows it held at the snapshot (issue 13).

        The counts were taken in the dump's own exported snapshot, so any difference is a lost table or row."""
        from drtool.errors import VerificationFailed

        assert self.scratch.plugin_database is not None
        expected = (info.meta.get(snapshot_databases.PLUGIN_META) or {}).get("row_counts") or {}
        pg = dataclasses.replace(self.settings.postgres, database=self.scratch.plugin_database)
        found = snapshot_databases.row_counts(pg)
        differ = {t: (n, found.get(t)) for t, n in expected.items() if found.get(t) != n}
        detail["plugin_tables"] = len(found)
        detail["plugin_rows"] = sum(found.values())
        if differ:
            raise VerificationFailed(f"the restored plugin database differs from the snapshot in {len(differ)} "
                                     "table(s): " + "; ".join(f"{t}: {want} row(s) at the snapshot, {got} restored"
                                                              for t, (want, got) in list(differ.items())[:5]))

    def _point_at_scratch_collections(self) -> dict[str, str]:
        """Rewrite `datasets.index_struct` in the scratch copy so every high-quality dataset names a scratch
        collection; rebuild and verify then use it through their normal path, and the live one is never opened."""
        from drtool.adapters.dify_metadata import DifyReader

        scratch = self.scratch_settings()
        renamed: dict[str, str] = {}
        with DifyReader(scratch.postgres) as reader:
            datasets = [d for d in reader.datasets() if d.indexing_technique == "high_quality"
                        and d.provider != "external"]
        with pga.connect(scratch.postgres, autocommit=False) as conn:
            for d in datasets:
                kind, class_prefix = naming.from_index_struct(d.index_struct)
                live = class_prefix or naming.dify_collection_name(d.id, self.settings.vector.index_prefix)
                name = self.scratch.prefix + live
                struct = {"type": kind or self.scratch.backend, "vector_store": {"class_prefix": name}}
                conn.execute("UPDATE datasets SET index_struct = %s WHERE id::text = %s", (json.dumps(struct), d.id))
                renamed[d.id] = name
            conn.commit()
        self.scratch.collections = list(renamed.values())
        return renamed

    def _annotation_collections(self, detail: dict[str, Any]) -> dict[str, str]:
        """The apps the restored database has annotation reply enabled for, and the scratch collection each gets.

        Read from the restored copy, not the live database: the drill rehearses what the snapshot can bring back.
        An app whose setting names a binding that does not exist has no collection in Dify either (Dify answers
        none of its annotations): it is counted, never built."""
        from drtool.adapters.dify_metadata import DifyReader
        from drtool.ops.rebuild.annotations import collection_for, read_enabled_apps

        scratch = self.scratch_settings()
        with DifyReader(scratch.postgres) as reader:
            apps = read_enabled_apps(reader)
        self.scratch.annotation_apps = apps
        names = {a.app_id: collection_for(a.app_id, scratch.vector.index_prefix) for a in apps if a.model_name}
        unbound = [a.app_id for a in apps if not a.model_name]
        if unbound:
            detail["annotation_apps_without_binding"] = unbound
        self.scratch.annotation_collections = names
        self.scratch.collections += [n for n in names.values() if n not in self.scratch.collections]
        return names

    def rebuild_index(self, dest: Destination, info: SnapshotInfo, detail: dict[str, Any]) -> None:
        from drtool.errors import VerificationFailed
        from drtool.ops.rebuild.annotations import AnnotationRebuilder
        from drtool.ops.rebuild.options import Options
        from drtool.ops.rebuild.progress import ChunkProgressEvents
        from drtool.ops.rebuild.rebuilder import Rebuilder

        scratch = self.scratch_settings()
        datasets = sorted(self._scratch_datasets())
        apps = [a for a in self.scratch.annotation_apps if a.app_id in self.scratch.annotation_collections]
        detail["datasets"] = len(datasets)
        detail["annotation_apps"] = len(apps)
        if not datasets and not apps:
            detail["note"] = "no high-quality dataset and no app with annotation reply: nothing to index"
            return
        # The scratch copy's parts, assembled where the command's are; its database always says what Dify used.
        parts = rebuild_parts(scratch, probe=False, metadata=True)
        store, target, embedder, meta = parts.store, parts.target, parts.embedder, parts.meta
        key_prefix = str(info.meta.get("source", {}).get("key_prefix", store.prefix) or "")
        source_bucket = str(info.meta.get("source", {}).get("bucket") or store.bucket)
        pinned = PinnedChunkStore(store, dest, _chunk_pins(dest, info, self.identities, key_prefix), source_bucket)
        reports: list[DatasetReport] = []
        app_reports: list[DatasetReport] = []
        try:
            if datasets:
                rebuilder = Rebuilder(scratch, Options(datasets=tuple(datasets)), store=pinned, target=target,
                                      embedder=embedder, meta=meta, emit=self.emit, redis_url=None,
                                      progress=ChunkProgressEvents(self.emit, "drill rebuild"))
                reports = rebuilder.run()
            if apps:
                # The enabled list read from the restored rows: Postgres, not the files, says which apps Dify
                # answers annotations for and with which model (as `rebuild-index --annotations` with Postgres).
                annotations = AnnotationRebuilder(scratch, Options(), store=pinned, target=target,
                                                  embedder=embedder, meta=meta, emit=self.emit, redis_url=None,
                                                  apps=self.scratch.annotation_apps,
                                                  progress=ChunkProgressEvents(self.emit, "drill annotations"))
                app_reports = annotations.run()
        finally:
            for part in (target, embedder, meta):
                with contextlib.suppress(Exception):
                    part.close()
        read = pinned.pinned_reads
        dataset_pins = sum(1 for k in read if k.startswith("datasets/"))
        detail["model"] = embedder.model_id
        detail["chunk_files_at_snapshot_version"] = dataset_pins
        detail["chunk_files_current"] = len(datasets) - dataset_pins
        detail["per_dataset"] = [{
            "dataset_id": r.dataset_id, "collection": r.collection, "status": r.status, "valid": r.valid,
            "inserted": r.inserted, "embedded": r.embedded,
            "cache_hits": r.cache_hits_sidecar + r.cache_hits_dify, "rejected": r.rejected,
            "gate": {k: v for k, v in r.verification.items() if k != "problems"} if r.verification else None,
            "error": r.error} for r in reports]
        detail["chunks"] = sum(r.inserted for r in reports)
        if apps:
            annotation_pins = sum(1 for k in read if k.startswith("annotations/"))
            detail["annotation_files_at_snapshot_version"] = annotation_pins
            detail["annotation_files_current"] = len(apps) - annotation_pins
            detail["per_app"] = [{
                "app_id": r.dataset_id, "collection": r.collection, "status": r.status, "annotations": r.valid,
                "inserted": r.inserted, "embedded": r.embedded,
                "cache_hits": r.cache_hits_sidecar + r.cache_hits_dify, "rejected": r.rejected,
                "gate": {k: v for k, v in r.verification.items() if k != "problems"} if r.verification else None,
                "error": r.error} for r in app_reports]
            detail["annotations"] = sum(r.inserted for r in app_reports)
        failed = [f"{r.dataset_id}: {r.error}" for r in reports if r.status != "rebuilt"]
        failed_apps = [f"app {r.dataset_id}: {r.error}" for r in app_reports if r.status != "rebuilt"]
        if failed or failed_apps:
            parts: list[str] = []
            if failed:
                parts.append(f"{len(failed)} of {len(reports)} dataset(s) could not be rebuilt")
            if failed_apps:
                parts.append(f"{len(failed_apps)} of {len(app_reports)} annotation collection(s) could not be "
                             "rebuilt")
            raise VerificationFailed(" and ".join(parts) + ": " + "; ".join((failed + failed_apps)[:5]))

    def _scratch_datasets(self) -> list[str]:
        from drtool.adapters.dify_metadata import DifyReader

        with DifyReader(self.scratch_settings().postgres) as reader:
            return [d.id for d in reader.datasets() if d.indexing_technique == "high_quality"
                    and d.provider != "external"]

    def _target(self, settings: Settings) -> VectorStore:
        return vector_stores.open_store(settings)

    def verify(self, info: SnapshotInfo, detail: dict[str, Any]) -> None:
        from drtool.errors import VerificationFailed
        from drtool.ops.verify.closure import verify as verify_closure
        from drtool.ops.verify.report import VerifyOptions

        # annotations=True: --snapshot alone leaves them out, but the drill rebuilt them into scratch collections
        # and must prove they hold every annotation exactly once (an empty list when the database has none).
        report = verify_closure(self.scratch_settings(),
                                VerifyOptions(snapshot=info.id, identity=self.options.identity, annotations=True),
                                emit=self._progress_only)
        summary = report.to_dict()
        detail.update(breaks=summary["breaks"], counts=summary["counts"], files=summary["files"],
                      datasets=len(summary["datasets"]))
        if summary["annotations"]:
            detail["annotation_apps"] = len(summary["annotations"])
            detail["annotations"] = [{k: a.get(k) for k in ("app_id", "collection", "annotations", "vectors", "ok",
                                                            "breaks", "note")} for a in summary["annotations"]]
        if not report.ok:
            examples = [f"{kind}: " + ", ".join(f"{k}={v}" for k, v in ex[0].items() if v is not None)
                        for kind, ex in summary["examples"].items() if ex]
            raise VerificationFailed(f"verify found {summary['breaks']} break(s) "
                                     f"({', '.join(f'{k} {n}' for k, n in summary['counts'].items())}); "
                                     + "; ".join(examples[:5]))

    # -- replication lag, for the RPO
    def replication_lag(self, info: SnapshotInfo) -> tuple[float | None, str]:
        s = self.settings
        if s.replication.sites:
            from drtool.ops.replication.summary import replication_summary

            try:
                summary = replication_summary(s, probe=True)
            except Exception as exc:  # the RPO is still reported, with the lag as unknown
                return None, f"unknown: replication check failed ({getattr(exc, 'message', exc)})"
            if summary.get("lag_seconds") is not None:
                return float(summary["lag_seconds"]), "measured now by a replication probe"
            return None, "unknown: " + (summary.get("probe_error") or "the probe measured no lag")
        lag = (info.meta.get("replication") or {}).get("lag_seconds")
        if lag is not None:
            return float(lag), "measured when the snapshot was taken"
        return None, "unknown: no replication check configured (replication.sites)"

    # -- cleanup
    def cleanup(self) -> dict[str, Any]:
        done: dict[str, Any] = {}
        errors: list[str] = []
        if self.scratch.collections:
            try:
                done["collections_dropped"] = self._drop_collections()
            except Exception as exc:
                errors.append(f"scratch collections {', '.join(self.scratch.collections)}: {exc}")
        try:
            done["ledger_objects_deleted"] = self._delete_ledgers()
        except Exception as exc:
            errors.append(f"rebuild ledgers under {self.scratch.ledger_prefix}: {exc}")
        if self.scratch.db_created:
            try:
                done["database_dropped"] = self._drop_database()
            except Exception as exc:
                errors.append(f"scratch database {self.scratch.database}: {exc}")
        if self.scratch.plugin_db_created and self.scratch.plugin_database:
            try:
                done["plugin_database_dropped"] = self._drop_database(self.scratch.plugin_database)
            except Exception as exc:
                errors.append(f"scratch plugin database {self.scratch.plugin_database}: {exc}")
        if errors:
            done["errors"] = errors
            self.problems += [f"cleanup: {e} (remove it by hand)" for e in errors]
        self.emit({"event": "drill.cleanup", **done})
        return done

    def _drop_collections(self) -> list[str]:
        dropped: list[str] = []
        target = self._target(self.scratch_settings())
        try:
            for name in self.scratch.collections:
                assert name.startswith(self.scratch.prefix)  # never a live name
                dropped += target.purge(name)  # the name and every build, generation or alias drtool made of it
        finally:
            target.close()
        return dropped

    def _delete_ledgers(self) -> int:
        from drtool.adapters.s3 import BucketStore

        store = BucketStore(self.settings.s3)
        keys = [o["Key"] for o in store.list(self.scratch.ledger_prefix + "/")]
        for key in keys:
            store.delete(key)
        return len(keys)

    def _drop_database(self, name: str | None = None) -> bool:
        name = name or self.scratch.database
        assert name not in (self.settings.postgres.database, self.settings.postgres.plugin_database)
        with pga.connect(self.settings.postgres, database="postgres", autocommit=True) as admin:
            if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
                return False
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        return True

    # -- the whole run
    def run(self) -> DrillOutcome:
        dest, info = self.preflight()
        self.emit({"event": "drill.started", "drill_id": self.drill_id, "snapshot": info.id,
                   "scratch_database": self.scratch.database, "scratch_prefix": self.scratch.prefix})
        cleanup: dict[str, Any] = {}
        with _sigterm_as_interrupt():
            try:
                steps: list[tuple[str, Callable[[dict[str, Any]], None]]] = [
                    ("snapshot_check", lambda d: self.check_snapshot(dest, info, d)),
                    ("restore_database", lambda d: self.restore_database(dest, info, d)),
                    ("rebuild_index", lambda d: self.rebuild_index(dest, info, d)),
                    ("verify", lambda d: self.verify(info, d)),
                ]
                for number, (name, fn) in enumerate(steps, start=1):
                    if self.phases and self.phases[-1]["status"] != "ok":
                        self.phases.append({"name": name, "status": "skipped", "seconds": 0.0, "detail": {},
                                            "error": None})
                        continue
                    self._phase(name, fn)
                    self.emit({"event": "progress", "task": "drill", "unit": "phases", "done": number,
                               "total": len(steps)})
            except KeyboardInterrupt:
                log.error("drill %s interrupted: %s", self.drill_id,
                          "scratch targets kept (--keep)" if self.options.keep else "removing its scratch targets")
                raise
            finally:
                if not self.options.keep:
                    with _signals_deferred():
                        cleanup = self.cleanup()
        lag, lag_source = self.replication_lag(info)
        s = self.settings
        where = vector_stores.get(self.scratch.backend).location(s) if self.scratch.backend else None
        scratch = {"database": f"{s.postgres.host}:{s.postgres.port}/{self.scratch.database}",
                   "collections": ", ".join(self.scratch.collections) or "(none)",
                   "vector_store": f"{self.scratch.backend} {where}",
                   "rebuild_ledgers": self.scratch.ledger_prefix}
        if self.scratch.plugin_database:
            scratch["plugin_database"] = f"{s.postgres.host}:{s.postgres.port}/{self.scratch.plugin_database}"
        record = build_record(
            drill_id=self.drill_id, started_at=self.started, finished_at=datetime.now(UTC),
            snapshot={"id": info.id, "fence": info.meta.get("fence"), "encrypted": info.encrypted,
                      **(info.authentication.to_dict() if info.authentication else {"authenticated": False})},
            fence=info.fence, phases=self.phases, rto_slo=self.options.rto_slo, rpo_slo=self.options.rpo_slo,
            lag=lag, lag_source=lag_source, scratch=scratch, cleanup=cleanup, kept=self.options.keep,
            problems=self.problems, version=__version__)
        record = cast(dict[str, Any], redact_obj(record))  # reports and history leave this machine
        history_error = None
        try:
            earlier = load_history(dest, 30)
        except DrtoolError as exc:
            earlier, history_error = [], f"could not read the drill history: {exc}"
        history_key = None
        try:
            history_key = append_history(dest, record)
        except DrtoolError as exc:
            history_error = f"could not append to the drill history: {exc}"
            log.warning("%s", history_error)
        reports = write_reports(record, earlier, self.options.report_dir)
        return DrillOutcome(record=record, reports=reports, history_key=history_key, history_error=history_error)


def write_reports(record: dict[str, Any], history: list[dict[str, Any]], report_dir: Path) -> dict[str, str]:
    """drill-<id>.json, .md and .html in report_dir; each written to a temporary name and renamed into place."""
    report_dir.mkdir(parents=True, exist_ok=True)
    stem = f"drill-{record['drill_id']}"
    out: dict[str, str] = {}
    for ext, text in (("json", dr.render_json(record)), ("md", dr.render_markdown(record, history)),
                      ("html", dr.render_html(record, history))):
        path = report_dir / f"{stem}.{ext}"
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        out[ext] = str(path)
    return out


def run_drill(settings: Settings, options: DrillOptions, *, emit: Emit) -> DrillOutcome:
    return Drill(settings, options, emit=emit).run()


def drill_history(settings: Settings, limit: int) -> list[dict[str, Any]]:
    dest = open_destination(settings)
    try:
        return load_history(dest, limit)
    except NotFoundError:
        return []
