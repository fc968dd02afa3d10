"""`drtool audit`: how much of a vector index rebuild Dify's embedding cache would answer, and how much the model.

Why: after the vector database is lost, `drtool rebuild-index` takes each text's vector from Dify's `embeddings`
table when it is there (the very vector Dify stored) and sends the rest to the embedding model. The share that is
cached says whether a rebuild depends on the model being up, and roughly how long and how costly it is. It is
information, not a risk by itself: an `info` finding and the gauge `drtool_audit_embedding_cache_coverage_ratio`.

Cheap by design: per high-quality dataset one server-side count with an EXISTS on the cache's unique index
(DifyReader.count_cached_index_nodes), so it runs weekly on any size of knowledge base.
"""

from __future__ import annotations

from drtool.core.metrics import Metric
from drtool.core.terminal import one_line
from drtool.ops.audit.context import AuditRun
from drtool.wiring import dify_reader

LISTED = 5  # datasets named in the evidence, least covered first

COVERAGE_METRIC = "drtool_audit_embedding_cache_coverage_ratio"


def embedding_cache(audit: AuditRun) -> None:
    """Texts of every high-quality dataset whose vector Dify's cache holds for the dataset's own model."""
    rows: list[tuple[str, str, int, int]] = []  # (dataset id, name, texts, cached)
    with dify_reader(audit.settings.postgres) as reader:
        for d in reader.datasets():
            if d.indexing_technique != "high_quality" or d.provider == "external":
                continue
            if not d.embedding_model or not d.embedding_provider:
                total, cached = reader.count_index_nodes(d.id), 0  # no model recorded: nothing can be looked up
            else:
                total, cached = reader.count_cached_index_nodes(d.id, d.embedding_model, d.embedding_provider)
            rows.append((d.id, d.name, total, cached))
    audit.result.checked.append(f"drtool: embedding cache coverage of {len(rows)} high-quality dataset(s)")
    texts = sum(t for _, _, t, _ in rows)
    if not texts:
        return
    cached = sum(c for _, _, _, c in rows)
    ratio = cached / texts
    audit.result.gauges.append(Metric(COVERAGE_METRIC, "Share of the high-quality datasets' texts whose vector "
                                      "is in Dify's embedding cache for the dataset's model (a rebuild embeds the "
                                      "rest with the model).", ratio))
    worst = sorted((r for r in rows if r[2]), key=lambda r: (r[3] / r[2], r[0]))[:LISTED]
    listed = ", ".join(f"{one_line(name)!r} {100 * c / t:.1f} % ({c}/{t})" for _, name, t, c in worst)
    audit.add("drtool.embedding_cache_coverage",
              f"{cached} of {texts} text(s) of {len(rows)} high-quality dataset(s) ({100 * ratio:.1f} %) are in "
              f"Dify's embedding cache for their model; a rebuild would send {texts - cached} to the embedding "
              f"model; least covered: {listed}",
              "nothing to fix: keep embedding.* able to reach the model, since a rebuild embeds every uncached "
              "text (Dify fills the cache as it indexes; drtool's own vector sidecar under "
              "datasets/<id>/processed/vectors/, filled by an earlier rebuild, is not counted here)",
              f"{len(rows)} dataset(s)")
