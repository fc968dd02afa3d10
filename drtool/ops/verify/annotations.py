"""verify, annotation replies (issue #13): every enabled app's annotations are in its collection exactly once, with
Dify's metadata, and (--deep) in its annotation file with the same text.

How Dify keeps these collections, and the file: drtool/ops/export/annotations.py.
"""

from __future__ import annotations

import time
from typing import Any

from drtool.adapters import s3 as s3_adapter
from drtool.adapters.dify_annotations import AnnotationApp, enabled_apps, iter_annotations, tables_present
from drtool.adapters.dify_metadata import DifyReader
from drtool.core.chunk_writer import text_digest
from drtool.core.chunks import KIND_ANNOTATION, Chunk, CorruptStream
from drtool.ops.export.annotations import ROOT, annotation_key
from drtool.ops.rebuild.annotations import collection_for
from drtool.ops.rebuild.plan import head_chunk_file, read_chunk_file

# Break kinds verify reports for annotation collections (added to drtool.ops.verify.report.KINDS).
VERIFY_KINDS: dict[str, str] = {
    "missing_annotation_collection": "an app with annotation reply enabled has no annotation collection",
    "missing_annotation_vector": "an annotation of an enabled app has no vector",
    "orphan_annotation_vector": "a vector in an app's annotation collection whose doc_id is none of its annotations",
    "duplicate_annotation_vector": "more than one vector for the same annotation",
    "wrong_annotation_metadata": "an annotation vector's annotation_id or app_id is not Dify's",
    "annotation_file_missing": "no annotation file for an enabled app in object storage (--deep)",
    "annotation_file_stale": "the annotation file disagrees with Postgres: ids missing or extra, or text differs "
                             "(--deep)",
}


def verify_annotations(reader: DifyReader, settings: Any, scanner_for: Any, store: s3_adapter.BucketStore | None,
                       findings: Any, *, check_vectors: bool, deep: bool) -> list[dict[str, Any]]:
    """Every enabled app's annotations are in its collection exactly once with Dify's metadata (and, with --deep,
    in its annotation file with the same text). Memory: one 16-byte digest per annotation of one app.

    `scanner_for(backend)` opens a VectorStore; annotations have no index_struct, so the backend is vector.store.
    """
    if not tables_present(reader):
        return []
    verdicts: list[dict[str, Any]] = []
    for app in enabled_apps(reader):
        started = time.monotonic()
        before = dict(findings.counts)
        expected = {row.id: text_digest(row.embedded_text) for row in iter_annotations(reader, app.app_id)
                    if row.embedded_text.strip()}
        collection = collection_for(app.app_id, settings.vector.index_prefix)
        verdict: dict[str, Any] = {"app_id": app.app_id, "name": app.name, "collection": collection,
                                   "annotations": len(expected), "vectors": None, "annotation_file": None,
                                   "note": ""}
        if app.model_name is None:
            verdict["note"] = "the setting's collection binding does not exist: Dify answers no annotation"
        elif check_vectors and settings.vector.store:
            _verify_annotation_vectors(app, collection, scanner_for(settings.vector.store), expected, verdict,
                                       findings)
        elif check_vectors:
            verdict["note"] = "vector.store is not set: annotation vectors not checked"
        if deep and store is not None:
            _verify_annotation_file(app, store, expected, verdict, findings)
        verdict["breaks"] = {k: findings.counts.get(k, 0) - before.get(k, 0) for k in VERIFY_KINDS
                             if findings.counts.get(k, 0) != before.get(k, 0)}
        verdict["ok"] = not verdict["breaks"]
        verdict["seconds"] = round(time.monotonic() - started, 3)
        verdicts.append(verdict)
    return verdicts


def _verify_annotation_vectors(app: AnnotationApp, collection: str, scanner: Any, expected: dict[str, bytes],
                               verdict: dict[str, Any], findings: Any) -> None:
    if not scanner.serves(collection):
        verdict["vectors"] = 0
        if expected:
            findings.add("missing_annotation_collection", app_id=app.app_id, collection=collection,
                         store=scanner.describe(), annotations=len(expected))
        return
    seen: set[str] = set()
    count = 0
    for key, meta in scanner.iter_metadata(collection):
        count += 1
        doc_id = None if meta.get("doc_id") is None else str(meta.get("doc_id"))
        where = {"app_id": app.app_id, "collection": collection, "vector": key}
        if doc_id is None or doc_id not in expected:
            findings.add("orphan_annotation_vector", **where, doc_id=doc_id)
            continue
        if doc_id in seen:
            findings.add("duplicate_annotation_vector", **where, doc_id=doc_id)
            continue
        seen.add(doc_id)
        if str(meta.get("annotation_id")) != doc_id or str(meta.get("app_id")) != app.app_id:
            findings.add("wrong_annotation_metadata", **where, doc_id=doc_id,
                         annotation_id=meta.get("annotation_id"), found_app_id=meta.get("app_id"))
    verdict["vectors"] = count
    for annotation_id in expected:
        if annotation_id not in seen:
            findings.add("missing_annotation_vector", app_id=app.app_id, collection=collection,
                         annotation_id=annotation_id)


def _verify_annotation_file(app: AnnotationApp, store: s3_adapter.BucketStore, expected: dict[str, bytes],
                            verdict: dict[str, Any], findings: Any) -> None:
    found = head_chunk_file(store, f"{ROOT}{app.app_id}/processed/")
    if found is None:
        findings.add("annotation_file_missing", app_id=app.app_id, url=store.url(annotation_key(app.app_id)),
                     hint="run drtool export-chunks --annotations")
        return
    key = found.key
    url = store.url(key)
    verdict["annotation_file"] = url
    seen: set[str] = set()
    items = read_chunk_file(store, key, dataset_id=app.app_id, kind=KIND_ANNOTATION)
    try:
        for item in items:
            if not isinstance(item, Chunk):
                findings.add("annotation_file_stale", app_id=app.app_id, url=url, problem="invalid line",
                             line=item.line, reason=item.reason)
                continue
            seen.add(item.id)
            digest = expected.get(item.id)
            if digest is None:
                findings.add("annotation_file_stale", app_id=app.app_id, url=url, line=item.line,
                             problem="not an annotation of the app in Postgres", annotation_id=item.id)
            elif text_digest(item.text) != digest:
                findings.add("annotation_file_stale", app_id=app.app_id, url=url, line=item.line,
                             problem="text differs from Postgres", annotation_id=item.id)
    except CorruptStream as exc:
        findings.add("annotation_file_stale", app_id=app.app_id, url=url, problem="file is corrupt", reason=str(exc))
    finally:
        items.close()
    for annotation_id in expected.keys() - seen:
        findings.add("annotation_file_stale", app_id=app.app_id, url=url, problem="annotation missing from the file",
                     annotation_id=annotation_id)
