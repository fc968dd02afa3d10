"""`drtool export-chunks`: write each Dify dataset's indexed texts to object storage as a processed-chunk file.

After it, `datasets/<id>/processed/chunks.jsonl[.gz|.zst]` in the bucket holds exactly what Dify embedded, so a
lost vector index can be rebuilt by `drtool rebuild-index` from object storage alone (a stock Dify keeps chunks
only in Postgres).

Per dataset: stream the rows (`COPY ... TO STDOUT`), encode them into chunk lines in batches, and hand the batches
to the writer, whose thread hashes the uncompressed lines and compresses them into a spooled temporary file;
compare the hash with the one stored on the current object (S3 user metadata); upload only when it changed, as
one PUT or a multipart upload, both of which S3 shows only when complete; then delete the other-compression
variants rebuild would otherwise find first. Memory stays flat: batches of FETCH_ROWS rows, a bounded queue to
the writer's thread, and a spool that moves to disk past a few MiB. A run killed at any point leaves every chunk
file either as it was or completely replaced, and running it again finishes the job (unchanged datasets are
skipped).
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from operator import itemgetter
from typing import Any

from drtool import wiring
from drtool.adapters import s3 as s3_adapter
from drtool.adapters.dify_metadata import DatasetRow, DifyReader, IndexNode
from drtool.config import Settings
from drtool.core.chunk_writer import chunk_key, chunk_record, other_chunk_keys
from drtool.core.events import Emit
from drtool.errors import UsageError
from drtool.ops.export.annotations import export_annotations
from drtool.ops.export.writer import DatasetExport, ExportOptions, write_chunk_file
from drtool.ops.lock import store_lock

log = logging.getLogger("drtool.export")

PROGRESS_EVERY = 1000  # segments between two progress reports inside a dataset (a report costs a dict)
_UNSET = object()  # "no previous row" for encode_node_rows, unequal to any value (None included)
_DOC_HASH, _ANSWER = ',"doc_hash":', ',"answer":'


def node_record(node: IndexNode) -> dict[str, Any]:
    """The chunk line for one Dify index node: what rebuild-index needs to recreate Dify's vector exactly."""
    return chunk_record(id=node.id, text=node.text, dataset_id=node.dataset_id, document_id=node.document_id,
                        doc_hash=node.doc_hash, position=node.position, parent_id=node.parent_id,
                        answer=node.answer, metadata={"source": node.document_name} if node.document_name else None)


def encode_node_rows(rows: Sequence[tuple[Any, ...]], dataset_id: str, doc_forms: dict[str, int]) -> tuple[bytes, int]:
    """Chunk lines for a batch of DifyReader.iter_index_node_rows rows: the bytes and how many lines they hold.

    Byte for byte what `ChunkFileWriter.write(node_record(node))` writes (the same C string escaper json uses,
    fields in contract order, None fields left out; tests/export/test_chunk_writer.py compares the two), without a
    dataclass, a dict and an encoder walk per row: those were most of the export's CPU time. Rows come ordered by
    document (and a child chunk's siblings follow each other), so the parts owned by the document or the parent
    segment are escaped once per run of rows, and the doc forms are counted in C, not per row in Python. Blank
    texts (Dify does not embed them; the chunk format forbids them) are left out; `doc_forms` counts the lines per
    document form.
    """
    q = encode_basestring
    dataset = q(dataset_id)
    lines: list[str] = []
    add = lines.append
    blank_forms: list[str] = []
    last_doc: Any = _UNSET
    last_name: Any = _UNSET
    last_parent: Any = _UNSET
    owner = tail = parent = ""
    for node_id, text, document_id, doc_hash, position, doc_form, parent_id, answer, name in rows:
        if not text or text.isspace():  # what `not text.strip()` says, without copying the text
            blank_forms.append(doc_form)
            continue
        if document_id != last_doc:
            last_doc = document_id
            owner = f',"dataset_id":{dataset},"document_id":{q(document_id)}'
        if name != last_name:
            last_name = name
            tail = f',"metadata":{{"source":{q(name)}}}}}\n' if name else "}\n"
        if parent_id != last_parent:
            last_parent = parent_id
            parent = "" if parent_id is None else f',"parent_id":{q(parent_id)}'
        add(f'{{"id":{q(node_id)},"text":{q(text)}{owner}{"" if doc_hash is None else _DOC_HASH + q(doc_hash)}'
            f',"position":{int(position)}{parent}{"" if answer is None else _ANSWER + q(answer)}{tail}')
    counts = Counter(map(itemgetter(5), rows))
    counts.subtract(blank_forms)
    for form, n in counts.items():
        if n:
            doc_forms[form] = doc_forms.get(form, 0) + n
    return "".join(lines).encode("utf-8"), len(lines)


def select_datasets(reader: DifyReader, options: ExportOptions) -> list[DatasetRow]:
    if options.datasets and options.all_datasets:
        raise UsageError("pass either --dataset or --all, not both")
    if not options.datasets and not options.all_datasets:
        if options.annotations:
            return []  # --annotations alone: only the apps' annotation files
        raise UsageError("say which datasets to export",
                         hint="pass --dataset ID (repeatable), --all, or --annotations")
    return reader.datasets(options.datasets)


def export_chunks(settings: Settings, options: ExportOptions, *, emit: Emit) -> list[DatasetExport]:
    """Export the chosen datasets; raises a DrtoolError (with its exit code) on the first failure."""
    settings.require_s3()
    store = wiring.dify_bucket(settings)
    store.probe()
    results: list[DatasetExport] = []
    lock: Any = contextlib.nullcontext()
    if not options.dry_run:  # one writing run per bucket: a second one exits 11 instead of racing the first
        lock = store_lock(store, f"{settings.snapshot.prefix.strip('/')}/locks/export-chunks.lock",
                          holder="export-chunks", stale_after_s=settings.snapshot.lock_stale_after,
                          break_stale=options.break_stale_lock, emit=emit)
    with lock, wiring.dify_reader(settings.postgres) as reader:
        datasets = select_datasets(reader, options)
        emit({"event": "export.started", "datasets": len(datasets), "bucket": store.bucket,
              "compression": options.compression, "dry_run": options.dry_run})
        segments = 0  # written to the chunk files so far, all datasets together

        def progress(finished: int, in_dataset: int = 0) -> None:
            # Units of work for the progress display (drtool/cli/progress.py): datasets of the run, segments.
            emit({"event": "progress", "task": "export-chunks", "unit": "datasets", "done": finished,
                  "total": len(datasets), "also": {"segments": segments + in_dataset}})

        for number, dataset in enumerate(datasets, start=1):
            key = chunk_key(dataset.id, options.compression)
            result = DatasetExport(dataset_id=dataset.id, name=dataset.name, key=key, url=store.url(key))
            if dataset.provider == "external":  # an external knowledge base has no segments in Dify
                result.status = "skipped_external"
            else:
                _export_one(reader, store, dataset, result, options, emit,
                            on_segments=lambda n, done=number - 1: progress(done, n))
            segments += result.chunks
            progress(number)
            log.info("[%d/%d] %s %s: %s, %d chunks", number, len(datasets), dataset.id, dataset.name,
                     result.status, result.chunks)
            emit({"event": "export.dataset_exported", **result.to_dict()})
            results.append(result)
        if options.with_annotations:
            results.extend(export_annotations(reader, store, options, emit=emit))
    return results


def _export_one(reader: DifyReader, store: s3_adapter.BucketStore, dataset: DatasetRow, result: DatasetExport,
                options: ExportOptions, emit: Emit, *, on_segments: Callable[[int], None] | None = None) -> None:
    """Export one dataset; `on_segments` hears how many segments were written every PROGRESS_EVERY of them."""

    def blocks() -> Iterator[tuple[bytes, int]]:
        written = 0
        for rows in reader.iter_index_node_rows(dataset.id):
            block, count = encode_node_rows(rows, dataset.id, result.doc_forms)
            result.skipped_blank += len(rows) - count
            before, written = written, written + count
            if on_segments is not None and written // PROGRESS_EVERY > before // PROGRESS_EVERY:
                on_segments(written)
            yield block, count
        if result.skipped_blank:
            log.warning("dataset %s: %d blank segment(s) left out", dataset.id, result.skipped_blank)

    write_chunk_file(store, result, (), options, emit, blocks=blocks(),
                     stale_keys=other_chunk_keys(dataset.id, options.compression))
