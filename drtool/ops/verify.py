"""`drtool verify [--deep]`: referential closure across Postgres, object storage and the vector index.

Checks, each a kind of break with a count and the first examples:
- every `upload_files.key` and `tool_files.file_key` names an existing object (HEAD, s3.key_prefix applied);
- every text Dify indexes for a high-quality dataset (the same rows export-chunks writes) has its vector, found
  by metadata `doc_id`, carrying the right `document_id` and `dataset_id`;
- every vector in the dataset's collection maps back to such a text (orphans; duplicates);
- with --deep, the dataset's chunk file in object storage holds exactly those ids with the same text.

Postgres is read in one REPEATABLE READ snapshot. Per dataset, the live texts are held as id -> (document id,
16-byte text digest), about 150 bytes per chunk; vectors and chunk-file lines are streamed against that map.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from drtool.adapters import s3 as s3_adapter
from drtool.adapters.dify_metadata import DatasetRow, DifyReader, FileRef
from drtool.config import Settings
from drtool.core import naming
from drtool.core.chunk_writer import text_digest
from drtool.core.chunks import CHUNK_FILE_NAMES, Chunk, CorruptStream, compression_for, iter_lines, parse_lines
from drtool.core.events import Emit
from drtool.core.ports import VECTOR_STORES, VectorStore
from drtool.core.streams import CountingRawStream
from drtool.errors import ConfigError, KeyRefusedError, UsageError
from drtool.ops.annotations import VERIFY_KINDS as ANNOTATION_KINDS
from drtool.ops.annotations import verify_annotations

log = logging.getLogger("drtool.verify")

EXAMPLES_PER_KIND = 5

# Every kind of break, in the order the summary lists them.
KINDS: dict[str, str] = {
    "missing_object": "a Postgres row names an object key that does not exist",
    "missing_collection": "a high-quality dataset's vector collection does not exist",
    "missing_vector": "an indexed segment or child chunk has no vector",
    "orphan_vector": "a vector whose doc_id is no indexed segment or child chunk of its dataset",
    "duplicate_vector": "more than one vector for the same doc_id",
    "wrong_document_id": "a vector's metadata document_id differs from the segment's document",
    "wrong_dataset_id": "a vector's metadata dataset_id differs from the dataset that owns the collection",
    "chunk_file_missing": "no chunk file for the dataset in object storage (--deep)",
    "chunk_file_stale": "the chunk file disagrees with Postgres: ids missing or extra, text or owner differs (--deep)",
}
# Annotation-reply collections (issue #13): checked per enabled app by drtool.ops.annotations.
KINDS.update(ANNOTATION_KINDS)


@dataclass
class VerifyOptions:
    datasets: tuple[str, ...] = ()
    deep: bool = False
    check_files: bool = True
    check_vectors: bool = True
    snapshot: str | None = None  # check file references at the versions this snapshot pinned ("latest" or an id)
    identity: str | None = None  # age identity file, for the manifest of an encrypted snapshot
    workers: int = 8
    # Annotation-reply collections of every enabled app. None: unless --dataset or --snapshot narrows the run
    # (drill, which verifies with --snapshot, asks for them explicitly since it rebuilds them too).
    annotations: bool | None = None

    @property
    def with_annotations(self) -> bool:
        if self.annotations is not None:
            return self.annotations
        return not self.datasets and not self.snapshot


@dataclass
class Findings:
    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def add(self, kind: str, **detail: Any) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        shown = self.examples.setdefault(kind, [])
        if len(shown) < EXAMPLES_PER_KIND:
            shown.append(detail)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass
class DatasetVerdict:
    dataset_id: str
    name: str
    indexing_technique: str | None
    backend: str | None = None
    collection: str | None = None
    indexed_chunks: int = 0
    vectors: int | None = None
    chunk_file: str | None = None
    chunk_file_lines: int | None = None
    breaks: dict[str, int] = field(default_factory=dict)
    note: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not any(self.breaks.values())

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


@dataclass
class FilesVerdict:
    checked: int = 0
    missing: int = 0
    by_table: dict[str, int] = field(default_factory=dict)
    snapshot: str | None = None
    snapshot_authenticated: bool | None = None  # None: no --snapshot
    note: str = ""


@dataclass
class VerifyReport:
    datasets: list[DatasetVerdict]
    files: FilesVerdict
    findings: Findings
    deep: bool
    annotations: list[dict[str, Any]] = field(default_factory=list)  # one verdict per enabled app

    @property
    def ok(self) -> bool:
        return self.findings.total == 0

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "deep": self.deep, "breaks": self.findings.total,
                "counts": {k: self.findings.counts[k] for k in KINDS if k in self.findings.counts},
                "examples": {k: self.findings.examples[k] for k in KINDS if k in self.findings.examples},
                "files": asdict(self.files), "datasets": [d.to_dict() for d in self.datasets],
                "annotations": self.annotations}


class Scanners:
    """One vector-store connection per backend, opened through the registry when a dataset first needs it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.open: dict[str, VectorStore] = {}

    def get(self, backend: str) -> VectorStore:
        if backend not in self.open:
            from drtool.adapters import vector_stores

            entry = vector_stores.get(backend)
            if not entry.configured(self.settings):
                raise ConfigError(f"a dataset is indexed in {backend} but its {entry.section} settings are not set",
                                  hint=entry.hint)
            self.open[backend] = entry.open(self.settings)
        return self.open[backend]

    def close(self) -> None:
        for scanner in self.open.values():
            scanner.close()


def verify(settings: Settings, options: VerifyOptions, *, emit: Emit) -> VerifyReport:
    store: s3_adapter.BucketStore | None = None
    if options.check_files or options.deep:
        settings.require_s3()
        store = s3_adapter.BucketStore(settings.s3)
        store.probe()
    findings = Findings()
    scanners = Scanners(settings)
    verdicts: list[DatasetVerdict] = []
    files = FilesVerdict(note="skipped (--skip-files)")
    try:
        with DifyReader(settings.postgres) as reader:
            datasets = reader.datasets(options.datasets)
            emit({"event": "verify.started", "datasets": len(datasets), "deep": options.deep})
            if options.check_files and store is not None:
                # Units of work for the progress display (drtool/cli/progress.py): file rows checked, then datasets.
                def files_checked(n: int) -> None:
                    emit({"event": "progress", "task": "verify files", "unit": "files", "done": n, "total": None})

                if options.snapshot:
                    files = _verify_files_at_snapshot(settings, options, reader.iter_file_refs(), store, findings,
                                                      on_checked=files_checked)
                else:
                    files = _verify_files(reader.iter_file_refs(), store, findings, options.workers,
                                          on_checked=files_checked)
                emit({"event": "verify.files", **asdict(files)})
            chunks = 0
            for number, dataset in enumerate(datasets, start=1):
                verdict = _verify_dataset(reader, dataset, settings, scanners, store, findings, options)
                chunks += verdict.indexed_chunks
                emit({"event": "progress", "task": "verify datasets", "unit": "datasets", "done": number,
                      "total": len(datasets), "also": {"chunks": chunks}})
                emit({"event": "verify.dataset", **verdict.to_dict()})
                verdicts.append(verdict)
            apps: list[dict[str, Any]] = []
            if options.with_annotations:
                apps = verify_annotations(reader, settings, scanners.get, store, findings,
                                          check_vectors=options.check_vectors, deep=options.deep)
                for app in apps:
                    emit({"event": "verify.annotations", **app})
    finally:
        scanners.close()
    return VerifyReport(datasets=verdicts, files=files, findings=findings, deep=options.deep, annotations=apps)


def _verify_files(refs: Iterator[FileRef], store: s3_adapter.BucketStore, findings: Findings,
                  workers: int, *, on_checked: Callable[[int], None] | None = None) -> FilesVerdict:
    from drtool.ops.snapshot.catalog import bounded_map

    verdict = FilesVerdict()

    def head(ref: FileRef) -> tuple[FileRef, bool, str | None]:
        """(row, object exists, why the key was refused). A key the server refuses (400: `..`, too long, ...) names
        no object either: a break of that row, not the end of the run."""
        try:
            return ref, store.head(ref.key) is not None, None
        except KeyRefusedError as exc:
            return ref, False, f"the object store refused the key ({exc.reason})"

    for ref, exists, refused in bounded_map(head, refs, workers):
        verdict.checked += 1
        if on_checked is not None:
            on_checked(verdict.checked)
        verdict.by_table[ref.table] = verdict.by_table.get(ref.table, 0) + 1
        if not exists:
            verdict.missing += 1
            findings.add("missing_object", table=ref.table, row_id=ref.row_id, key=ref.key, url=store.url(ref.key),
                         tenant_id=ref.tenant_id, **({"problem": refused} if refused else {}))
    return verdict


def _verify_files_at_snapshot(settings: Settings, options: VerifyOptions, refs: Iterator[FileRef],
                              store: s3_adapter.BucketStore, findings: Findings, *,
                              on_checked: Callable[[int], None] | None = None) -> FilesVerdict:
    """Each referenced key must be pinned in the snapshot's manifest, and that exact version must still exist.

    This is what a restore from the snapshot will need: the current object may have changed or gone since.
    """
    from drtool.adapters.age import load_identities
    from drtool.core import manifest as mf
    from drtool.ops.snapshot.auth import authenticate
    from drtool.ops.snapshot.catalog import bounded_map, iter_records, resolve
    from drtool.ops.snapshot.destination import open_destination

    dest = open_destination(settings)
    info = resolve(dest, str(options.snapshot))
    # A forged manifest could claim pins that do not exist and hide what a restore would miss: trust it only once
    # authenticated, as restore and drill do (exit 4 when a trusted key is configured and it does not verify).
    auth = authenticate(settings, dest, info)
    identities = load_identities(options.identity) if options.identity else None
    source_bucket = str(info.meta.get("source", {}).get("bucket") or store.bucket)
    prefix = str(info.meta.get("source", {}).get("key_prefix", store.prefix) or "")
    source = store.at(source_bucket)  # manifest keys are whole keys of the snapshot's source bucket
    records, _raw = iter_records(dest, info, identities)
    pinned: dict[str, mf.ManifestRecord] = {rec.key: rec for rec in records if rec.referenced_by}
    verdict = FilesVerdict(snapshot=info.id, snapshot_authenticated=auth.authenticated)

    def check(ref: FileRef) -> tuple[FileRef, str | None]:
        rec = pinned.get(prefix + ref.key)
        if rec is None:
            return ref, "not in the snapshot's manifest (the row is newer than the snapshot)"
        if rec.state != mf.STATE_PINNED:
            return ref, f"snapshot state {rec.state}" + (f": {rec.reason}" if rec.reason else "")
        version = None if rec.copy_key else rec.version_id
        try:
            head = source.head(rec.copy_key or rec.key, version_id=version)
        except KeyRefusedError:  # a key the server refuses: a break of this row, not of the run
            return ref, "the object store refused the key (400)"
        if head is None:
            return ref, f"pinned version {rec.version_id} is gone"
        if rec.size is not None and head.get("ContentLength") != rec.size:
            return ref, f"pinned version {rec.version_id} has {head.get('ContentLength')} bytes, not {rec.size}"
        return ref, None

    for ref, problem in bounded_map(check, refs, options.workers):
        verdict.checked += 1
        if on_checked is not None:
            on_checked(verdict.checked)
        verdict.by_table[ref.table] = verdict.by_table.get(ref.table, 0) + 1
        if problem:
            verdict.missing += 1
            rec = pinned.get(prefix + ref.key)
            findings.add("missing_object", table=ref.table, row_id=ref.row_id, key=ref.key, snapshot=info.id,
                         version_id=rec.version_id if rec else None, problem=problem)
    return verdict


def collection_of(dataset: DatasetRow, settings: Settings) -> tuple[str | None, str]:
    kind, class_prefix = naming.from_index_struct(dataset.index_struct)
    backend = kind or settings.vector.store
    return backend, class_prefix or naming.dify_collection_name(dataset.id, settings.vector.index_prefix)


def _verify_dataset(reader: DifyReader, dataset: DatasetRow, settings: Settings, scanners: Scanners,
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


