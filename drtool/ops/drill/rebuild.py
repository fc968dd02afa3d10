"""Phase 3: rebuild_index, every high-quality dataset and every annotation-reply app of the restored database
rebuilt into scratch collections from the chunk files at the snapshot's versions, with the gate."""

from __future__ import annotations

import contextlib
from typing import Any

from drtool.errors import VerificationFailed
from drtool.ops.drill.options import DrillState
from drtool.ops.drill.pinned import PinnedChunkStore, chunk_pins
from drtool.ops.rebuild.annotations import AnnotationRebuilder
from drtool.ops.rebuild.options import DatasetReport, Options
from drtool.ops.rebuild.progress import ChunkProgressEvents
from drtool.ops.rebuild.rebuilder import Rebuilder
from drtool.ops.snapshot.catalog import SnapshotInfo
from drtool.ops.snapshot.destination import Destination
from drtool.wiring import dify_reader, rebuild_parts


def rebuild_index(drill: DrillState, dest: Destination, info: SnapshotInfo, detail: dict[str, Any]) -> None:
    scratch = drill.scratch_settings()
    datasets = sorted(scratch_datasets(drill))
    apps = [a for a in drill.scratch.annotation_apps if a.app_id in drill.scratch.annotation_collections]
    detail["datasets"] = len(datasets)
    detail["annotation_apps"] = len(apps)
    if not datasets and not apps:
        detail["note"] = "no high-quality dataset and no app with annotation reply: nothing to index"
        return
    # The scratch copy's parts, assembled where the command's are; its database always says what Dify used.
    parts = rebuild_parts(scratch, probe=False, metadata=True)
    store, target, embedder, meta = parts.store, parts.target, parts.embedder, parts.meta
    key_prefix = str(info.meta.get("source", {}).get("key_prefix", store.prefix) or "")
    source_bucket = str(info.meta.get("source", {}).get("bucket") or store.bucket)
    pinned = PinnedChunkStore(store, dest, chunk_pins(dest, info, drill.identities, key_prefix), source_bucket)
    reports: list[DatasetReport] = []
    app_reports: list[DatasetReport] = []
    try:
        if datasets:
            rebuilder = Rebuilder(scratch, Options(datasets=tuple(datasets)), store=pinned, target=target,
                                  embedder=embedder, meta=meta, emit=drill.emit, redis_url=None,
                                  progress=ChunkProgressEvents(drill.emit, "drill rebuild"))
            reports = rebuilder.run()
        if apps:
            # The enabled list read from the restored rows: Postgres, not the files, says which apps Dify
            # answers annotations for and with which model (as `rebuild-index --annotations` with Postgres).
            annotations = AnnotationRebuilder(scratch, Options(), store=pinned, target=target,
                                              embedder=embedder, meta=meta, emit=drill.emit, redis_url=None,
                                              apps=drill.scratch.annotation_apps,
                                              progress=ChunkProgressEvents(drill.emit, "drill annotations"))
            app_reports = annotations.run()
    finally:
        for part in (target, embedder, meta):
            with contextlib.suppress(Exception):
                part.close()
    read = pinned.pinned_reads
    dataset_pins = sum(1 for k in read if k.startswith("datasets/"))
    detail["model"] = embedder.model_id
    detail["chunk_files_at_snapshot_version"] = dataset_pins
    detail["chunk_files_current"] = len(datasets) - dataset_pins
    detail["per_dataset"] = [_report_row(r, "dataset_id", "valid") for r in reports]
    detail["chunks"] = sum(r.inserted for r in reports)
    if apps:
        annotation_pins = sum(1 for k in read if k.startswith("annotations/"))
        detail["annotation_files_at_snapshot_version"] = annotation_pins
        detail["annotation_files_current"] = len(apps) - annotation_pins
        detail["per_app"] = [_report_row(r, "app_id", "annotations") for r in app_reports]
        detail["annotations"] = sum(r.inserted for r in app_reports)
    failed = [f"{r.dataset_id}: {r.error}" for r in reports if r.status != "rebuilt"]
    failed_apps = [f"app {r.dataset_id}: {r.error}" for r in app_reports if r.status != "rebuilt"]
    if failed or failed_apps:
        parts: list[str] = []
        if failed:
            parts.append(f"{len(failed)} of {len(reports)} dataset(s) could not be rebuilt")
        if failed_apps:
            parts.append(f"{len(failed_apps)} of {len(app_reports)} annotation collection(s) could not be "
                         "rebuilt")
        raise VerificationFailed(" and ".join(parts) + ": " + "; ".join((failed + failed_apps)[:5]))


def scratch_datasets(drill: DrillState) -> list[str]:
    with dify_reader(drill.scratch_settings().postgres) as reader:
        return [d.id for d in reader.datasets() if d.indexing_technique == "high_quality"
                and d.provider != "external"]


def _report_row(r: DatasetReport, id_key: str, count_key: str) -> dict[str, Any]:
    """One dataset's or app's line of the drill report; apps name their id and valid count for what they are."""
    return {id_key: r.dataset_id, "collection": r.collection, "status": r.status, count_key: r.valid,
            "inserted": r.inserted, "embedded": r.embedded, "cache_hits": r.cache_hits_sidecar + r.cache_hits_dify,
            "rejected": r.rejected,
            "gate": {k: v for k, v in r.verification.items() if k != "problems"} if r.verification else None,
            "error": r.error}
