"""The streaming build of one collection: read the chunk file, fill vectors from Dify's cache and drtool's sidecar,
embed the rest on worker threads, insert in order, checkpoint after every insert batch. Rebuilder drives it; the
gate (drtool/ops/rebuild/gate.py) reads the sample it keeps.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from drtool.config import Settings
from drtool.core.chunks import Chunk, Rejection
from drtool.core.concurrency import pipeline_unit
from drtool.core.pipeline import ordered_map
from drtool.core.ports import VectorStore
from drtool.core.streams import CountingRawStream
from drtool.ops.rebuild.ledger import Ledger
from drtool.ops.rebuild.options import DatasetReport
from drtool.ops.rebuild.plan import Plan
from drtool.ops.rebuild.progress import Progress
from drtool.ops.rebuild.sidecar import VectorSidecar

log = logging.getLogger("drtool.rebuild")


@dataclass
class GateSample:
    """What a build keeps for its gate: a reservoir sample of the valid chunks, each with its vector when the build
    embedded it (None: stored before a resume), and the store object keys several chunks shared (8-byte blake2b
    digests): the gate leaves those chunks out."""

    chunks: list[tuple[Chunk, list[float] | None]] = field(default_factory=list)
    collided: set[bytes] = field(default_factory=set)


def stream_build(settings: Settings, target: VectorStore, embedder: Any, progress: Progress, plan: Plan,
                 report: DatasetReport, ledger: Ledger, build: str, sidecar: VectorSidecar, dify_cache: Any,
                 resume_line: int, *, resuming: bool, kept: GateSample,
                 stream: Callable[[Plan, DatasetReport, list[CountingRawStream]], Iterator[Chunk]],
                 mine: Callable[[Chunk], bool], reject: Callable[[DatasetReport, Rejection], None]) -> None:
    """Store the chunks of `plan` after `resume_line` into `build`. The rebuilder's hooks come in as callables
    (`stream`: the file's valid chunks, `mine`: whether this worker stores a chunk, `reject`: record a rejection),
    so a shard worker or the annotation rebuild changes what they do without a copy of this loop."""
    rs = settings.rebuild
    timings = report.stage_seconds
    sample_size = max(0, rs.sample)
    rng = random.Random(plan.dataset_id)
    seen_valid = 0
    counter: list[CountingRawStream] = []
    progress.start(plan.dataset_id, plan.chunk_size or None)
    t_lookup = t_wait = t_insert = 0.0
    # A killed run may have stored the batch after its checkpoint, also before its first checkpoint (line 0).
    first_after_resume = resuming
    base_late = int(ledger.data.get("late_rejected", 0)) if resume_line else 0

    keys_seen: set[bytes] = set()

    def note_key(chunk: Chunk) -> None:
        key = target.object_key(chunk.text, chunk.vector_metadata())
        if key is None:
            return
        digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
        if digest in keys_seen:
            report.key_collisions += 1
            kept.collided.add(digest)
        keys_seen.add(digest)

    def sample_offer(chunk: Chunk, vector: list[float] | None) -> None:
        nonlocal seen_valid
        seen_valid += 1
        if len(kept.chunks) < sample_size:
            kept.chunks.append((chunk, vector))
        else:
            j = rng.randrange(seen_valid)
            if j < sample_size:
                kept.chunks[j] = (chunk, vector)

    def prepared() -> Iterator[dict[str, Any]]:
        """Batches with cache hits filled in (main thread), ready for the embedding workers."""
        nonlocal t_lookup
        todo: list[Chunk] = []
        for chunk in stream(plan, report, counter):
            note_key(chunk)
            if not mine(chunk):
                continue  # another shard worker's (drtool/ops/rebuild/shards.py)
            if chunk.line <= resume_line:
                report.skipped_done += 1
                sample_offer(chunk, None)
                continue
            todo.append(chunk)
            if len(todo) >= unit:
                t = time.monotonic()
                ready = lookup_cached(todo, sidecar, dify_cache, report, embedder, rs.over_limit, reject)
                t_lookup += time.monotonic() - t
                hold(len(ready["chunks"]))
                yield ready
                todo = []
        if todo:
            t = time.monotonic()
            ready = lookup_cached(todo, sidecar, dify_cache, report, embedder, rs.over_limit, reject)
            t_lookup += time.monotonic() - t
            hold(len(ready["chunks"]))
            yield ready

    held = 0  # chunks in units made and not yet stored: what the pipeline holds, with their vectors

    def hold(n: int) -> None:
        nonlocal held
        held += n
        report.peak_chunks_in_flight = max(report.peak_chunks_in_flight, held)

    workers = int(getattr(embedder, "concurrency", 1))
    # workers + 1 units in flight keep every worker busy; they shrink to hold rebuild.max_chunks_in_flight.
    unit = pipeline_unit(rs.batch_size, workers, rs.max_chunks_in_flight,
                         int(getattr(embedder, "max_call_items", settings.embedding.batch_size)))
    t_start = time.monotonic()
    cpu_start = time.process_time()  # all threads: robust to other load on the machine, unlike wall time
    t_prev = t_start
    try:
        embed = partial(embed_missing, embedder, settings.embedding.batch_size)
        for batch, vectors in ordered_map(embed, prepared(), workers=workers, max_in_flight=workers + 1):
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
            progress.advance(counter[0].bytes if counter else 0, report)
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


def lookup_cached(chunks: list[Chunk], sidecar: VectorSidecar, dify_cache: Any, report: DatasetReport,
                  embedder: Any, over_limit: str, reject: Callable[[DatasetReport, Rejection], None]
                  ) -> dict[str, Any]:
    """One unit ready for the embedding workers: vectors from Dify's cache, then the sidecar; texts over the
    model's limit rejected or truncated (`over_limit`, rebuild.over_limit); the rest to embed."""
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
        over = embedder.over_limit([chunks[i].text for i in missing])
        keep: list[int] = []
        for i, too_long in zip(missing, over, strict=True):
            if too_long:
                if over_limit == "reject":
                    report.valid -= 1
                    report.late_rejected += 1
                    reject(report, Rejection(report.chunk_file or "", chunks[i].line,
                                             "text is longer than the model accepts (--over-limit reject)"))
                    continue
                report.truncated += 1
            keep.append(i)
        if len(keep) != len(missing):
            dropped = set(missing) - set(keep)
            chunks = [c for i, c in enumerate(chunks) if i not in dropped]
            digests = [d for i, d in enumerate(digests) if i not in dropped]
            vectors = [v for i, v in enumerate(vectors) if i not in dropped]
            missing = [i for i, v in enumerate(vectors) if v is None]
        texts = [embedder.truncate(chunks[i].text) for i in missing]
        report.embedded += len(texts)
    return {"chunks": chunks, "digests": digests, "vectors": vectors, "embedded_positions": missing,
            "texts": texts}


def embed_missing(embedder: Any, default_batch_size: int, batch: dict[str, Any]) -> list[list[float]]:
    """The unit's vectors in order, embedding those no cache had (runs on a worker thread)."""
    vectors: list[list[float] | None] = list(batch["vectors"])
    positions: list[int] = batch["embedded_positions"]
    if positions:
        # An HTTP endpoint gets embedding.batch_size texts per request; the local model gets the whole unit
        # in one call, so sentence-transformers can sort it by length (padding doubled the CPU time otherwise).
        size = max(1, int(getattr(embedder, "max_call_items", default_batch_size)))
        out: list[list[float]] = []
        for start in range(0, len(positions), size):
            out.extend(embedder.embed(batch["texts"][start:start + size]))
        for i, v in zip(positions, out, strict=True):
            vectors[i] = v
    result = [v for v in vectors if v is not None]
    if len(result) != len(vectors):
        raise RuntimeError("embedding returned fewer vectors than asked")
    return result
