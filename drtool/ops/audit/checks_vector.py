"""`drtool audit`: does each configured vector store answer, is each high-quality dataset's vector collection
there, and roughly as full as Postgres says?

A fast check, not a verification: one count(*) per collection through the VectorStore port against the number
of texts Dify indexes for the dataset (DifyReader.count_index_nodes, the very query `drtool verify` streams), so
it runs weekly on any size of knowledge base. `drtool verify` is the deep check that maps every vector back to
its row; a shortfall here says "run it".
"""

from __future__ import annotations

from drtool.adapters import vector_stores
from drtool.errors import ConfigError, DrtoolError
from drtool.ops.audit.context import AuditRun
from drtool.ops.verify.scanners import Scanners, collection_of
from drtool.wiring import dify_reader


def reachable(audit: AuditRun) -> None:
    backends = vector_stores.to_check(audit.settings)
    if not backends:
        audit.result.skipped.append("vector: no vector store configured")
        return
    for backend in backends:
        where = backend.location(audit.settings) or backend.name
        try:
            backend.check(audit.settings)
        except Exception as exc:
            hint = getattr(exc, "hint", None) or backend.hint
            audit.add("vector.unreachable", f"{backend.name} at {where}: {exc}", hint, where)
            continue
        audit.result.checked.append(f"vector: {backend.name} reachable")


def index_counts(audit: AuditRun) -> None:
    """Per high-quality dataset: a missing collection is critical, fewer vectors than indexed texts a warning.

    Why: after a vector database restore from an old backup, a failed migration or a half-finished rebuild the
    collections exist and answer, yet documents are missing from retrieval; nothing else in the audit sees that.
    Datasets whose vector store is not configured (or did not answer: that is `vector.unreachable`) are listed as
    skipped, never guessed at.
    """
    scanners = Scanners(audit.settings)
    unusable: dict[str, str] = {}  # backend -> why it was not counted
    compared = 0
    try:
        with dify_reader(audit.settings.postgres) as reader:
            for d in reader.datasets():
                if d.indexing_technique != "high_quality" or d.provider == "external":
                    continue
                backend, collection = collection_of(d, audit.settings)
                if backend is None or backend in unusable:
                    unusable.setdefault(backend or "?", "no index_struct and no vector.store")
                    continue
                try:
                    store = scanners.get(backend)
                    served = store.serves(collection)
                except ConfigError as exc:  # not configured, or a store drtool does not support
                    unusable[backend] = str(exc)
                    continue
                except DrtoolError as exc:
                    unusable[backend] = f"did not answer: {exc}"
                    continue
                expected = reader.count_index_nodes(d.id)
                compared += 1
                where = f"{store.describe()} collection {collection}"
                if not served:
                    if expected:
                        audit.add("vector.collection_missing",
                                  f"dataset {d.name!r}: {where} does not exist; Postgres has {expected} indexed "
                                  "text(s)", f"drtool rebuild-index --dataset {d.id} (then drtool verify --dataset "
                                  f"{d.id})", d.id)
                    continue
                have = store.count(collection)
                if have < expected:
                    audit.add("vector.count_short",
                              f"dataset {d.name!r}: {where} holds {have} vector(s); Postgres has {expected} "
                              f"enabled, completed text(s) ({expected - have} missing)",
                              f"drtool verify --dataset {d.id} (names the missing chunks), then drtool "
                              f"rebuild-index --dataset {d.id}", d.id)
    finally:
        scanners.close()
    audit.result.checked.append(f"vector: collection counts of {compared} high-quality dataset(s)")
    for backend, why in sorted(unusable.items()):
        audit.result.skipped.append(f"vector: collection counts in {backend} ({why})")
