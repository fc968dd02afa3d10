"""The verification gate of a rebuild: count, self-retrieval recall@k, and Dify's own filtered query on a sample,
all on the build collection before anything is switched. The annotation rebuild (drtool/ops/rebuild/annotations.py) uses
the count, the sample and the recall check with its own query test.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from drtool.core.chunks import Chunk
from drtool.core.ports import VectorStore
from drtool.ops.rebuild.build import GateSample
from drtool.ops.rebuild.options import DatasetReport
from drtool.ops.rebuild.sidecar import VectorSidecar


def count_check(target: VectorStore, report: DatasetReport, build: str, noun: str) -> tuple[int, int, list[str]]:
    """The gate's first test: (count, expected, problems). Chunks that share a store object (key_collisions)
    are one object, so the build holds that many fewer than the file's valid lines."""
    expected = report.valid - report.key_collisions
    count = target.count(build)
    return count, expected, [f"count {count} != {expected} valid {noun}"] if count != expected else []


def recall_check(sample: list[tuple[Chunk, list[float]]], own_hits: list[Any], k: int, min_recall_pct: float,
                 problems: list[str]) -> float:
    """Self-retrieval recall@k: the share of sampled chunks whose own vector finds them (by doc_id) in its k
    nearest; below rebuild.min_recall_pct the index is not what the file says, and a problem is added."""
    hits = sum(1 for (chunk, _), results in zip(sample, own_hits, strict=True)
               if any((r["metadata"] or {}).get("doc_id") == chunk.id for r in results))
    recall = hits / len(sample) if sample else 1.0
    minimum = min_recall_pct / 100
    if recall < minimum:
        problems.append(f"self-retrieval recall@{k} {recall:.3f} < {minimum:.2f}")
    return recall


def gate_sample(target: VectorStore, kept: GateSample, embedder: Any, dify_cache: Any, dim: int,
                open_sidecar: Callable[[], VectorSidecar]) -> list[tuple[Chunk, list[float]]]:
    """The gate's sample, each chunk with its vector: the build's when it embedded it, else Dify's cache, the
    sidecar (opened only when still needed), the model. Chunks that share a store object are left out: the
    object carries one of their ids, so the others could never find themselves."""
    collided = kept.collided

    def shared(chunk: Chunk) -> bool:
        key = target.object_key(chunk.text, chunk.vector_metadata())
        return key is not None and hashlib.blake2b(key.encode(), digest_size=8).digest() in collided

    sample = [item for item in kept.chunks if not shared(item[0])]
    need = [i for i, (_, v) in enumerate(sample) if v is None]
    texts = [sample[i][0].text for i in need]
    found: dict[int, list[float]] = dict(dify_cache.lookup(texts, dim)) if need and dify_cache is not None else {}
    rest = [j for j in range(len(need)) if j not in found]
    if rest:
        hits = open_sidecar().lookup([hashlib.sha256(texts[j].encode()).digest() for j in rest])
        for j, v in hits.items():
            found[rest[j]] = v
    rest = [j for j in range(len(need)) if j not in found]
    if rest:
        for j, v in zip(rest, embedder.embed([embedder.truncate(texts[j]) for j in rest]), strict=True):
            found[j] = v
    slot = {i: j for j, i in enumerate(need)}
    return [(chunk, v if v is not None else found[slot[i]]) for i, (chunk, v) in enumerate(sample)]


def check_chunks(target: VectorStore, build: str, sample: list[tuple[Chunk, list[float]]], k: int,
                 min_recall_pct: float, count: int, expected: int, problems: list[str]) -> dict[str, Any]:
    """The chunk gate's verdict after the count (`count`, `expected`, `problems` so far): each sampled chunk must
    find itself by its own vector (recall@k) and through Dify's filtered query, with its text and metadata."""
    dify_ok = 0
    dify_filter = ""
    failures: list[str] = []
    # The batch reads let a store answer the whole sample at once (Milvus: a server's Strong reads each wait
    # ~0.2 s); a store that cannot, answers them one by one (drtool.core.ports.VectorStoreDefaults).
    own_hits: list[Any] = []
    dify_hits: list[Any] = []
    if sample:
        vectors = [v for _, v in sample]
        own_hits = target.search_batch(build, vectors, k)
        dify_hits = target.dify_search_batch(build, vectors, k, [c.document_id for c, _ in sample])
    for i, (chunk, vector) in enumerate(sample):
        found_hits, dify_filter = dify_hits[i]
        match = next((r for r in found_hits if (r["metadata"] or {}).get("doc_id") == chunk.id), None)
        if match is None and len(found_hits) < k:  # a store that asked several documents at once (Milvus Lite)
            found_hits, _ = target.dify_search(build, vector, k, [chunk.document_id])  # may have crowded it out
            match = next((r for r in found_hits if (r["metadata"] or {}).get("doc_id") == chunk.id), None)
        want = chunk.vector_metadata()
        why = ""
        if match is None:
            why = "not returned"
        elif match["text"] != chunk.text:
            why = "text differs"
        elif any(str((match["metadata"] or {}).get(key)) != str(want[key])  # Weaviate may type a uuid
                 for key in ("doc_id", "doc_hash", "document_id", "dataset_id")):
            why = "metadata differs"
        elif any(str((r["metadata"] or {}).get("document_id")) != chunk.document_id for r in found_hits):
            why = "the document_id filter let other documents through"
        if not why:
            dify_ok += 1
        elif len(failures) < 5:
            failures.append(f"{chunk.id} (line {chunk.line}): {why}")
    n = len(sample)
    recall = recall_check(sample, own_hits, k, min_recall_pct, problems)
    if dify_ok != n:
        problems.append(f"Dify's query path returned {dify_ok}/{n} sampled chunks with their metadata "
                        f"(missing: {', '.join(failures)})")
    return {"passed": not problems, "count": count, "expected": expected, "sample": n,
            f"recall_at_{k}": round(recall, 4), "dify_query_ok": dify_ok, "dify_filter": dify_filter,
            "problems": problems}
