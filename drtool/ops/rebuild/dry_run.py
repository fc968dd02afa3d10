"""`rebuild-index --dry-run`: what a rebuild would embed and where it would build, with nothing written.

It reads the chunk file and both caches like a rebuild (so the count of texts to embed is exact) but calls no
model and creates nothing.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from drtool.core.pipeline import batched
from drtool.ops.rebuild.options import DatasetReport
from drtool.ops.rebuild.plan import Plan

if TYPE_CHECKING:
    from drtool.ops.rebuild.rebuilder import Rebuilder


def plan_dry_run(rebuilder: Rebuilder, plan: Plan, report: DatasetReport) -> None:
    dim = rebuilder.dimension(plan)
    dify_cache = rebuilder.dify_cache_for(plan)
    rebuilder.check_dimensions(plan, dim, dify_cache)
    sidecar = rebuilder.open_sidecar(plan, dim)
    report.mode = "dry-run"
    missing = 0
    for batch in batched(rebuilder.chunk_stream(plan, report, []), 256):
        todo = list(batch)
        if dify_cache is not None:
            hits = dify_cache.lookup([c.text for c in todo], dim)
            report.cache_hits_dify += len(hits)
            report.cache_vectors_ignored = dify_cache.ignored
            todo = [c for i, c in enumerate(todo) if i not in hits]
        misses = [c for c in todo if not sidecar.contains(hashlib.sha256(c.text.encode()).digest())]
        report.cache_hits_sidecar += len(todo) - len(misses)
        missing += len(misses)
    exists = rebuilder.target.exists(plan.collection) if rebuilder.target is not None else False
    bs = max(1, min(int(getattr(rebuilder.embedder, "max_call_items", rebuilder.settings.embedding.batch_size)),
                    rebuilder.rs.batch_size))
    report.plan = {"to_embed": missing, "model_calls": -(-missing // bs), "collection_exists": exists,
                   "would": "build beside it and switch (blue/green)" if exists
                            else "build beside the name, rename it in after the gate"
                            if rebuilder.target is not None and rebuilder.target.switch_is_rename
                            else "build in place"}
    report.status = "planned"
    rebuilder.emit({"event": "rebuild.dataset_planned", **report.to_dict()})
