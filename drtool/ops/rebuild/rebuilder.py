"""`drtool rebuild-index`: re-embed the processed chunks in object storage into the collection Dify queries.

Per dataset: plan (chunk file, collection name, model and dimension checks: all before anything is written), build
(stream -> parse -> cache lookups -> embed on worker threads -> insert -> checkpoint), verify (count, self-retrieval
recall@k, Dify's own filtered search), switch (blue/green rename), then clear Dify's `vector_indexing_*` Redis key.
A checkpoint ledger in object storage records the last chunk-file line stored, so a run killed at any point is
finished by `--resume` without duplicates or gaps.

Rebuilder holds the run and its decisions (which datasets, resume or start over, where to build); the work of each
step is in its own module: build.py, gate.py, switch.py. Subclasses change the hooks (`plan`, `verify`, `_mine`,
`_sidecar`, `_run_lock`, `_finish_switch`): drtool/ops/rebuild/shards.py, drtool/ops/rebuild/annotations.py.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from drtool.config import Settings
from drtool.core import naming
from drtool.core.chunks import KIND_CHUNK, Chunk, CorruptStream, Rejection
from drtool.core.events import Emit
from drtool.core.ports import VectorStore
from drtool.core.streams import CountingRawStream
from drtool.errors import DrtoolError, ExitCode, NotFoundError, UsageError, VerificationFailed
from drtool.ops.lock import store_lock
from drtool.ops.rebuild.build import GateSample, stream_build
from drtool.ops.rebuild.dry_run import plan_dry_run
from drtool.ops.rebuild.gate import check_chunks, count_check, gate_sample, recall_check
from drtool.ops.rebuild.ledger import Ledger
from drtool.ops.rebuild.options import ChunkFileRefused, DatasetReport, Options
from drtool.ops.rebuild.plan import Plan, find_chunk_file, list_datasets, read_chunk_file, same_model
from drtool.ops.rebuild.progress import NoProgress, Progress
from drtool.ops.rebuild.sidecar import VectorSidecar
from drtool.ops.rebuild.switch import finish_switch, roll_back

log = logging.getLogger("drtool.rebuild")


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
        self.progress = progress or NoProgress()
        self.redis_url = redis_url
        self._dimension: int | None = None
        self.kept = GateSample()  # the last build's sample for its gate (drtool/ops/rebuild/gate.py)
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
        backend = self.target.backend if self.target is not None else "none"
        return store_lock(self.store, f"{self.rs.ledger_prefix.rstrip('/')}/{backend}/{plan.collection}.lock",
                          holder="rebuild-index", stale_after_s=self.settings.snapshot.lock_stale_after,
                          break_stale=self.options.break_stale_lock, emit=self.emit)

    def _mine(self, chunk: Chunk) -> bool:
        """Whether this run stores the chunk: every one, except in a shard worker (drtool/ops/rebuild/shards.py)."""
        return True

    def open_sidecar(self, plan: Plan, dim: int) -> VectorSidecar:
        sidecar = VectorSidecar(self.store, plan.dataset_id, self.embedder.model_id, dim)
        sidecar.open()
        return sidecar

    def dify_cache_for(self, plan: Plan) -> Any:
        if self.meta is None or not plan.dify_model or not plan.dify_provider:
            return None
        return self.meta.cache(plan.dify_model, plan.dify_provider)

    def chunk_stream(self, plan: Plan, report: DatasetReport, counter: list[CountingRawStream]
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
        plan_dry_run(self, plan, report)

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
        dify_cache = self.dify_cache_for(plan)
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
        """Store the file's chunks after `resume_line` into `build` (drtool/ops/rebuild/build.py), keeping the
        gate's sample in self.kept."""
        target = self.target
        assert target is not None
        sidecar = self.open_sidecar(plan, dim)
        self.kept = GateSample()
        stream_build(self.settings, target, self.embedder, self.progress, plan, report, ledger, build, sidecar,
                     dify_cache, resume_line, resuming=resuming, kept=self.kept, stream=self.chunk_stream,
                     mine=self._mine, reject=self._reject)

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
        assert self.target is not None
        finish_switch(self.target, plan, report, ledger, build, drop_old=self.options.drop_old,
                      redis_url=self.redis_url, emit=self.emit)

    # -- the gate (drtool/ops/rebuild/gate.py)
    def verify(self, plan: Plan, report: DatasetReport, build: str, dim: int, dify_cache: Any) -> dict[str, Any]:
        target = self.target
        assert target is not None
        count, expected, problems = self._count_check(report, build, "chunks")
        sample = self._gate_sample(plan, dim, dify_cache)
        return check_chunks(target, build, sample, max(1, self.rs.top_k), self.rs.min_recall_pct, count, expected,
                            problems)

    def _count_check(self, report: DatasetReport, build: str, noun: str) -> tuple[int, int, list[str]]:
        assert self.target is not None
        return count_check(self.target, report, build, noun)

    def _recall_check(self, sample: list[tuple[Chunk, list[float]]], own_hits: list[Any], k: int,
                      problems: list[str]) -> float:
        return recall_check(sample, own_hits, k, self.rs.min_recall_pct, problems)

    def _gate_sample(self, plan: Plan, dim: int, dify_cache: Any) -> list[tuple[Chunk, list[float]]]:
        assert self.target is not None
        return gate_sample(self.target, self.kept, self.embedder, dify_cache, dim, lambda: self.open_sidecar(plan, dim))

    def rollback(self, plan: Plan, report: DatasetReport) -> None:
        assert self.target is not None
        roll_back(self.target, plan, report, redis_url=self.redis_url, emit=self.emit)
