"""Adaptive concurrency of the OpenAI-compatible provider: the AIMD rules exactly, then against a real server.

The real-server tests give the test embedding server a known capacity (6 requests in flight, 0.2 s each; beyond
6 it answers 429 with Retry-After) and run the provider through the rebuild's own pipeline primitive. They assert
behaviour (it grew above its start, backed off on 429s, stayed under the operator's ceiling, lost nothing, kept
order), never speed: throughput against the known capacity is measured in bench/rebuild/provider_capacity.py.
"""

from __future__ import annotations

import threading
import time
import uuid

import numpy as np
import pytest

from drtool.adapters.embedders import OpenAIEmbedder
from drtool.config import EmbeddingSettings
from drtool.core.concurrency import AdaptiveLimit, ConcurrencyGate
from drtool.core.naming import dify_collection_name
from drtool.core.pipeline import batched, ordered_map
from drtool.errors import UnavailableError
from tests.rebuild.conftest import ChunkBucket, RunCli, make_chunks, summary
from tests.stack.embedding_server import EmbeddingServer, cheap_vector
from tests.stack.milvus_store import MilvusTestTarget

# --- the controller (pure) -------------------------------------------------------------------------------------


def test_slow_start_doubles_per_round_then_grows_by_one_per_round() -> None:
    limit = AdaptiveLimit(maximum=64, initial=4)
    for _ in range(4):
        limit.on_success(0.1, limit.epoch)
    assert limit.allowed == 8  # one round of 4 answers: doubled
    for _ in range(12):
        limit.on_success(0.1, limit.epoch)
    assert limit.allowed == 20
    limit.on_overload(limit.epoch)
    assert limit.limit == pytest.approx(17.0) and limit.refused_at == 20
    for _ in range(17):  # one round at the new limit: +1, not doubled
        limit.on_success(0.1, limit.epoch)
    assert 17.9 < limit.limit < 18.1


def test_the_level_that_was_refused_is_probed_slowly() -> None:
    limit = AdaptiveLimit(maximum=64, initial=8)
    limit.on_overload(limit.epoch)  # refused at 8: 6.8
    while limit.allowed < 7:
        limit.on_success(0.1, limit.epoch)
    at_seven = limit.limit
    for _ in range(7):  # a round at 7: the next step (8) was refused, so a quarter step
        limit.on_success(0.1, limit.epoch)
    assert limit.limit - at_seven == pytest.approx(0.25, abs=0.02)
    while limit.allowed < 9:  # once past the refused level, the provider bears more: normal growth again
        limit.on_success(0.1, limit.epoch)
    assert limit.refused_at is None


def test_one_burst_of_429s_shrinks_the_limit_once() -> None:
    limit = AdaptiveLimit(maximum=64, initial=10)
    started = limit.epoch  # ten requests sent together, all refused
    for _ in range(10):
        limit.on_overload(started)
    assert limit.limit == pytest.approx(8.5)
    assert (limit.overloads, limit.decreases) == (10, 1)
    limit.on_overload(limit.epoch)  # a request sent after the decrease is new evidence
    assert limit.limit == pytest.approx(8.5 * 0.85)


def test_never_above_the_operators_ceiling_nor_below_one() -> None:
    limit = AdaptiveLimit(maximum=5, initial=4)
    for _ in range(100):
        limit.on_success(0.1, limit.epoch)
    assert limit.allowed == 5 and limit.peak == 5
    for _ in range(50):
        limit.on_overload(limit.epoch)
    assert limit.allowed == 1
    assert AdaptiveLimit(maximum=2, initial=4).allowed == 2  # the start is capped too


def test_rising_latency_shrinks_the_limit_without_any_429() -> None:
    limit = AdaptiveLimit(maximum=64, initial=16)
    for _ in range(20):
        limit.on_success(0.1, limit.epoch)
    before = limit.limit
    for _ in range(10):  # a queue forms at the provider: answers take 5x longer
        limit.on_success(0.5, limit.epoch)
    assert limit.decreases >= 1 and limit.limit < before
    assert limit.overloads == 0


def test_no_growth_without_evidence_when_the_caller_sends_fewer_than_allowed() -> None:
    limit = AdaptiveLimit(maximum=64, initial=4)
    for _ in range(100):
        limit.on_success(0.1, limit.epoch, saturated=False)
    assert limit.allowed == 4


def test_the_gate_holds_every_new_request_for_retry_after() -> None:
    gate = ConcurrencyGate(AdaptiveLimit(maximum=4, initial=4))
    with gate.slot() as slot:
        slot.outcome, slot.retry_after = "overload", 0.3
    refused_at = time.monotonic()
    admitted: list[float] = []

    def request() -> None:
        with gate.slot() as s:
            admitted.append(time.monotonic())
            s.outcome = "ok"

    threads = [threading.Thread(target=request) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert len(admitted) == 3
    assert min(admitted) - refused_at >= 0.29  # a lower bound: waiting is the behaviour, not a speed
    assert gate.controller is not None and gate.controller.decreases == 1


# --- against the real test embedding server -----------------------------------------------------------------------


def _embedder(server: EmbeddingServer, **overrides: object) -> OpenAIEmbedder:
    values: dict[str, object] = {"provider": "openai", "base_url": server.base_url, "api_key": server.api_key,
                                 "model": server.model_name, "dimensions": server.dimensions, "batch_size": 8,
                                 "max_attempts": 8}
    values.update(overrides)
    return OpenAIEmbedder(EmbeddingSettings(**values))  # type: ignore[arg-type]


def _run(embedder: OpenAIEmbedder, texts: list[str]) -> list[list[float]]:
    """The rebuild's pipeline: ordered_map over batches, embedder.concurrency workers, workers + 1 in flight."""
    workers = embedder.concurrency
    out: list[list[float]] = []
    for _batch, vectors in ordered_map(embedder.embed, batched(texts, 8), workers=workers,
                                       max_in_flight=workers + 1):
        out.extend(vectors)
    return out


def _texts(n: int) -> list[str]:
    return [f"chunk {i}: the quick brown fox number {i * 7919 % 1000} jumps" for i in range(n)]


def _assert_in_order(texts: list[str], vectors: list[list[float]], dimensions: int) -> None:
    assert len(vectors) == len(texts)
    expected = np.stack([cheap_vector(t, dimensions) for t in texts])
    np.testing.assert_allclose(np.asarray(vectors, dtype=np.float32), expected, atol=1e-5)


def test_adapts_to_a_gateway_that_refuses_beyond_six(embedding_server: EmbeddingServer) -> None:
    if not embedding_server.controllable:
        pytest.skip("needs the in-process test embedding server (set_capacity)")
    embedding_server.set_capacity(6, 0.2, cheap=True)
    texts = _texts(480)  # 60 requests of 8 texts
    embedder = _embedder(embedding_server)
    try:
        vectors = _run(embedder, texts)
    finally:
        embedder.close()
    limit = embedder.gate.controller
    assert limit is not None
    _assert_in_order(texts, vectors, embedding_server.dimensions)  # nothing failed, nothing lost, file order
    statuses = [r.status for r in embedding_server.history if r.path.endswith("/embeddings")]
    assert statuses.count(200) == 60
    assert embedder.gate.peak_in_flight > 4  # it grew above its start (4) ...
    assert statuses.count(429) >= 1 and limit.decreases >= 1  # ... found the gateway's limit and backed off
    assert limit.allowed <= 7  # and ended near the capacity (6), not at the ceiling (16)
    assert embedding_server.peak_in_flight == 6


def test_an_explicit_ceiling_is_never_exceeded(embedding_server: EmbeddingServer) -> None:
    if not embedding_server.controllable:
        pytest.skip("needs the in-process test embedding server (set_capacity)")
    embedding_server.set_capacity(6, 0.05, cheap=True)
    texts = _texts(160)
    embedder = _embedder(embedding_server, concurrency=3)
    try:
        vectors = _run(embedder, texts)
    finally:
        embedder.close()
    _assert_in_order(texts, vectors, embedding_server.dimensions)
    assert embedding_server.peak_in_flight <= 3 and embedder.gate.peak_in_flight == 3
    assert not [r for r in embedding_server.history if r.status == 429]


def test_a_run_of_429s_longer_than_max_attempts_is_waited_out(embedding_server: EmbeddingServer) -> None:
    """Busy is not broken: many 429s in a row (N workers sharing one provider) are retried for
    embedding.overload_wait seconds, not max_attempts tries; the request then succeeds."""
    embedder = _embedder(embedding_server, concurrency=1, max_attempts=2, overload_wait=60.0)
    embedding_server.fail_next(429, count=7, retry_after=0.05)
    try:
        [vector] = embedder.embed(["still served"])
    finally:
        embedder.close()
    assert len(vector) == embedding_server.dimensions
    assert [r.status for r in embedding_server.history] == [429] * 7 + [200]


def test_429s_past_overload_wait_stop_the_request_with_what_to_do(embedding_server: EmbeddingServer) -> None:
    embedder = _embedder(embedding_server, concurrency=1, max_attempts=50, overload_wait=1.0)
    embedding_server.fail_next(429, count=1000, retry_after=0.2)
    started = time.monotonic()
    try:
        with pytest.raises(UnavailableError) as caught:
            embedder.embed(["quota exhausted"])
        tries = len(embedding_server.history)
    finally:
        embedder.close()
        embedding_server.reset()  # the 429s left queued
    assert time.monotonic() - started >= 1.0
    assert "still refused the request for load after 1 s (embedding.overload_wait)" in caught.value.message
    assert "--resume" in (caught.value.hint or "")
    assert 3 <= tries < 50  # bounded by the wait, not by max_attempts


def test_other_5xx_still_count_against_max_attempts(embedding_server: EmbeddingServer) -> None:
    embedder = _embedder(embedding_server, concurrency=1, max_attempts=3, overload_wait=600.0)
    embedding_server.fail_next(500, count=10)
    try:
        with pytest.raises(UnavailableError, match="kept failing: HTTP 500"):
            embedder.embed(["broken"])
        statuses = [r.status for r in embedding_server.history]
    finally:
        embedder.close()
        embedding_server.reset()  # the 500s left queued
    assert statuses == [500] * 3


def test_without_adaptation_the_ceiling_is_held_and_429s_are_retried(embedding_server: EmbeddingServer) -> None:
    if not embedding_server.controllable:
        pytest.skip("needs the in-process test embedding server (set_capacity)")
    embedding_server.set_capacity(2, 0.05, cheap=True)
    texts = _texts(80)
    embedder = _embedder(embedding_server, concurrency=4, adaptive=False, max_attempts=50)
    try:
        vectors = _run(embedder, texts)
    finally:
        embedder.close()
    _assert_in_order(texts, vectors, embedding_server.dimensions)
    assert embedder.gate.controller is None and embedder.gate.peak_in_flight == 4
    assert [r for r in embedding_server.history if r.status == 429]


def test_a_rebuild_uses_the_capacity_and_stores_every_vector(rebuild_env: dict[str, str],
                                                             chunk_bucket: ChunkBucket, run_cli: RunCli,
                                                             embedding_server: EmbeddingServer,
                                                             milvus_target: MilvusTestTarget,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole command: ops/rebuild/build.py's pipeline keeps enough units in flight for the gate to adapt."""
    if not embedding_server.controllable:
        pytest.skip("needs the in-process test embedding server (set_capacity)")
    ds = str(uuid.uuid4())
    # 30 units of one 16-text request each, 0.4 s per request: enough rounds past the limit that a busy machine
    # (the main thread storing units more slowly, so fewer are submitted) still sends a 7th request at once.
    chunks = make_chunks(ds, 480)
    chunk_bucket.put_chunks(ds, chunks)
    monkeypatch.setenv("DRTOOL_REBUILD_BATCH_SIZE", "16")
    monkeypatch.setenv("DRTOOL_EMBEDDING_BATCH_SIZE", "16")
    embedding_server.set_capacity(6, 0.4, cheap=True)
    code, events = run_cli("rebuild-index", "--dataset", ds)
    result = summary(events)["datasets"][0]
    assert code == 0, result
    assert result["inserted"] == 480 and result["verification"]["count"] == 480
    assert embedding_server.peak_in_flight == 6  # grew from 4 to the provider's limit ...
    assert [r for r in embedding_server.history if r.status == 429]  # ... probed past it, and still lost nothing
    name = dify_collection_name(ds)
    milvus_target.track(name)
    client = milvus_target.client()
    try:
        client.load_collection(name)
        rows = client.query(name, filter="id >= 0", output_fields=["page_content", "vector"], limit=1000)
    finally:
        client.close()
    assert len(rows) == 480
    for row in rows:  # each chunk's own vector, not a neighbour's: order survived the concurrency
        np.testing.assert_allclose(np.asarray(row["vector"], dtype=np.float32),
                                   cheap_vector(row["page_content"], embedding_server.dimensions), atol=1e-5)
