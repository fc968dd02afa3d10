"""Annotation replies (issue #13): `AnnotationRebuilder`, the rebuild of the per-app annotation collections.

A Rebuilder whose plan, parser, sidecar location and gate are the annotation ones, on the files export-chunks
writes (drtool/ops/export/annotations.py, which also says how Dify keeps these collections); the gate asks Dify's
own annotation query (top 1, score above the app's threshold) for sampled questions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from drtool.adapters.dify_annotations import AnnotationApp, enabled_apps, tables_present
from drtool.adapters.dify_metadata import DifyReader
from drtool.core import naming
from drtool.core.chunks import CHUNK_FILE_NAMES, KIND_ANNOTATION
from drtool.errors import NotFoundError, UsageError
from drtool.ops.export.annotations import META_MODEL, META_PROVIDER, META_THRESHOLD, ROOT
from drtool.ops.rebuild.options import DatasetReport
from drtool.ops.rebuild.plan import Plan, head_chunk_file, same_model, split_dify_ids
from drtool.ops.rebuild.rebuilder import Rebuilder
from drtool.ops.rebuild.sidecar import VectorSidecar, model_folder


def collection_for(app_id: str, prefix: str) -> str:
    """Dify's collection for an app's annotations: gen_collection_name_by_id(app_id) (Milvus, Weaviate, pgvector)."""
    return naming.dify_collection_name(app_id, prefix)


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

    def open_sidecar(self, plan: Plan, dim: int) -> VectorSidecar:
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
