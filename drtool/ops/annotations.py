"""Annotation replies (issue #13): export, rebuild and verify the per-app collections Dify answers annotations from.

An app with annotation reply enabled (a row in `app_annotation_settings`) has its question/answer pairs embedded
into a collection of its own: Dify builds a transient Dataset whose id is the *app id* and whose model is the
setting's `dataset_collection_bindings` row, so the collection is `gen_collection_name_by_id(app_id)` =
`<VECTOR_INDEX_NAME_PREFIX>_<app id with _>_Node` on Milvus, Weaviate and pgvector, and each vector carries
`{annotation_id, app_id, doc_id}` with the question as its text. No `datasets.index_struct` names these
collections, so a rebuild that walks datasets misses them; this module covers them with the same file contract
(kind `annotation`), the same pipeline (ledger, gate, blue/green switch) and the same verify findings.

- export: `annotations/<app_id>/processed/chunks.jsonl[.gz|.zst]`, one line per annotation, plus the binding's
  provider/model and the score threshold as object metadata, so a rebuild needs only the bucket;
- rebuild: `AnnotationRebuilder`, a Rebuilder whose plan, parser, sidecar location and gate are the annotation
  ones; the gate asks Dify's own annotation query (top 1, score above the app's threshold) for sampled questions;
- verify: every enabled app's annotations are in its collection exactly once, with Dify's metadata.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
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
from drtool.core import naming
from drtool.core.chunk_writer import SUFFIX, text_digest
from drtool.core.chunks import CHUNK_FILE_NAMES, KIND_ANNOTATION, Chunk, CorruptStream
from drtool.errors import NotFoundError, UsageError
from drtool.ops.export_chunks import DatasetExport, Emit, ExportOptions, write_chunk_file
from drtool.ops.rebuild.options import DatasetReport
from drtool.ops.rebuild.plan import Plan, head_chunk_file, read_chunk_file, same_model, split_dify_ids
from drtool.ops.rebuild.rebuilder import Rebuilder
from drtool.ops.rebuild.sidecar import VectorSidecar, model_folder

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


def collection_for(app_id: str, prefix: str) -> str:
    """Dify's collection for an app's annotations: gen_collection_name_by_id(app_id) (Milvus, Weaviate, pgvector)."""
    return naming.dify_collection_name(app_id, prefix)


def _ascii(value: str | None) -> str:
    """S3 user metadata is ASCII; a model name that is not cannot travel there (Postgres still has it)."""
    return value if value is not None and value.isascii() and value.isprintable() else ""


# --- export --------------------------------------------------------------------------------------------------

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


# --- rebuild -------------------------------------------------------------------------------------------------

@dataclass
class AnnotationPlan(Plan):
    score_threshold: float | None = None


class AnnotationRebuilder(Rebuilder):
    """The dataset pipeline (ledger, caches, workers, gate, blue/green switch, Redis key) on annotation files.

    `apps`: the enabled apps read from Postgres (None without Postgres: the files and their object metadata are
    then the only source). `app_ids`: the apps asked for (empty: every enabled app, or every file).
    """

    chunk_kind = KIND_ANNOTATION
    file_label = "annotation file"
    listing_root = ROOT

    def __init__(self, *args: Any, apps: list[AnnotationApp] | None, app_ids: tuple[str, ...] = (),
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.apps = {a.app_id: a for a in apps} if apps is not None else None
        self.app_ids = app_ids

    def dataset_ids(self) -> list[str]:
        if self.app_ids:
            if self.apps is not None:
                unknown = [a for a in self.app_ids if a not in self.apps]
                if unknown:
                    raise NotFoundError(f"app(s) without annotation reply enabled: {', '.join(unknown)}",
                                        hint="check --app; Dify keeps no annotation vectors for a disabled app",
                                        system="postgres")
            return list(dict.fromkeys(self.app_ids))
        if self.apps is not None:
            return [a for a, app in self.apps.items() if app.model_name]
        ids, self.refused_folders = split_dify_ids(self.store.list_folders(ROOT))
        return ids

    def plan(self, dataset_id: str) -> Plan:
        app_id = dataset_id
        found = head_chunk_file(self.store, f"{ROOT}{app_id}/processed/")
        if found is None:
            raise NotFoundError(f"no annotation file for app {app_id} at {self.store.url(f'{ROOT}{app_id}/processed/')}"
                                f"({', '.join(CHUNK_FILE_NAMES)})",
                                hint="run drtool export-chunks --annotations first", system="object store")
        stored = found.metadata
        model, provider = stored.get(META_MODEL) or None, stored.get(META_PROVIDER) or None
        threshold: float | None = None
        try:
            threshold = float(stored[META_THRESHOLD]) if stored.get(META_THRESHOLD) else None
        except ValueError:
            threshold = None
        if self.apps is not None:  # Postgres is the authority on today's binding and threshold
            app = self.apps.get(app_id)
            if app is None:
                raise NotFoundError(f"app {app_id} has no annotation reply enabled in Dify",
                                    hint="Dify keeps no annotation vectors for it; nothing to rebuild",
                                    system="postgres")
            model, provider, threshold = app.model_name, app.provider_name, app.score_threshold
        if model and not same_model(model, self.embedder.model_name):
            raise UsageError(f"app {app_id}'s annotations were embedded with {model!r} (its collection binding), "
                             f"but the configured model is {self.embedder.model_name!r}: Dify would query the "
                             "index with a different model",
                             hint="rebuild annotations of apps on another model in a run with that embedding.model")
        collection = collection_for(app_id, self.settings.vector.index_prefix)
        return AnnotationPlan(app_id, collection, f"annotations of app {app_id} (gen_collection_name_by_id)",
                              found.key, found.etag, found.size, model, provider, score_threshold=threshold)

    def _sidecar(self, plan: Plan, dim: int) -> VectorSidecar:
        sidecar = VectorSidecar(self.store, plan.dataset_id, self.embedder.model_id, dim)
        # Beside the annotation file: under datasets/ it would make `--all` take the app for a dataset.
        sidecar.prefix = f"{ROOT}{plan.dataset_id}/processed/vectors/{model_folder(self.embedder.model_id, dim)}/"
        sidecar.open()
        return sidecar

    def verify(self, plan: Plan, report: DatasetReport, build: str, dim: int, dify_cache: Any) -> dict[str, Any]:
        """Count, self-retrieval recall@k, and Dify's annotation query for each sampled question.

        Dify's annotation_reply calls search_by_vector(query, top_k=1, score_threshold=setting or 1) on the app's
        collection (the group_id filter it passes is ignored by Milvus and Weaviate), then loads the row named by
        the top hit's metadata annotation_id. A sampled question therefore passes when its own annotation is
        the single top hit, with Dify's text and metadata, and a score above the app's threshold.
        """
        target = self.target
        assert target is not None
        count, expected, problems = self._count_check(report, build, "annotations")
        sample = self._gate_sample(plan, dim, dify_cache)
        vectors = [v for _, v in sample]
        stored = plan.score_threshold if isinstance(plan, AnnotationPlan) else None
        threshold = stored or 1.0  # Dify: `annotation_setting.score_threshold or 1`
        note = ""
        if threshold >= 1.0:
            note = ("the app's score_threshold is 0 or unknown, which Dify turns into 1: Dify answers no annotation "
                    "of this app; only the top hit's identity is checked")
        k = max(1, self.rs.top_k)
        own = target.search_batch(build, vectors, k) if vectors else []
        top1 = target.search_batch(build, vectors, 1) if vectors else []
        dify_ok = 0
        failures: list[str] = []
        for i, (chunk, _) in enumerate(sample):
            best = top1[i][0] if top1[i] else None
            meta = (best or {}).get("metadata") or {}
            why = ""
            same = best is not None and str(meta.get("annotation_id")) == chunk.id
            # Two annotations with the same question tie: Dify answers with either one, before and after a rebuild.
            tie = best is not None and not same and best.get("text") == chunk.text
            want = chunk.vector_metadata() if same else {"annotation_id": str(meta.get("annotation_id")),
                                                         "app_id": chunk.dataset_id,
                                                         "doc_id": str(meta.get("annotation_id"))}
            if best is None:
                why = "nothing returned"
            elif not (same or tie):
                why = f"top hit is annotation {meta.get('annotation_id')!r}"
            elif best.get("text") != chunk.text:
                why = "text differs"
            elif any(str(meta.get(key)) != str(value) for key, value in want.items()):
                why = "metadata differs"
            elif threshold < 1.0 and not (best.get("score") is not None and float(best["score"]) > threshold):
                why = f"score {best.get('score')} not above the app's threshold {threshold}"
            if not why:
                dify_ok += 1
            elif len(failures) < 5:
                failures.append(f"{chunk.id} (line {chunk.line}): {why}")
        n = len(sample)
        recall = self._recall_check(sample, own, k, problems)
        if dify_ok != n:
            problems.append(f"Dify's annotation query (top 1, score > {threshold}) answered {dify_ok}/{n} sampled "
                            f"questions with their own annotation (failed: {', '.join(failures)})")
        return {"passed": not problems, "count": count, "expected": expected, "sample": n,
                f"recall_at_{k}": round(recall, 4), "dify_query_ok": dify_ok,
                "dify_filter": f"annotation reply: top 1, score > {threshold}", "score_threshold": threshold,
                "note": note, "problems": problems}


def read_enabled_apps(reader: DifyReader) -> list[AnnotationApp]:
    """Enabled apps, or none when the database predates annotation reply."""
    return enabled_apps(reader) if tables_present(reader) else []


# --- verify --------------------------------------------------------------------------------------------------

# Break kinds verify reports for annotation collections (added to drtool.ops.verify.KINDS).
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
