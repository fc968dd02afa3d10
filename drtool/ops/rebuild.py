"""`drtool rebuild-index`: re-embed the processed chunks in object storage into the collection Dify queries.

Per dataset: plan (chunk file, collection name, model and dimension checks: all before anything is written), build
(stream -> parse -> cache lookups -> embed on worker threads -> insert -> checkpoint), verify (count, self-retrieval
recall@k, Dify's own filtered search), switch (blue/green rename), then clear Dify's `vector_indexing_*` Redis key.
A checkpoint ledger in object storage records the last chunk-file line stored, so a run killed at any point is
finished by `--resume` without duplicates or gaps.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import random
import time
from collections.abc import Generator, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple, Protocol

from drtool.config import Settings
from drtool.core import naming
from drtool.core.chunks import (
    CHUNK_FILE_NAMES,
    KIND_CHUNK,
    Chunk,
    CorruptStream,
    Rejection,
    compression_for,
    iter_lines,
    parse_lines,
)
from drtool.core.concurrency import pipeline_unit
from drtool.core.events import Emit
from drtool.core.pipeline import batched, ordered_map
from drtool.core.ports import VectorStore
from drtool.core.streams import CountingRawStream
from drtool.errors import DrtoolError, ExitCode, NotFoundError, UsageError, VerificationFailed
from drtool.ops.vector_sidecar import VectorSidecar

log = logging.getLogger("drtool.rebuild")

LEDGER_VERSION = 1


@dataclass
class Options:
    datasets: tuple[str, ...] = ()
    all_datasets: bool = False
    resume: bool = False
    force: bool = False
    dry_run: bool = False
    rollback: bool = False
    drop_old: bool = False
    yes: bool = False
    verify: bool = True
    break_stale_lock: bool = False


@dataclass
class DatasetReport:
    dataset_id: str
    collection: str
    collection_source: str
    chunk_file: str | None = None
    mode: str = ""
    build_collection: str = ""
    lines_read: int = 0
    valid: int = 0
    rejected: int = 0
    rejections: list[str] = field(default_factory=list)
    resumed_from_line: int = 0
    skipped_done: int = 0
    truncated: int = 0
    key_collisions: int = 0  # chunks that share a store object id (Weaviate content UUIDs: same text)
    late_rejected: int = 0  # rejected after parsing (over the model's limit), counted in `rejected`
    cache_hits_sidecar: int = 0
    cache_hits_dify: int = 0
    dify_cache_refused: int = 0
    cache_vectors_ignored: int = 0  # cached vectors with NaN/inf, a wrong dimension or not unit norm: re-embedded
    embedded: int = 0
    inserted: int = 0
    deleted_on_resume: int = 0
    peak_chunks_in_flight: int = 0  # most chunks the build's pipeline held at once (rebuild.max_chunks_in_flight)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    verification: dict[str, Any] = field(default_factory=dict)
    plan: dict[str, Any] = field(default_factory=dict)  # --dry-run: what a run would do
    switch: str = ""
    redis_keys_deleted: list[str] = field(default_factory=list)
    status: str = "pending"
    error: str | None = None
    exit_code: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Progress(Protocol):
    def plan(self, datasets: int) -> None: ...  # more datasets to come (a run may plan twice: annotations)
    def start(self, dataset_id: str, total_bytes: int | None) -> None: ...
    def advance(self, bytes_read: int, report: DatasetReport) -> None: ...
    def stop(self) -> None: ...


class ChunkProgressEvents:
    """Progress as `progress` events, for a rebuild run inside another command (the drill), whose display
    (drtool/cli/progress.py) reads events: chunks stored, one task per dataset."""

    def __init__(self, emit: Emit, task: str) -> None:
        self.emit, self.task = emit, task
        self.datasets = self.index = 0

    def plan(self, datasets: int) -> None:
        self.datasets += datasets

    def start(self, dataset_id: str, total_bytes: int | None) -> None:
        self.index += 1

    def advance(self, bytes_read: int, report: DatasetReport) -> None:
        # One task per dataset: `done` is absolute within a task, and each dataset's count starts at 0.
        self.emit({"event": "progress", "task": f"{self.task} [{self.index}/{max(self.datasets, self.index)}]",
                   "unit": "chunks", "done": report.inserted + report.skipped_done, "total": None})

    def stop(self) -> None:
        pass


class _NoProgress:
    def plan(self, datasets: int) -> None:
        pass

    def start(self, dataset_id: str, total_bytes: int | None) -> None:
        pass

    def advance(self, bytes_read: int, report: DatasetReport) -> None:
        pass

    def stop(self) -> None:
        pass


class ChunkFileRefused(UsageError):
    """The chunk file cannot be used as it is (damaged, or more rejected lines than --max-rejects)."""


# --- ledger ------------------------------------------------------------------------------------------------------

class Ledger:
    """The checkpoint of one dataset's rebuild: one small JSON object, rewritten after every insert batch."""

    def __init__(self, store: Any, prefix: str, backend: str, collection: str) -> None:
        self.store = store
        self.key = f"{prefix.rstrip('/')}/{backend}/{collection}.json"
        self.data: dict[str, Any] = {}

    def load(self) -> dict[str, Any] | None:
        raw = self.store.get(self.key)
        if raw is None:
            return None
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            data = None
        if not isinstance(data, dict):
            raise UsageError(f"checkpoint ledger {self.store.url(self.key)} is not a JSON object",
                             hint="rerun with --force to start this dataset over")
        if data.get("version") != LEDGER_VERSION:
            raise UsageError(f"checkpoint ledger {self.store.url(self.key)} has version {data.get('version')}",
                             hint="rerun with --force to start this dataset over")
        self.data = data
        return data

    def save(self, **changes: Any) -> None:
        self.data.update(changes, version=LEDGER_VERSION, updated_at=time.time())
        self.store.put(self.key, json.dumps(self.data, sort_keys=True).encode(), content_type="application/json")

    def delete(self) -> None:
        self.store.delete(self.key)


# --- planning ------------------------------------------------------------------------------------------------------

@dataclass
class Plan:
    dataset_id: str
    collection: str
    collection_source: str
    chunk_key: str
    chunk_etag: str
    chunk_size: int
    dify_model: str | None = None
    dify_provider: str | None = None


class ChunkFile(NamedTuple):
    """A chunk or annotation file as its HEAD shows it; `metadata` is what export-chunks stored with it."""

    key: str
    etag: str
    size: int
    metadata: dict[str, str]


def head_chunk_file(store: Any, folder: str) -> ChunkFile | None:
    """The file a reader takes in `folder`: the first of CHUNK_FILE_NAMES that exists. One lookup for datasets and
    annotation files, so rebuild, verify and export agree on which name shadows which."""
    for name in CHUNK_FILE_NAMES:
        head = store.head(f"{folder}{name}")
        if head is not None:
            return ChunkFile(f"{folder}{name}", str(head.get("ETag", "")).strip('"'),
                             int(head.get("ContentLength", 0)), head.get("Metadata") or {})
    return None


def find_chunk_file(store: Any, dataset_id: str) -> tuple[str, str, int]:
    found = head_chunk_file(store, f"datasets/{dataset_id}/processed/")
    if found is not None:
        return found.key, found.etag, found.size
    raise NotFoundError(f"no chunk file for dataset {dataset_id} at {store.url(f'datasets/{dataset_id}/processed/')}"
                        f"({', '.join(CHUNK_FILE_NAMES)})",
                        hint="check --dataset and s3.bucket/s3.key_prefix, or run drtool export-chunks first",
                        system="object store")


def read_chunk_file(store: Any, key: str, *, dataset_id: str, kind: str,
                    counter: list[CountingRawStream] | None = None) -> Generator[Chunk | Rejection, None, None]:
    """Each line of the file as a Chunk or a Rejection, read as it streams; CorruptStream stops it. The one reader
    of rebuild and verify, so both judge a file alike. `counter` receives the byte-counting body (progress);
    close() the generator to close the body when stopping early."""
    body = CountingRawStream(store.open(key))
    if counter is not None:
        counter.append(body)
    source = store.url(key)
    try:
        yield from parse_lines(iter_lines(io.BufferedReader(body, 1 << 20), compression_for(key), source), source,
                               dataset_id=dataset_id, kind=kind)
    finally:
        body.close()


def split_dify_ids(folders: Iterable[str]) -> tuple[list[str], list[str]]:
    """(Dify ids, other names) among folder names from a listing: a planted `datasets/../` is not a dataset."""
    names = sorted(d for d in folders if d)
    return [n for n in names if naming.is_dify_id(n)], [n for n in names if not naming.is_dify_id(n)]


def list_datasets(store: Any) -> tuple[list[str], list[str]]:
    return split_dify_ids(store.list_folders("datasets/"))


class Rebuilder:
    # What the chunk files hold, and what a damaged one is called and raises (AnnotationRebuilder: annotations).
    chunk_kind = KIND_CHUNK
    file_label = "chunk file"
    corrupt_error: type[UsageError] = ChunkFileRefused
    listing_root = "datasets/"  # where --all lists one folder per dataset

    def __init__(self, settings: Settings, options: Options, *, store: Any, target: VectorStore | None, embedder: Any,
                 meta: Any | None, emit: Emit, progress: Progress | None = None, redis_url: str | None = None
                 ) -> None:
        self.settings = settings
        self.rs = settings.rebuild
        self.options = options
        self.store = store
        self.target = target
        self.embedder = embedder
        self.meta = meta
        self.emit = emit
        self.progress = progress or _NoProgress()
        self.redis_url = redis_url
        self._dimension: int | None = None
        self.refused_folders: list[str] = []  # listed folders that are not Dify ids (see split_dify_ids)

    # -- helpers
    def dataset_ids(self) -> list[str]:
        if self.options.all_datasets:
            ids, self.refused_folders = list_datasets(self.store)
            if not ids and not self.refused_folders:
                raise NotFoundError(f"no datasets under {self.store.url('datasets/')}",
                                    hint="check s3.bucket and s3.key_prefix", system="object store")
            return [i for i in ids if not self._skip_economy(i)]
        if not self.options.datasets:
            raise UsageError("say which datasets to rebuild", hint="pass --dataset ID (repeatable) or --all")
        return list(dict.fromkeys(self.options.datasets))

    def _refuse_folders(self) -> list[DatasetReport]:
        """A folder whose name is not a Dify id gets no collection, only a report and exit 3 (worth a look)."""
        out = []
        for name in self.refused_folders:
            where = self.store.url(self.listing_root)
            error = (f"folder {name!r} under {where} is not a Dify id (a UUID): left alone; remove it from the "
                     "bucket if nobody should have written it")
            self.emit({"event": "rebuild.dataset_refused", "dataset": name, "error": error})
            out.append(DatasetReport(name, "", "", status="refused", error=error, exit_code=int(ExitCode.DEGRADED)))
        return out

    def _skip_economy(self, dataset_id: str) -> bool:
        """export-chunks writes economy datasets too (their chunks feed the keyword index); --all leaves them."""
        row = self.meta.dataset(dataset_id) if self.meta is not None else None
        if row is None or row.indexing_technique != "economy":
            return False
        self.emit({"event": "rebuild.dataset_skipped", "dataset": dataset_id,
                   "reason": "economy (keyword-only) dataset: Dify keeps no vectors for it"})
        return True

    def plan(self, dataset_id: str) -> Plan:
        key, etag, size = find_chunk_file(self.store, dataset_id)
        prefix = self.settings.vector.index_prefix
        collection, source = naming.dify_collection_name(dataset_id, prefix), "naming rule (vector.index_prefix)"
        dify_model = dify_provider = None
        if self.meta is not None:
            row = self.meta.dataset(dataset_id)
            if row is None:
                raise NotFoundError(f"dataset {dataset_id} is not in Dify's datasets table",
                                    hint="check --dataset, or postgres.database", system="postgres")
            if row.indexing_technique == "economy":
                raise UsageError(f"dataset {dataset_id} is an economy (keyword-only) dataset: Dify keeps no vectors "
                                 "for it", hint="rebuild only high_quality datasets")
            kind, class_prefix = naming.from_index_struct(row.index_struct)
            tenant = naming.multi_tenant(row.index_struct)
            if tenant is not None:  # one tenant of a collection other datasets share: no blue/green of its own
                raise UsageError(f"dataset {dataset_id} is tenant {tenant!r} of the shared multi-tenant Weaviate "
                                 f"collection {class_prefix} (datasets.index_struct): drtool does not rebuild "
                                 "tenants", hint="see docs/rebuild-index.md, 'Weaviate multi-tenancy'")
            if class_prefix:
                collection, source = class_prefix, "datasets.index_struct"
            if kind and self.target is not None and kind != self.target.backend:
                raise UsageError(f"dataset {dataset_id} is indexed in {kind} (datasets.index_struct), but the "
                                 f"target is {self.target.backend}", hint="set vector.store to match")
            dify_model, dify_provider = row.embedding_model, row.embedding_provider
            if dify_model and not same_model(dify_model, self.embedder.model_name):
                raise UsageError(
                    f"dataset {dataset_id} was embedded with {dify_model!r}, but the configured model is "
                    f"{self.embedder.model_name!r}: Dify would query the index with a different model",
                    hint="set embedding.model (and embedding.provider) to the dataset's model")
        return Plan(dataset_id, collection, source, key, etag, size, dify_model, dify_provider)

    def dimension(self, plan: Plan) -> int:
        """The vector dimension without calling a model when anything else can tell."""
        if self._dimension is not None:
            return self._dimension
        dim = self.settings.embedding.dimensions or getattr(self.embedder, "_dimension", None)
        if not dim and self.target is not None and self.target.exists(plan.collection):
            dim = self.target.dimension(plan.collection)
        self._dimension = int(dim or self.embedder.dimension)
        return self._dimension

    def check_dimensions(self, plan: Plan, dim: int, dify_cache: Any) -> None:
        if self.target is not None and self.target.exists(plan.collection):
            existing = self.target.dimension(plan.collection)
            if existing is not None and existing != dim:
                raise UsageError(f"collection {plan.collection} holds vectors of dimension {existing}, the model "
                                 f"makes {dim}", hint="use the model the dataset was indexed with")
        if dify_cache is not None:
            cached = dify_cache.probe_dimension()
            if cached is not None and cached != dim:
                raise UsageError(f"Dify's embedding cache holds {cached}-d vectors for {plan.dify_model}, the model "
                                 f"makes {dim}-d vectors", hint="check embedding.model and embedding.dimensions")

    # -- the run
    def run(self) -> list[DatasetReport]:
        reports: list[DatasetReport] = []
        dataset_ids = self.dataset_ids()
        reports.extend(self._refuse_folders())
        self.progress.plan(len(dataset_ids))
        for dataset_id in dataset_ids:
            try:
                plan = self.plan(dataset_id)
            except DrtoolError as exc:
                report = DatasetReport(dataset_id, "", "", status="failed", error=str(exc),
                                       exit_code=int(exc.exit_code))
                self.emit({"event": "rebuild.dataset_failed", "dataset": dataset_id, "error": str(exc),
                           "exit_code": int(exc.exit_code)})
                reports.append(report)
                continue
            report = DatasetReport(dataset_id, plan.collection, plan.collection_source,
                                   chunk_file=self.store.url(plan.chunk_key))
            reports.append(report)
            try:
                if self.options.dry_run:
                    self.dry_run(plan, report)
                else:
                    with self._run_lock(plan):
                        if self.options.rollback:
                            self.rollback(plan, report)
                        else:
                            self.rebuild(plan, report)
            except DrtoolError as exc:
                report.status, report.error, report.exit_code = "failed", str(exc), int(exc.exit_code)
                self.emit({"event": "rebuild.dataset_failed", "dataset": dataset_id, "error": str(exc),
                           "exit_code": int(exc.exit_code)})
            else:
                if report.rejected and not report.exit_code:
                    # Done, but without the lines --max-rejects let through: worth a look (docs/exit-codes.md).
                    report.exit_code = int(ExitCode.DEGRADED)
            finally:
                self.progress.stop()
        return reports

    def _run_lock(self, plan: Plan) -> Any:
        """One run per target collection: a second rebuild (or rollback) of it exits 11 instead of interleaving
        its writes; kept next to the checkpoint ledger."""
        from drtool.ops.lock import store_lock

        backend = self.target.backend if self.target is not None else "none"
        return store_lock(self.store, f"{self.rs.ledger_prefix.rstrip('/')}/{backend}/{plan.collection}.lock",
                          holder="rebuild-index", stale_after_s=self.settings.snapshot.lock_stale_after,
                          break_stale=self.options.break_stale_lock, emit=self.emit)

    def _mine(self, chunk: Chunk) -> bool:
        """Whether this run stores the chunk: every one, except in a shard worker (drtool/ops/rebuild_shards.py)."""
        return True

    def _sidecar(self, plan: Plan, dim: int) -> VectorSidecar:
        sidecar = VectorSidecar(self.store, plan.dataset_id, self.embedder.model_id, dim)
        sidecar.open()
        return sidecar

    def _dify_cache(self, plan: Plan) -> Any:
        if self.meta is None or not plan.dify_model or not plan.dify_provider:
            return None
        return self.meta.cache(plan.dify_model, plan.dify_provider)

    def _stream(self, plan: Plan, report: DatasetReport, counter: list[CountingRawStream]
                ) -> Iterator[Chunk]:
        """Valid chunks of the file; rejections are recorded and bounded by max_rejects."""
        items = read_chunk_file(self.store, plan.chunk_key, dataset_id=plan.dataset_id, kind=self.chunk_kind,
                                counter=counter)
        try:
            for item in items:
                report.lines_read = item.line
                if isinstance(item, Rejection):
                    self._reject(report, item)
                    continue
                report.valid += 1
                yield item
        except CorruptStream as exc:
            raise self.corrupt_error(f"{exc}", hint=f"the {self.file_label} is damaged: restore it from a snapshot "
                                     "or re-export it", system="object store") from None
        finally:
            items.close()

    def _reject(self, report: DatasetReport, rejection: Rejection) -> None:
        report.rejected += 1
        if len(report.rejections) < 100:
            report.rejections.append(str(rejection))
        log.warning("rejected %s", rejection)
        self.emit({"event": "rebuild.chunk_rejected", "dataset": report.dataset_id, "source": rejection.source,
                   "line": rejection.line, "reason": rejection.reason})
        if report.rejected > self.rs.max_rejects:
            raise ChunkFileRefused(f"dataset {report.dataset_id}: {report.rejected} rejected line(s), more than "
                             f"--max-rejects {self.rs.max_rejects}; first: {report.rejections[0]}",
                             hint="fix the chunk file, or raise --max-rejects to skip bad lines")

    def dry_run(self, plan: Plan, report: DatasetReport) -> None:
        dim = self.dimension(plan)
        dify_cache = self._dify_cache(plan)
        self.check_dimensions(plan, dim, dify_cache)
        sidecar = self._sidecar(plan, dim)
        report.mode = "dry-run"
        missing = 0
        for batch in batched(self._stream(plan, report, []), 256):
            todo = list(batch)
            if dify_cache is not None:
                hits = dify_cache.lookup([c.text for c in todo], dim)
                report.cache_hits_dify += len(hits)
                report.cache_vectors_ignored = dify_cache.ignored
                todo = [c for i, c in enumerate(todo) if i not in hits]
            misses = [c for c in todo if not sidecar.contains(hashlib.sha256(c.text.encode()).digest())]
            report.cache_hits_sidecar += len(todo) - len(misses)
            missing += len(misses)
        exists = self.target.exists(plan.collection) if self.target is not None else False
        bs = max(1, min(int(getattr(self.embedder, "max_call_items", self.settings.embedding.batch_size)),
                        self.rs.batch_size))
        report.plan = {"to_embed": missing, "model_calls": -(-missing // bs),
                               "collection_exists": exists,
                               "would": "build beside it and switch (blue/green)" if exists
                                        else "build beside the name, rename it in after the gate"
                                        if self.target is not None and self.target.switch_is_rename
                                        else "build in place"}
        report.status = "planned"
        self.emit({"event": "rebuild.dataset_planned", **report.to_dict()})

    def rebuild(self, plan: Plan, report: DatasetReport) -> None:
        assert self.target is not None
        target = self.target
        ledger = Ledger(self.store, self.rs.ledger_prefix, target.backend, plan.collection)
        try:
            state = ledger.load()
        except UsageError:
            if not self.options.force or self.options.resume:
                raise
            ledger.delete()  # unreadable, so nothing to resume from: --force starts over as its hint promises
            state = None
        timings = report.stage_seconds
        t0 = time.monotonic()
        dim = self.dimension(plan)
        dify_cache = self._dify_cache(plan)
        resume_line = 0
        if state is not None:
            if not (self.options.resume or self.options.force):
                raise UsageError(f"an interrupted rebuild of {plan.collection} has a checkpoint at "
                                 f"{self.store.url(ledger.key)} (line {state.get('lines_done', 0)})",
                                 hint="rerun with --resume to finish it, or --force to start over")
            if self.options.force and not self.options.resume:
                build = state.get("build")
                partial = build != plan.collection or state.get("mode") == "in-place"
                if build and partial and target.exists(build):
                    target.drop(build)
                ledger.delete()
                state, ledger.data = None, {}
        if state is not None:
            for key, want in (("chunk_key", plan.chunk_key), ("chunk_etag", plan.chunk_etag),
                              ("model_id", self.embedder.model_id), ("dimension", dim)):
                if state.get(key) != want:
                    raise UsageError(f"cannot resume {plan.collection}: {key} changed since the checkpoint "
                                     f"({state.get(key)!r} -> {want!r})",
                                     hint="rerun with --force to start this dataset over")
            mode, build = state["mode"], state["build"]
            if state.get("phase") == "switching":
                self._finish_switch(plan, report, ledger, build)
                return
            resume_line = int(state.get("lines_done", 0))
            if not target.exists(build):
                if resume_line or state.get("phase") != "building":
                    raise UsageError(f"cannot resume: collection {build} named in the checkpoint is gone",
                                     hint="rerun with --force to start this dataset over")
                target.create(build, dim)  # killed between the first checkpoint and the collection's creation
            report.resumed_from_line = resume_line
            self.emit({"event": "rebuild.resumed", "dataset": plan.dataset_id, "collection": build,
                       "line": resume_line})
        else:
            self.check_dimensions(plan, dim, dify_cache)
            exists = target.exists(plan.collection)
            if exists and not self.options.yes:
                needed = target.confirm_needed(plan.collection)
                if needed:
                    raise UsageError(needed, hint="add --yes to confirm, or rebuild into another vector store")
            # Beside the name Dify queries also when nothing is there yet (the disaster case), wherever the switch
            # is a rename: Dify never sees a half-built or ungated collection, and a failed gate leaves the name as
            # empty as it was. Weaviate's copy switch would re-index every object: built in place there.
            beside = exists or target.switches_by_alias or target.switch_is_rename
            build = target.build_name(plan.collection) if beside else plan.collection
            mode = ("blue-green" if exists else "new alias" if target.switches_by_alias
                    else "new" if beside else "in-place")
            if mode == "blue-green" and target.exists(build):
                if target.count(build) > 0 and not self.options.force:
                    raise UsageError(f"collection {build} already holds vectors and no checkpoint explains them",
                                     hint="rerun with --force to replace it")
                target.drop(build)
            ledger.data = {"dataset_id": plan.dataset_id, "collection": plan.collection, "build": build,
                           "mode": mode, "chunk_key": plan.chunk_key, "chunk_etag": plan.chunk_etag,
                           "model_id": self.embedder.model_id, "dimension": dim, "lines_done": 0,
                           "phase": "building", "started_at": time.time()}
            ledger.save()  # before the collection exists: a kill right after leaves a ledger, never an orphan
            target.create(build, dim)
        report.mode, report.build_collection = mode, build
        self.emit({"event": "rebuild.dataset_started", "dataset": plan.dataset_id, "collection": plan.collection,
                   "build": build, "mode": mode, "collection_source": plan.collection_source})
        timings["plan"] = time.monotonic() - t0

        # Also after a kill during verification ("built"): re-reading the file (every line already stored) gives
        # the valid count and the verification sample again.
        try:
            self._build(plan, report, ledger, build, dim, dify_cache, resume_line, resuming=state is not None)
        except ChunkFileRefused:
            # The file will not pass as it is: keep no collection (in-place: the very name Dify queries) and no
            # checkpoint that would make the next run, with a fixed file, demand --resume or --force.
            if target.exists(build):
                target.drop(build)
            ledger.delete()
            raise
        self._verify_and_switch(plan, report, ledger, build, dim, dify_cache)

    def _build(self, plan: Plan, report: DatasetReport, ledger: Ledger, build: str, dim: int, dify_cache: Any,
               resume_line: int, *, resuming: bool) -> None:
        target = self.target
        assert target is not None
        timings = report.stage_seconds
        sidecar = self._sidecar(plan, dim)
        sample_size = max(0, self.rs.sample)
        rng = random.Random(plan.dataset_id)
        self.sample: list[tuple[Chunk, list[float] | None]] = []
        seen_valid = 0
        counter: list[CountingRawStream] = []
        self.progress.start(plan.dataset_id, plan.chunk_size or None)
        t_lookup = t_wait = t_insert = 0.0
        # A killed run may have stored the batch after its checkpoint, also before its first checkpoint (line 0).
        first_after_resume = resuming
        base_late = int(ledger.data.get("late_rejected", 0)) if resume_line else 0

        keys_seen: set[bytes] = set()
        self._collided: set[bytes] = set()

        def note_key(chunk: Chunk) -> None:
            key = target.object_key(chunk.text, chunk.vector_metadata())
            if key is None:
                return
            digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
            if digest in keys_seen:
                report.key_collisions += 1
                self._collided.add(digest)
            keys_seen.add(digest)

        def sample_offer(chunk: Chunk, vector: list[float] | None) -> None:
            nonlocal seen_valid
            seen_valid += 1
            if len(self.sample) < sample_size:
                self.sample.append((chunk, vector))
            else:
                j = rng.randrange(seen_valid)
                if j < sample_size:
                    self.sample[j] = (chunk, vector)

        def prepared() -> Iterator[dict[str, Any]]:
            """Batches with cache hits filled in (main thread), ready for the embedding workers."""
            nonlocal t_lookup
            todo: list[Chunk] = []
            for chunk in self._stream(plan, report, counter):
                note_key(chunk)
                if not self._mine(chunk):
                    continue  # another shard worker's (drtool/ops/rebuild_shards.py)
                if chunk.line <= resume_line:
                    report.skipped_done += 1
                    sample_offer(chunk, None)
                    continue
                todo.append(chunk)
                if len(todo) >= unit:
                    t = time.monotonic()
                    ready = self._lookup(todo, sidecar, dify_cache, report)
                    t_lookup += time.monotonic() - t
                    hold(len(ready["chunks"]))
                    yield ready
                    todo = []
            if todo:
                t = time.monotonic()
                ready = self._lookup(todo, sidecar, dify_cache, report)
                t_lookup += time.monotonic() - t
                hold(len(ready["chunks"]))
                yield ready

        held = 0  # chunks in units made and not yet stored: what the pipeline holds, with their vectors

        def hold(n: int) -> None:
            nonlocal held
            held += n
            report.peak_chunks_in_flight = max(report.peak_chunks_in_flight, held)

        workers = int(getattr(self.embedder, "concurrency", 1))
        # workers + 1 units in flight keep every worker busy; they shrink to hold rebuild.max_chunks_in_flight.
        unit = pipeline_unit(self.rs.batch_size, workers, self.rs.max_chunks_in_flight,
                             int(getattr(self.embedder, "max_call_items", self.settings.embedding.batch_size)))
        t_start = time.monotonic()
        cpu_start = time.process_time()  # all threads: robust to other load on the machine, unlike wall time
        t_prev = t_start
        try:
            for batch, vectors in ordered_map(self._embed_missing, prepared(), workers=workers,
                                              max_in_flight=workers + 1):
                t_wait += time.monotonic() - t_prev
                t = time.monotonic()
                chunks: list[Chunk] = batch["chunks"]
                if first_after_resume:
                    # The batch after the checkpoint may have been stored by the killed run: delete it first.
                    report.deleted_on_resume += target.delete_doc_ids(build, [c.id for c in chunks])
                    first_after_resume = False
                rows = [(c.text, c.vector_metadata(), v) for c, v in zip(chunks, vectors, strict=True)]
                report.inserted += target.insert(build, rows)
                for i in batch["embedded_positions"]:
                    sidecar.add(batch["digests"][i], vectors[i])
                for c, v in zip(chunks, vectors, strict=True):
                    sample_offer(c, v)
                ledger.save(lines_done=chunks[-1].line, inserted=ledger.data.get("inserted", 0) + len(rows),
                            late_rejected=base_late + report.late_rejected)
                t_insert += time.monotonic() - t
                self.progress.advance(counter[0].bytes if counter else 0, report)
                hold(-len(chunks))
                del batch, vectors, rows, chunks  # stored: not kept alive while the next unit is made
                t_prev = time.monotonic()
        finally:
            sidecar.flush()
        # Over-limit rejections before the checkpoint were made by the killed run; count them once.
        report.valid -= base_late
        report.rejected += base_late
        report.late_rejected += base_late
        t = time.monotonic()
        target.finish(build)
        ledger.save(phase="built", lines_done=report.lines_read)
        if report.cache_vectors_ignored:
            log.warning("dataset %s: %d cached vector(s) held NaN/inf, a wrong dimension or a norm far from 1; "
                        "they were ignored and re-embedded", plan.dataset_id, report.cache_vectors_ignored)
        # read_parse_lookup counts cache lookups and over-limit checks (reading and parsing are in embed_wait).
        timings.update(read_parse_lookup=round(t_lookup, 3), embed_wait=round(t_wait, 3),
                       insert_checkpoint=round(t_insert, 3), finish=round(time.monotonic() - t, 3),
                       build_total=round(time.monotonic() - t_start, 3),
                       build_cpu=round(time.process_time() - cpu_start, 3))

    def _lookup(self, chunks: list[Chunk], sidecar: VectorSidecar, dify_cache: Any, report: DatasetReport
                ) -> dict[str, Any]:
        digests = [hashlib.sha256(c.text.encode("utf-8")).digest() for c in chunks]
        vectors: list[list[float] | None] = [None] * len(chunks)
        if dify_cache is not None:  # Dify's own cache first: the very vectors Dify stored
            for i, v in dify_cache.lookup([c.text for c in chunks], sidecar.dimension).items():
                vectors[i] = v
            report.cache_hits_dify += sum(v is not None for v in vectors)
            report.dify_cache_refused = dify_cache.refused
        missing = [i for i, v in enumerate(vectors) if v is None]
        if missing:
            hits = sidecar.lookup([digests[i] for i in missing])
            for j, v in hits.items():
                vectors[missing[j]] = v
            report.cache_hits_sidecar += len(hits)
            missing = [i for i, v in enumerate(vectors) if v is None]
        report.cache_vectors_ignored = sidecar.ignored + (dify_cache.ignored if dify_cache is not None else 0)
        texts: list[str] = []
        if missing:
            over = self.embedder.over_limit([chunks[i].text for i in missing])
            keep: list[int] = []
            for i, too_long in zip(missing, over, strict=True):
                if too_long:
                    if self.rs.over_limit == "reject":
                        report.valid -= 1
                        report.late_rejected += 1
                        self._reject(report, Rejection(report.chunk_file or "", chunks[i].line,
                                                       "text is longer than the model accepts "
                                                       "(--over-limit reject)"))
                        continue
                    report.truncated += 1
                keep.append(i)
            if len(keep) != len(missing):
                dropped = set(missing) - set(keep)
                chunks = [c for i, c in enumerate(chunks) if i not in dropped]
                digests = [d for i, d in enumerate(digests) if i not in dropped]
                vectors = [v for i, v in enumerate(vectors) if i not in dropped]
                missing = [i for i, v in enumerate(vectors) if v is None]
            texts = [self.embedder.truncate(chunks[i].text) for i in missing]
            report.embedded += len(texts)
        return {"chunks": chunks, "digests": digests, "vectors": vectors, "embedded_positions": missing,
                "texts": texts}

    def _embed_missing(self, batch: dict[str, Any]) -> list[list[float]]:
        vectors: list[list[float] | None] = list(batch["vectors"])
        positions: list[int] = batch["embedded_positions"]
        if positions:
            # An HTTP endpoint gets embedding.batch_size texts per request; the local model gets the whole unit
            # in one call, so sentence-transformers can sort it by length (padding doubled the CPU time otherwise).
            size = max(1, int(getattr(self.embedder, "max_call_items", self.settings.embedding.batch_size)))
            out: list[list[float]] = []
            for start in range(0, len(positions), size):
                out.extend(self.embedder.embed(batch["texts"][start:start + size]))
            for i, v in zip(positions, out, strict=True):
                vectors[i] = v
        result = [v for v in vectors if v is not None]
        if len(result) != len(vectors):
            raise RuntimeError("embedding returned fewer vectors than asked")
        return result

    def _verify_and_switch(self, plan: Plan, report: DatasetReport, ledger: Ledger, build: str, dim: int,
                           dify_cache: Any) -> None:
        target = self.target
        assert target is not None
        t = time.monotonic()
        if self.options.verify:
            report.verification = self.verify(plan, report, build, dim, dify_cache)
            self.emit({"event": "rebuild.verified", "dataset": plan.dataset_id, **report.verification})
            if not report.verification["passed"]:
                report.stage_seconds["verify"] = round(time.monotonic() - t, 3)
                raise VerificationFailed(
                    f"verification of {build} failed: {'; '.join(report.verification['problems'])}",
                    hint=f"nothing was switched; {build} is kept for inspection; rerun with --force to rebuild")
        report.stage_seconds["verify"] = round(time.monotonic() - t, 3)
        self._finish_switch(plan, report, ledger, build)

    def _finish_switch(self, plan: Plan, report: DatasetReport, ledger: Ledger, build: str) -> None:
        target = self.target
        assert target is not None
        collection = plan.collection
        if build == collection:  # a checkpoint of a version that built in place when nothing was there
            report.switch = f"built in place as {collection} (no previous collection)"
            target.load(collection)
        elif target.switch_is_rename and not target.exists(build) and target.exists(collection):
            # Killed after the rename and before the checkpoint was deleted: renaming again would move the new
            # collection aside and leave the name empty.
            report.switch = f"{build} -> {collection} (done before the interruption)"
            target.load(collection)
        else:
            ledger.save(phase="switching")
            report.switch = target.switch(collection, build, drop_old=self.options.drop_old)
        ledger.delete()
        report.redis_keys_deleted = self._clear_redis(collection)
        report.status = "rebuilt"
        self.emit({"event": "rebuild.switched", "dataset": plan.dataset_id, "switch": report.switch,
                   "redis_keys_deleted": report.redis_keys_deleted})

    def _clear_redis(self, collection: str) -> list[str]:
        if not self.redis_url:
            return []
        from drtool.adapters.redis_cache import delete_indexing_keys

        return delete_indexing_keys(self.redis_url, [collection])

    def verify(self, plan: Plan, report: DatasetReport, build: str, dim: int, dify_cache: Any) -> dict[str, Any]:
        target = self.target
        assert target is not None
        count, expected, problems = self._count_check(report, build, "chunks")
        sample = self._gate_sample(plan, dim, dify_cache)
        k = max(1, self.rs.top_k)
        dify_ok = 0
        dify_filter = ""
        failures: list[str] = []
        # The batch reads let a store answer the whole sample at once (Milvus: a server's Strong reads each wait
        # ~0.2 s); a store that cannot, answers them one by one (drtool.core.ports.VectorStoreDefaults).
        own_hits: list[Any] = []
        dify_hits: list[Any] = []
        if sample:
            vectors = [v for _, v in sample]
            own_hits = target.search_batch(build, vectors, k)
            dify_hits = target.dify_search_batch(build, vectors, k, [c.document_id for c, _ in sample])
        for i, (chunk, _) in enumerate(sample):
            found_hits, dify_filter = dify_hits[i]
            match = next((r for r in found_hits if (r["metadata"] or {}).get("doc_id") == chunk.id), None)
            want = chunk.vector_metadata()
            why = ""
            if match is None:
                why = "not returned"
            elif match["text"] != chunk.text:
                why = "text differs"
            elif any(str((match["metadata"] or {}).get(key)) != str(want[key])  # Weaviate may type a uuid
                     for key in ("doc_id", "doc_hash", "document_id", "dataset_id")):
                why = "metadata differs"
            elif any(str((r["metadata"] or {}).get("document_id")) != chunk.document_id for r in found_hits):
                why = "the document_id filter let other documents through"
            if not why:
                dify_ok += 1
            elif len(failures) < 5:
                failures.append(f"{chunk.id} (line {chunk.line}): {why}")
        n = len(sample)
        recall = self._recall_check(sample, own_hits, k, problems)
        if dify_ok != n:
            problems.append(f"Dify's query path returned {dify_ok}/{n} sampled chunks with their metadata "
                            f"(missing: {', '.join(failures)})")
        return {"passed": not problems, "count": count, "expected": expected, "sample": n,
                f"recall_at_{k}": round(recall, 4), "dify_query_ok": dify_ok, "dify_filter": dify_filter,
                "problems": problems}

    def _count_check(self, report: DatasetReport, build: str, noun: str) -> tuple[int, int, list[str]]:
        """The gate's first test: (count, expected, problems). Chunks that share a store object (key_collisions)
        are one object, so the build holds that many fewer than the file's valid lines."""
        assert self.target is not None
        expected = report.valid - report.key_collisions
        count = self.target.count(build)
        return count, expected, [f"count {count} != {expected} valid {noun}"] if count != expected else []

    def _recall_check(self, sample: list[tuple[Chunk, list[float]]], own_hits: list[Any], k: int,
                      problems: list[str]) -> float:
        """Self-retrieval recall@k: the share of sampled chunks whose own vector finds them (by doc_id) in its k
        nearest; below rebuild.min_recall_pct the index is not what the file says, and a problem is added."""
        hits = sum(1 for (chunk, _), results in zip(sample, own_hits, strict=True)
                   if any((r["metadata"] or {}).get("doc_id") == chunk.id for r in results))
        recall = hits / len(sample) if sample else 1.0
        minimum = self.rs.min_recall_pct / 100
        if recall < minimum:
            problems.append(f"self-retrieval recall@{k} {recall:.3f} < {minimum:.2f}")
        return recall

    def _gate_sample(self, plan: Plan, dim: int, dify_cache: Any) -> list[tuple[Chunk, list[float]]]:
        """The gate's sample, each chunk with its vector: the build's when it embedded it, else Dify's cache, the
        sidecar (opened only when still needed), the model. Chunks that share a store object are left out: the
        object carries one of their ids, so the others could never find themselves."""
        target = self.target
        assert target is not None
        collided: set[bytes] = getattr(self, "_collided", set())

        def shared(chunk: Chunk) -> bool:
            key = target.object_key(chunk.text, chunk.vector_metadata())
            return key is not None and hashlib.blake2b(key.encode(), digest_size=8).digest() in collided

        sample = [item for item in getattr(self, "sample", []) if not shared(item[0])]
        need = [i for i, (_, v) in enumerate(sample) if v is None]
        texts = [sample[i][0].text for i in need]
        found: dict[int, list[float]] = dict(dify_cache.lookup(texts, dim)) if need and dify_cache is not None else {}
        rest = [j for j in range(len(need)) if j not in found]
        if rest:
            hits = self._sidecar(plan, dim).lookup([hashlib.sha256(texts[j].encode()).digest() for j in rest])
            for j, v in hits.items():
                found[rest[j]] = v
        rest = [j for j in range(len(need)) if j not in found]
        if rest:
            for j, v in zip(rest, self.embedder.embed([self.embedder.truncate(texts[j]) for j in rest]), strict=True):
                found[j] = v
        slot = {i: j for j, i in enumerate(need)}
        return [(chunk, v if v is not None else found[slot[i]]) for i, (chunk, v) in enumerate(sample)]

    def rollback(self, plan: Plan, report: DatasetReport) -> None:
        assert self.target is not None
        target = self.target
        collection = plan.collection
        report.switch = target.rollback(collection)
        report.mode = "rollback"
        report.redis_keys_deleted = self._clear_redis(collection)
        report.status = "rolled back"
        self.emit({"event": "rebuild.rolled_back", "dataset": plan.dataset_id, "switch": report.switch})


def same_model(dify_model: str, ours: str) -> bool:
    a, b = dify_model.strip().lower(), ours.strip().lower()
    return a == b or a.endswith("/" + b) or b.endswith("/" + a)


def overall_exit_code(reports: list[DatasetReport]) -> int:
    codes = [r.exit_code for r in reports if r.exit_code]
    if not codes:
        return int(ExitCode.OK)
    return max(codes, key=lambda c: (c == ExitCode.CRITICAL, c))  # a failed gate outranks the rest
