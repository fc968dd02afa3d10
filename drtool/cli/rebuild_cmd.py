"""`drtool rebuild-index`: rebuild the vector index Dify queries from the processed chunks in object storage."""

from __future__ import annotations

import time
from typing import Any

import click

from drtool.cli.app import App, Outcome, conclude, global_options, metrics_option, pass_app
from drtool.cli.progress import LogDisplay, RichDisplay, on_terminal
from drtool.core.metrics import Metric
from drtool.core.ports import VECTOR_STORES
from drtool.core.terminal import one_line
from drtool.errors import UsageError
from drtool.log import LOGGER_NAME
from drtool.ops.rebuild.options import DatasetReport, Options, overall_exit_code
from drtool.ops.rebuild.rebuilder import Rebuilder
from drtool.wiring import RebuildParts, dify_reader, rebuild_parts


class _Work:
    """What a rebuild's progress counts: chunks stored (inserted, or already there on a resume), against the
    dataset's chunk count estimated from the bytes read so far, since a chunk file's line count is known only at
    its end. Bytes read run ahead of embedding; chunks stored do not. Implements
    drtool.ops.rebuild.progress.Progress (plan, start, advance, stop) and shows the counts on one of the shared
    displays (drtool/cli/progress.py), one task per dataset."""

    def __init__(self, display: LogDisplay) -> None:
        self.display = display
        self.datasets = 0
        self.index = 0
        self.dataset_id = ""
        self.total_bytes: int | None = None
        self.dataset_started = 0.0
        self.done = 0
        self.estimate: int | None = None
        self.rate = 0.0
        self.hits = 0

    def plan(self, datasets: int) -> None:
        self.datasets += datasets

    def start(self, dataset_id: str, total_bytes: int | None) -> None:
        if self.dataset_id:  # the previous dataset's last line is written while its counts are still here
            self.display.end_task()
        self.index += 1
        self.dataset_id, self.total_bytes = dataset_id, total_bytes
        self.dataset_started, self.done, self.estimate, self.rate, self.hits = time.monotonic(), 0, None, 0.0, 0
        self._show()

    def advance(self, bytes_read: int, report: DatasetReport) -> None:
        self.done = report.inserted + report.skipped_done
        self.hits = report.cache_hits_sidecar + report.cache_hits_dify
        self.rate = report.inserted / max(1e-6, time.monotonic() - self.dataset_started)  # this run's inserts
        lines = report.lines_read
        if self.total_bytes and bytes_read and lines:
            self.estimate = max(lines, self.done, round(lines * self.total_bytes / bytes_read))
        self._show()

    def stop(self) -> None:
        """The datasets' part of the run ended: the display ends the last dataset's task (a run may start again,
        for the annotation collections, and then gets a fresh task)."""
        if self.dataset_id:
            self.display.stop()
            self.dataset_id = ""

    @property
    def label(self) -> str:
        # The display escapes it (one_line): a dataset id may come from a bucket listing.
        return f"[{self.index}/{max(self.datasets, self.index)}] {self.dataset_id[:13]}"

    def eta_seconds(self) -> float | None:
        if self.estimate is None or self.rate <= 0:
            return None
        return max(0.0, (self.estimate - self.done) / self.rate)

    def _show(self) -> None:
        self.display.update(self.label, "chunks", self.done, total=self.estimate, also={"cache hits": self.hits},
                            approximate=True, rate=self.rate)


class _RichProgress(_Work):
    """The bar on a terminal: datasets, chunks stored of the estimate, chunks/s, cache hits, ETA."""

    def __init__(self) -> None:
        super().__init__(RichDisplay("rebuild-index", beat=False))

    @property
    def _progress(self) -> Any:
        """The rich Progress of the bar (tests render its columns)."""
        return self.display._progress  # type: ignore[attr-defined]


class _RebuildLog(LogDisplay):
    """`rebuild.progress` records, with the fields they have always had (docs/json.md)."""

    def __init__(self, work: _Work | None = None, every: float | None = None) -> None:
        super().__init__("rebuild-index", every, logger=f"{LOGGER_NAME}.rebuild", beat=False)
        self.work = work

    def record(self, now: float, *, final: bool = False) -> tuple[str, dict[str, Any]]:
        w = self.work
        if w is None:
            return super().record(now, final=final)
        of = f"/~{w.estimate}" if w.estimate is not None and not final else ""
        eta = w.eta_seconds()
        left = f", ~{eta:.0f} s left" if eta is not None and not final else ""
        text = f"rebuild {one_line(w.label)}: {w.done}{of} chunks stored, {w.rate:.0f}/s, cache hits {w.hits}{left}"
        return text, {"event": "rebuild.progress", "dataset": w.dataset_id, "chunks_stored": w.done,
                      "chunks_estimated": w.estimate, "rate_per_second": round(w.rate, 1)}


class _LogProgress(_Work):
    """Off a terminal (cron, Kubernetes, journald): one `rebuild.progress` line every `every` seconds
    (DRTOOL_PROGRESS_SECONDS, default 30), so a three-hour rebuild shows life, and a dataset's last count when lines
    were logged for it. Silenced by -q with the rest of the progress; never on stdout."""

    def __init__(self, every: float | None = None) -> None:
        display = _RebuildLog(every=every)
        super().__init__(display)
        display.work = self


def _build_components(app: App, settings: Any, *, need_target: bool) -> RebuildParts:
    settings.require_s3()
    return rebuild_parts(settings, need_target=need_target)


@click.command("rebuild-index")
@global_options
@click.option("--dataset", "datasets", multiple=True, metavar="ID", help="Dataset to rebuild (repeatable).")
@click.option("--all", "all_datasets", is_flag=True,
              help="Every dataset with a chunk file under datasets/ (with Postgres: economy datasets skipped).")
@click.option("--annotations", is_flag=True,
              help="Also (or, alone, only) rebuild the annotation-reply collection of every app with annotation "
                   "reply enabled (with Postgres; otherwise every file under annotations/). Not part of --all.")
@click.option("--app", "apps", multiple=True, metavar="ID",
              help="App whose annotation collection to rebuild (repeatable; implies --annotations).")
@click.option("--bucket", help="Bucket holding the chunk files (s3.bucket).")
@click.option("--target", type=click.Choice(VECTOR_STORES), help="Vector store to write (vector.store).")
@click.option("--milvus-uri", help="Milvus server URI or Milvus Lite file (milvus.uri).")
@click.option("--weaviate-endpoint", help="Weaviate HTTP endpoint (weaviate.endpoint).")
@click.option("--weaviate-grpc", help="Weaviate gRPC host:port (weaviate.grpc_endpoint).")
@click.option("--weaviate-uuid", type=click.Choice(["content", "doc-id"]),
              help="Object UUIDs the target Dify writes: content = uuid5(URL, text), every Dify release up to "
                   "1.17.x; doc-id = the chunk id (index_node_id), Dify after PR #41915 (main, Sept 2026) and "
                   "lts/1.13.x after its backport #41961 (weaviate.uuid_scheme, default content).")
@click.option("--provider", type=click.Choice(["local", "openai"]), help="Embedding provider (embedding.provider).")
@click.option("--model", help="Embedding model name or local path (embedding.model).")
@click.option("--base-url", help="OpenAI-compatible base URL, e.g. http://host:8000/v1 (embedding.base_url).")
@click.option("--dimensions", type=click.IntRange(1), help="Vector dimension (embedding.dimensions).")
@click.option("--concurrency", type=click.IntRange(1),
              help="Most concurrent embedding requests (embedding.concurrency, default 16); below it the number "
                   "in flight adapts to the endpoint's 429s and latency unless embedding.adaptive=false.")
@click.option("--rpm", type=click.IntRange(0), help="Requests per minute budget (embedding.requests_per_minute).")
@click.option("--tpm", type=click.IntRange(0), help="Tokens per minute budget (embedding.tokens_per_minute).")
@click.option("--max-rejects", type=click.IntRange(0), help="Rejected lines a dataset may have (rebuild.max_rejects).")
@click.option("--over-limit", type=click.Choice(["truncate", "reject"]),
              help="Text longer than the model accepts (rebuild.over_limit).")
@click.option("--batch-size", type=click.IntRange(1), help="Chunks per insert and checkpoint (rebuild.batch_size).")
@click.option("--sample", type=click.IntRange(0), help="Chunks checked by self-retrieval (rebuild.sample).")
@click.option("--top-k", type=click.IntRange(1), help="k of recall@k (rebuild.top_k).")
@click.option("--min-recall", type=click.IntRange(0, 100), help="Lowest recall@k in percent (rebuild.min_recall_pct).")
@click.option("--resume", is_flag=True, help="Finish an interrupted rebuild from its checkpoint ledger.")
@click.option("--force", is_flag=True, help="Start over, discarding a checkpoint or a half-built collection.")
@click.option("--dry-run", is_flag=True, help="Show datasets, chunks, cache coverage, model calls; change nothing.")
@click.option("--rollback", is_flag=True, help="Swap back to the collection the last switch replaced.")
@click.option("--drop-old", is_flag=True, help="Drop the replaced collection after the switch (needs --yes).")
@click.option("--yes", is_flag=True, help="Confirm --drop-old, or (weaviate.switch=alias) deleting a Weaviate "
                                          "collection to alias its name.")
@click.option("--break-stale-lock", is_flag=True,
              help="Replace a collection's run lock judged stale (held on another host, or older than "
                   "snapshot.lock_stale_after, or unverifiable: this host name but another PID namespace); a "
                   "dead run's lock in this host and PID namespace is taken over without it.")
@click.option("--shard", metavar="I/N",
              help="Be worker I (0-based) of N: store only this worker's part of each dataset (sha256 of the chunk "
                   "id mod N) into the build collection all N share; no gate, no switch (see --finalize). Unset, "
                   "a Kubernetes Indexed Job's JOB_COMPLETION_INDEX with JOB_COMPLETIONS set it. Not with a "
                   "Milvus Lite file.")
@click.option("--finalize", is_flag=True,
              help="After every --shard worker finished: run the verification gate once on the whole build "
                   "collection and switch it in; refused (exit 2) while a shard is unfinished.")
@metrics_option
@pass_app
def rebuild_index(app: App, datasets: tuple[str, ...], all_datasets: bool, annotations: bool,
                  apps: tuple[str, ...], bucket: str | None, target: str | None,
                  milvus_uri: str | None, weaviate_endpoint: str | None, weaviate_grpc: str | None,
                  weaviate_uuid: str | None, provider: str | None, model: str | None, base_url: str | None,
                  dimensions: int | None, concurrency: int | None, rpm: int | None, tpm: int | None,
                  max_rejects: int | None, over_limit: str | None, batch_size: int | None, sample: int | None,
                  top_k: int | None, min_recall: int | None, resume: bool, force: bool, dry_run: bool,
                  rollback: bool, drop_old: bool, yes: bool, break_stale_lock: bool, shard: str | None,
                  finalize: bool) -> int | Outcome:
    """Re-embed the chunks at s3://BUCKET/datasets/ID/processed/chunks.jsonl[.gz|.zst] into the collection Dify
    queries: built beside the live one, verified, then switched (blue/green), resumable after any interruption.

    One run per target collection: a second one exits 11 while the first holds its lock. A large index can be
    built by N workers at once (--shard I/N, or a Kubernetes Indexed Job) and switched in by one --finalize.

    Exit codes: 0 rebuilt, 1 error, 2 bad input or usage, 4 verification failed (nothing switched),
    10 chunk file or dataset not found, 11 another run holds the collection's lock, 12 credentials refused.
    """
    if datasets and all_datasets:
        raise UsageError("--dataset and --all exclude each other")
    annotations = annotations or bool(apps)
    if not (datasets or all_datasets or annotations):
        raise UsageError("say which datasets to rebuild",
                         hint="pass --dataset ID (repeatable), --all, --annotations or --app ID")
    if rollback and (resume or force or dry_run or drop_old):
        raise UsageError("--rollback takes no other action flag")
    if drop_old and not yes:
        raise UsageError("--drop-old deletes the previous collection, which --rollback needs",
                         hint="add --yes to confirm")
    if dry_run and (resume or force):
        raise UsageError("--dry-run changes nothing; drop --resume/--force")
    sharding = _sharding(shard, finalize, annotations=annotations,
                         action=rollback or dry_run or force or (drop_old and not finalize))
    settings = app.settings({
        "s3.bucket": bucket, "vector.store": target, "milvus.uri": milvus_uri, "weaviate.endpoint": weaviate_endpoint,
        "weaviate.grpc_endpoint": weaviate_grpc, "weaviate.uuid_scheme": weaviate_uuid,
        "embedding.provider": provider, "embedding.model": model,
        "embedding.base_url": base_url, "embedding.dimensions": dimensions, "embedding.concurrency": concurrency,
        "embedding.requests_per_minute": rpm, "embedding.tokens_per_minute": tpm,
        "rebuild.max_rejects": max_rejects, "rebuild.over_limit": over_limit, "rebuild.batch_size": batch_size,
        "rebuild.sample": sample, "rebuild.top_k": top_k, "rebuild.min_recall_pct": min_recall,
    })
    options = Options(datasets=datasets, all_datasets=all_datasets, resume=resume, force=force, dry_run=dry_run,
                      rollback=rollback, drop_old=drop_old, yes=yes, break_stale_lock=break_stale_lock)
    parts = _build_components(app, settings, need_target=True)
    progress: _Work | None = None
    if not (dry_run or rollback or app.quiet):
        progress = _RichProgress() if on_terminal(json_mode=app.json_mode, log_format=app.log_format) \
            else _LogProgress()
    rebuilder = _rebuilder(sharding, finalize)(
        settings, options, store=parts.store, target=parts.target, embedder=parts.embedder,
        meta=parts.meta, emit=app.emit, progress=progress, redis_url=settings.redis.url,
        **({"shard": sharding} if sharding is not None else {}))
    started = time.monotonic()
    try:
        reports = rebuilder.run() if (datasets or all_datasets) else []
        if annotations:
            reports += _rebuild_annotations(app, settings, options, parts, apps, progress)
        elif all_datasets and parts.store.list_folders("annotations/"):
            app.emit({"event": "rebuild.annotations_not_selected",
                      "hint": "annotation-reply collections are rebuilt only with --annotations"})
    finally:
        parts.close()
    code = overall_exit_code(reports)
    app.add_metrics([Metric("drtool_rebuild_index_dataset_exit_code", "Exit code of each dataset in the last run.",
                            r.exit_code, {"dataset_id": r.dataset_id}) for r in reports]
                    + [Metric("drtool_rebuild_index_inserted_chunks", "Chunks inserted per dataset in the last run.",
                              r.inserted, {"dataset_id": r.dataset_id}) for r in reports])
    payload = {"event": "result", "seconds": round(time.monotonic() - started, 3),
               "model": parts.embedder.model_id,
               "model_requests": getattr(parts.embedder, "requests", None),
               # The local model's device (embedding.device resolved), null when no local model was loaded.
               "device": getattr(parts.embedder, "device", None),
               "datasets": [r.to_dict() for r in reports]}
    app.result(payload, lambda: _render(app, reports, dry_run))
    return conclude(code, "; ".join(f"dataset {r.dataset_id}: {r.status}" + (f" ({r.error})" if r.error else "")
                                   for r in reports if r.exit_code))


def _sharding(flag: str | None, finalize: bool, *, annotations: bool, action: bool) -> Any:
    """The shard this run is (--shard, else an Indexed Job's environment), None for a single worker or a
    finalize; combinations a sharded rebuild does not have are refused."""
    import os

    from drtool.core import shards

    if finalize:
        if flag is not None:
            raise UsageError("--finalize runs once, after the shards: drop --shard")
        if annotations or action:
            raise UsageError("--finalize takes no --annotations, --rollback, --dry-run or --force")
        return None
    shard = shards.resolve(flag, os.environ)
    if shard is not None and (annotations or action):
        raise UsageError(f"a shard worker ({shard}) takes no --annotations, --rollback, --dry-run, --force or "
                         "--drop-old", hint="these run without --shard (and without JOB_COMPLETION_INDEX); to "
                         "start a sharded rebuild over see docs/rebuild-index.md, 'Sharded rebuild'")
    return shard


def _rebuilder(shard: Any, finalize: bool) -> type[Rebuilder]:
    if shard is None and not finalize:
        return Rebuilder
    from drtool.ops.rebuild.shards import ShardedRebuilder, ShardFinalizer

    return ShardFinalizer if finalize else ShardedRebuilder


def _rebuild_annotations(app: App, settings: Any, options: Options, parts: RebuildParts, apps: tuple[str, ...],
                         progress: Any) -> list[DatasetReport]:
    """The annotation-reply collections (drtool/ops/rebuild/annotations.py), through the same pipeline and gate."""
    from drtool.ops.rebuild.annotations import AnnotationRebuilder, read_enabled_apps

    enabled = None
    if parts.meta is not None:  # Postgres configured: it says which apps are enabled and on which model
        with dify_reader(settings.postgres) as reader:
            enabled = read_enabled_apps(reader)
    rebuilder = AnnotationRebuilder(settings, options, store=parts.store, target=parts.target,
                                    embedder=parts.embedder, meta=parts.meta, emit=app.emit,
                                    progress=progress, redis_url=settings.redis.url, apps=enabled, app_ids=apps)
    return rebuilder.run()


def _render(app: App, reports: list[DatasetReport], dry_run: bool) -> None:
    for r in reports:
        app.echo(f"dataset {one_line(r.dataset_id)}: {r.status}")
        if r.collection:
            app.echo(f"  collection      {one_line(r.collection)}  (from {r.collection_source})")
        if r.chunk_file:
            app.echo(f"  chunk file      {one_line(r.chunk_file)}")
        if r.error:
            app.echo(f"  error           {one_line(r.error)}")
        if r.mode in ("rollback",):
            app.echo(f"  switch          {r.switch}")
            continue
        app.echo(f"  chunks          {r.valid} valid, {r.rejected} rejected"
                 + (f", {r.truncated} truncated" if r.truncated else ""))
        for line in r.rejections[:10]:
            app.echo(f"    rejected      {one_line(line)}")
        app.echo(f"  cache hits      sidecar {r.cache_hits_sidecar}, dify {r.cache_hits_dify}"
                 + (f"; {r.cache_vectors_ignored} insane cached vector(s) ignored and re-embedded"
                    if r.cache_vectors_ignored else ""))
        if dry_run:
            v = r.plan
            if v:
                app.echo(f"  to embed        {v['to_embed']} chunks in {v['model_calls']} model call(s)")
                app.echo(f"  would           {v['would']}")
            continue
        app.echo(f"  embedded        {r.embedded}")
        app.echo(f"  inserted        {r.inserted}" + (f" (resumed after line {r.resumed_from_line}, "
                                                       f"{r.skipped_done} already stored)" if r.resumed_from_line
                                                       else ""))
        if r.stage_seconds:
            app.echo("  stages          " + ", ".join(f"{k} {v:.2f}s" for k, v in r.stage_seconds.items()))
        if r.verification:
            v = r.verification
            recall = next((f"{k} {val}" for k, val in v.items() if k.startswith("recall_at_")), "")
            app.echo(f"  verification    {'passed' if v.get('passed') else 'FAILED'}: count {v.get('count')}/"
                     f"{v.get('expected')}, {recall}, Dify query {v.get('dify_query_ok')}/{v.get('sample')}")
        if r.switch:
            app.echo(f"  switch          {r.switch}")
        if r.redis_keys_deleted:
            app.echo(f"  redis           deleted {', '.join(r.redis_keys_deleted)}")

