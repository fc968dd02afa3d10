"""verify, per dataset: every text Dify indexes for a high-quality dataset (the same rows export-chunks writes) has
its vector, found by metadata `doc_id`, carrying the right `document_id` and `dataset_id`; every vector in the
dataset's collection maps back to such a text (orphans; duplicates); with --deep, the dataset's chunk file in
object storage holds exactly those ids with the same text.

The live texts are held as id -> (document id, 16-byte text digest), about 150 bytes per chunk; vectors and
chunk-file lines are streamed against that map.
"""

from __future__ import annotations

import io
import logging
import time
from typing import Any

from drtool.adapters import s3 as s3_adapter
from drtool.adapters.dify_metadata import DatasetRow, DifyReader
from drtool.config import Settings
from drtool.core.chunk_writer import text_digest
from drtool.core.chunks import CHUNK_FILE_NAMES, Chunk, CorruptStream, compression_for, iter_lines, parse_lines
from drtool.core.ports import VECTOR_STORES
from drtool.core.streams import CountingRawStream
from drtool.errors import UsageError
from drtool.ops.verify.report import KINDS, DatasetVerdict, Findings, VerifyOptions
from drtool.ops.verify.scanners import Scanners, collection_of

log = logging.getLogger("drtool.verify")


def verify_dataset(reader: DifyReader, dataset: DatasetRow, settings: Settings, scanners: Scanners,
                   store: s3_adapter.BucketStore | None, findings: Findings, options: VerifyOptions
                   ) -> DatasetVerdict:
    started = time.monotonic()
    verdict = DatasetVerdict(dataset.id, dataset.name, dataset.indexing_technique)
    if dataset.provider == "external":
        verdict.note = "external knowledge base: nothing stored by Dify"
        return verdict
    before = dict(findings.counts)

    # id -> (document_id, text digest) of every text Dify indexes for this dataset.
    expected: dict[str, tuple[str, bytes]] = {}
    for node in reader.iter_index_nodes(dataset.id):
        expected[node.id] = (node.document_id, text_digest(node.text))
    verdict.indexed_chunks = len(expected)

    if dataset.indexing_technique == "high_quality" and not options.check_vectors:
        verdict.note = "vectors not checked (--skip-vectors)"
    elif dataset.indexing_technique == "high_quality":
        _verify_vectors(dataset, settings, scanners, expected, verdict, findings)
    else:
        verdict.note = f"indexing_technique={dataset.indexing_technique}: no vectors expected"
    if options.deep and store is not None:
        _verify_chunk_file(dataset, store, expected, verdict, findings)

    verdict.breaks = {k: findings.counts.get(k, 0) - before.get(k, 0) for k in KINDS
                      if findings.counts.get(k, 0) != before.get(k, 0)}
    verdict.seconds = round(time.monotonic() - started, 3)
    vectors = "vectors not checked" if verdict.vectors is None else f"{verdict.vectors} vectors"
    log.info("dataset %s: %d indexed, %s, %s", dataset.id, verdict.indexed_chunks, vectors,
             "ok" if verdict.ok else f"breaks {verdict.breaks}")
    return verdict


def _verify_vectors(dataset: DatasetRow, settings: Settings, scanners: Scanners,
                    expected: dict[str, tuple[str, bytes]], verdict: DatasetVerdict, findings: Findings) -> None:
    backend, collection = collection_of(dataset, settings)
    if backend is None and not expected:
        verdict.note = "nothing indexed yet"  # a new dataset: no index_struct, no vectors expected
        return
    if backend is None:
        raise UsageError(f"dataset {dataset.id} has no index_struct naming its vector store",
                         hint=f"set vector.store (--vector-store {'|'.join(VECTOR_STORES)})")
    verdict.backend, verdict.collection = backend, collection
    scanner = scanners.get(backend)
    if not scanner.serves(collection):
        verdict.vectors = 0
        if expected:
            findings.add("missing_collection", dataset_id=dataset.id, collection=collection,
                         store=scanner.describe(), indexed_chunks=len(expected))
        return
    seen: set[str] = set()
    count = 0
    for vec in scanner.iter_identities(collection):
        count += 1
        where = {"dataset_id": dataset.id, "collection": collection, "vector": vec.key}
        if vec.doc_id is None or vec.doc_id not in expected:
            findings.add("orphan_vector", **where, doc_id=vec.doc_id, document_id=vec.document_id)
            continue
        if vec.doc_id in seen:
            findings.add("duplicate_vector", **where, doc_id=vec.doc_id)
            continue
        seen.add(vec.doc_id)
        document_id = expected[vec.doc_id][0]
        if vec.document_id != document_id:
            findings.add("wrong_document_id", **where, doc_id=vec.doc_id, found=vec.document_id,
                         expected=document_id)
        if vec.dataset_id != dataset.id:
            findings.add("wrong_dataset_id", **where, doc_id=vec.doc_id, found=vec.dataset_id, expected=dataset.id)
    verdict.vectors = count
    for node_id, (document_id, _digest) in expected.items():
        if node_id not in seen:
            findings.add("missing_vector", dataset_id=dataset.id, collection=collection, doc_id=node_id,
                         document_id=document_id)


def _verify_chunk_file(dataset: DatasetRow, store: s3_adapter.BucketStore, expected: dict[str, tuple[str, bytes]],
                       verdict: DatasetVerdict, findings: Findings) -> None:
    key = next((k for k in (f"datasets/{dataset.id}/processed/{n}" for n in CHUNK_FILE_NAMES)
                if store.head(k) is not None), None)
    if key is None:
        if expected:
            findings.add("chunk_file_missing", dataset_id=dataset.id,
                         url=store.url(f"datasets/{dataset.id}/processed/chunks.jsonl"),
                         hint="run drtool export-chunks --dataset " + dataset.id)
        return
    verdict.chunk_file = store.url(key)
    url = store.url(key)

    def stale(problem: str, **detail: Any) -> None:
        findings.add("chunk_file_stale", dataset_id=dataset.id, url=url, problem=problem, **detail)

    seen: set[str] = set()
    lines = 0
    body = io.BufferedReader(CountingRawStream(store.open(key)), buffer_size=1 << 20)
    try:
        for item in parse_lines(iter_lines(body, compression_for(key), url), url, dataset_id=dataset.id):
            lines += 1
            if not isinstance(item, Chunk):
                stale("invalid line", line=item.line, reason=item.reason)
                continue
            entry = expected.get(item.id)
            seen.add(item.id)
            if entry is None:
                stale("chunk is not an indexed segment in Postgres", chunk_id=item.id, line=item.line)
            elif text_digest(item.text) != entry[1]:
                stale("text differs from Postgres", chunk_id=item.id, line=item.line)
            elif item.document_id != entry[0]:
                stale("document_id differs from Postgres", chunk_id=item.id, line=item.line,
                      found=item.document_id, expected=entry[0])
    except CorruptStream as exc:
        stale("file is corrupt", reason=str(exc))
    finally:
        body.close()
    verdict.chunk_file_lines = lines
    for node_id, (document_id, _digest) in expected.items():
        if node_id not in seen:
            stale("indexed segment missing from the file", chunk_id=node_id, document_id=document_id)
