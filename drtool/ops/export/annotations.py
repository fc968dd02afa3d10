"""Annotation replies (issue #13): the per-app files export-chunks writes, from which they are rebuilt and verified.

An app with annotation reply enabled (a row in `app_annotation_settings`) has its question/answer pairs embedded
into a collection of its own: Dify builds a transient Dataset whose id is the *app id* and whose model is the
setting's `dataset_collection_bindings` row, so the collection is `gen_collection_name_by_id(app_id)` =
`<VECTOR_INDEX_NAME_PREFIX>_<app id with _>_Node` on Milvus, Weaviate and pgvector, and each vector carries
`{annotation_id, app_id, doc_id}` with the question as its text. No `datasets.index_struct` names these
collections, so a rebuild that walks datasets misses them; they get the same file contract (kind `annotation`),
the same pipeline (ledger, gate, blue/green switch: drtool/ops/rebuild/annotations.py) and the same verify
findings (drtool/ops/verify/annotations.py).

This module writes `annotations/<app_id>/processed/chunks.jsonl[.gz|.zst]`, one line per annotation, plus the
binding's provider/model and the score threshold as object metadata, so a rebuild needs only the bucket.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from drtool.adapters import s3 as s3_adapter
from drtool.adapters.dify_annotations import (
    AnnotationApp,
    AnnotationRow,
    enabled_apps,
    iter_annotations,
    tables_present,
)
from drtool.adapters.dify_metadata import DifyReader
from drtool.core.chunk_writer import SUFFIX
from drtool.core.chunks import CHUNK_FILE_NAMES, KIND_ANNOTATION
from drtool.core.events import Emit
from drtool.ops.export.writer import DatasetExport, ExportOptions, write_chunk_file

log = logging.getLogger("drtool.annotations")

ROOT = "annotations/"
META_PROVIDER = "drtool-embedding-provider"
META_MODEL = "drtool-embedding-model"
META_THRESHOLD = "drtool-score-threshold"
META_KIND = "drtool-kind"


def annotation_key(app_id: str, compression: str = "none") -> str:
    """Key of an app's annotation file, relative to s3.key_prefix."""
    return f"{ROOT}{app_id}/processed/chunks.jsonl{SUFFIX[compression]}"


def annotation_record(row: AnnotationRow) -> dict[str, Any]:
    """One line of kind `annotation`: the annotation id, the text Dify embeds, the owning app and the reply."""
    return {"kind": KIND_ANNOTATION, "id": row.id, "text": row.embedded_text, "app_id": row.app_id,
            "answer": row.content}


def _ascii(value: str | None) -> str:
    """S3 user metadata is ASCII; a model name that is not cannot travel there (Postgres still has it)."""
    return value if value is not None and value.isascii() and value.isprintable() else ""


def export_annotations(reader: DifyReader, store: s3_adapter.BucketStore, options: ExportOptions, *,
                       emit: Emit) -> list[DatasetExport]:
    """Write one annotation file per app with annotation reply enabled, in the export's snapshot and lock."""
    if not tables_present(reader):
        log.info("no annotation tables in %s: nothing to export", reader.settings.database)
        emit({"event": "export.annotations_skipped", "reason": "Dify's annotation tables do not exist"})
        return []
    apps = enabled_apps(reader)
    emit({"event": "export.annotations_started", "apps": len(apps)})
    results: list[DatasetExport] = []
    for number, app in enumerate(apps, start=1):
        key = annotation_key(app.app_id, options.compression)
        result = DatasetExport(dataset_id=app.app_id, name=app.name, key=key, url=store.url(key), kind="annotation")
        if app.model_name is None or app.provider_name is None:
            # Dify itself answers nothing for such an app (annotation_reply finds no binding): report, go on.
            result.status = "skipped_no_binding"
            log.warning("app %s: annotation setting names collection binding %s, which does not exist",
                        app.app_id, app.binding_id)
        else:
            _export_app(reader, store, app, result, options, emit)
        log.info("[annotations %d/%d] app %s %s: %s, %d annotations", number, len(apps), app.app_id, app.name,
                 result.status, result.chunks)
        emit({"event": "export.annotations_exported", **result.to_dict()})
        results.append(result)
    return results


def _export_app(reader: DifyReader, store: s3_adapter.BucketStore, app: AnnotationApp, result: DatasetExport,
                options: ExportOptions, emit: Emit) -> None:
    extra = {META_KIND: KIND_ANNOTATION, META_PROVIDER: _ascii(app.provider_name), META_MODEL: _ascii(app.model_name),
             META_THRESHOLD: repr(app.score_threshold)}

    def records() -> Iterator[dict[str, Any]]:
        for row in iter_annotations(reader, app.app_id):
            if not row.embedded_text.strip():
                result.skipped_blank += 1
                continue
            yield annotation_record(row)
            form = "answer_as_text" if row.question_missing else "question"
            result.doc_forms[form] = result.doc_forms.get(form, 0) + 1
        if result.doc_forms.get("answer_as_text"):
            log.warning("app %s: %d annotation(s) have no question; their answer is the embedded text, as in Dify",
                        app.app_id, result.doc_forms["answer_as_text"])

    # The binding's model and the threshold are part of the identity: a changed model must re-export.
    write_chunk_file(store, result, records(), options, emit,
                     stale_keys=[k for k in (f"{ROOT}{app.app_id}/processed/{n}" for n in CHUNK_FILE_NAMES)
                                 if k != result.key],
                     identity=(extra[META_PROVIDER], extra[META_MODEL], extra[META_THRESHOLD]),
                     extra_metadata=extra, spool_prefix="drtool-annotations-")
