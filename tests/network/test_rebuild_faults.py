"""Network faults during rebuild-index: the embedding endpoint, Weaviate (REST and gRPC) and the object store that
holds the chunk files, each behind its own toxiproxy proxy.

A fault that clears within the retry budget: the run succeeds and the collection holds every chunk exactly once.
A fault that does not: exit 1, a `dataset_failed` event naming the system, the checkpoint ledger kept, and a
`--resume` run once the network is back finishes the job without duplicates.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from drtool.adapters.weaviate import WeaviateTarget
from drtool.config import WeaviateSettings
from drtool.core.naming import dify_collection_name
from drtool.errors import DrtoolError
from tests.helpers.events import first_dataset
from tests.helpers.weaviate import connect
from tests.network.conftest import (
    FAST_EMBEDDING,
    FAST_S3,
    FAST_WEAVIATE,
    ProcessRun,
    host_port,
    run_drtool,
    run_drtool_reacting,
)
from tests.rebuild.conftest import make_chunks
from tests.stack.minio_sites import MinioSites
from tests.stack.ports import free_port_containing
from tests.stack.toxiproxy import Proxy, Toxiproxy

CHUNKS = 40


@dataclass
class RebuildNet:
    env: dict[str, str]
    client: Any  # direct boto3 client
    bucket: str
    s3: Proxy
    embed: Proxy
    dataset: str
    chunks: list[dict[str, Any]]
    weaviate_http: Proxy | None = None
    weaviate_grpc: Proxy | None = None
    weaviate_client: Any = None

    def run(self, *args: str, extra: dict[str, str] | None = None) -> ProcessRun:
        return run_drtool(dict(self.env, **(extra or {})), "--json", "rebuild-index", "--dataset", self.dataset,
                          *args)

    def ledger(self, backend: str) -> dict[str, Any]:
        key = f"drtool/rebuild/{backend}/{dify_collection_name(self.dataset)}.json"
        return dict(json.loads(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()))

    def stored_ids(self) -> list[str]:
        """doc_id of every object behind the Dify collection name (alias), read directly from Weaviate."""
        assert self.weaviate_client is not None
        collection = self.weaviate_client.collections.get(dify_collection_name(self.dataset))
        return [str(o.properties["doc_id"]) for o in collection.iterator(return_properties=["doc_id"])]


def failed_event(run: ProcessRun) -> dict[str, Any]:
    return dict(next(e for e in run.events() if e.get("event") == "rebuild.dataset_failed"))


@pytest.fixture
def net(toxiproxy: Toxiproxy, minio_pair: MinioSites, embedding_server: Any, tmp_path: Any) -> RebuildNet:
    """Chunks of one dataset on MinIO A, a Milvus Lite target (a local file: no network to break), the test
    embedding endpoint; S3 and embeddings go through proxies."""
    site = minio_pair.a
    client = site.s3_client()
    bucket = f"netrebuild-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=bucket)
    dataset = str(uuid.uuid4())
    chunks = make_chunks(dataset, CHUNKS)
    body = b"".join(json.dumps(c).encode() + b"\n" for c in chunks)
    client.put_object(Bucket=bucket, Key=f"datasets/{dataset}/processed/chunks.jsonl", Body=body)
    s3 = toxiproxy.proxy("rebuild_s3", host_port(site.endpoint))
    embed = toxiproxy.proxy("embeddings", host_port(embedding_server.base_url))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRTOOL_")}
    env.update({
        "DRTOOL_S3_ENDPOINT": s3.url(), "DRTOOL_S3_BUCKET": bucket, "DRTOOL_S3_ACCESS_KEY": site.access_key,
        "DRTOOL_S3_SECRET_KEY": site.secret_key, "DRTOOL_S3_ADDRESS_STYLE": "path",
        "DRTOOL_VECTOR_STORE": "milvus", "DRTOOL_MILVUS_URI": str(tmp_path / "milvus.db"),
        "DRTOOL_EMBEDDING_PROVIDER": "openai", "DRTOOL_EMBEDDING_BASE_URL": embed.url(path="/v1"),
        "DRTOOL_EMBEDDING_API_KEY": embedding_server.api_key, "DRTOOL_EMBEDDING_MODEL": embedding_server.model_name,
        "DRTOOL_EMBEDDING_DIMENSIONS": str(embedding_server.dimensions), "DRTOOL_EMBEDDING_BATCH_SIZE": "8",
        "DRTOOL_EMBEDDING_CONCURRENCY": "2", "DRTOOL_REBUILD_BATCH_SIZE": "8", "DRTOOL_REBUILD_SAMPLE": "10",
        **FAST_S3, **FAST_EMBEDDING, **FAST_WEAVIATE,
    })
    return RebuildNet(env=env, client=client, bucket=bucket, s3=s3, embed=embed, dataset=dataset, chunks=chunks)


@pytest.fixture
def wnet(net: RebuildNet, toxiproxy: Toxiproxy, weaviate_server: Any) -> Iterator[RebuildNet]:
    """The same, with Weaviate as the target: REST and gRPC each through a proxy."""
    http = toxiproxy.proxy("weaviate_http", f"{weaviate_server.host}:{weaviate_server.http_port}")
    grpc = toxiproxy.proxy("weaviate_grpc", f"{weaviate_server.host}:{weaviate_server.grpc_port}")
    net.env.update({"DRTOOL_VECTOR_STORE": "weaviate", "DRTOOL_WEAVIATE_ENDPOINT": http.url(),
                    "DRTOOL_WEAVIATE_GRPC_ENDPOINT": grpc.listen})
    net.weaviate_http, net.weaviate_grpc = http, grpc
    net.weaviate_client = connect(weaviate_server)
    yield net
    net.weaviate_client.close()


def _complete(run: ProcessRun) -> dict[str, Any]:
    assert run.code == 0, run.stderr[-3000:]
    assert run.no_traceback
    result = first_dataset(run.events())
    assert result["status"] == "switched" or result.get("verification", {}).get("count") == CHUNKS, result
    return result


# --- faults that clear, or that only slow things down: the run succeeds -------------------------------------


def test_slow_network_on_every_path(wnet: RebuildNet) -> None:
    """Latency on the object store, the embedding endpoint and Weaviate REST + gRPC, and a bandwidth cap on the
    embedding answers: slower, and correct."""
    assert wnet.weaviate_http is not None and wnet.weaviate_grpc is not None
    wnet.s3.latency(50)
    wnet.embed.latency(150, jitter_ms=50)
    wnet.embed.bandwidth(200)
    wnet.weaviate_http.latency(50)
    wnet.weaviate_grpc.latency(50)
    _complete(wnet.run())
    assert sorted(wnet.stored_ids()) == sorted(c["id"] for c in wnet.chunks)


def test_resets_and_cut_answers_that_clear_within_budget(net: RebuildNet) -> None:
    """For the first second every object-store connection is reset and every embedding answer is cut after 1 KB
    (a batch of 8 vectors is ~25 KB); both paths retry past it."""
    reset = net.s3.reset_peer()
    cut = net.embed.limit_data(1024)
    net.s3.later(1.0, net.s3.remove_toxic, reset)
    net.embed.later(1.0, net.embed.remove_toxic, cut)
    result = _complete(net.run())
    assert result["verification"]["count"] == CHUNKS


def test_weaviate_grpc_resets_clear_within_budget(wnet: RebuildNet) -> None:
    """Every gRPC connection is reset until drtool has met the fault and announced its second try (a timer could
    clear it before a slow interpreter even connects: CI saw the opposite race fail the run at the connect check
    before drtool retried Weaviate calls)."""
    grpc = wnet.weaviate_grpc
    assert grpc is not None
    toxic = grpc.reset_peer()
    run, retried = run_drtool_reacting(
        wnet.env, "rebuild-index", "--dataset", wnet.dataset, marker="try 2 of",
        action=lambda: grpc.remove_toxic(toxic))
    assert retried, run.stderr[-3000:]
    assert "weaviate" in run.stderr.lower()
    _complete(run)
    assert sorted(wnet.stored_ids()) == sorted(c["id"] for c in wnet.chunks)


def test_weaviate_refused_request_is_not_retried(wnet: RebuildNet, caplog: pytest.LogCaptureFixture) -> None:
    """Only the network and overloaded servers are retried: a request Weaviate refuses (a collection that does not
    exist) fails on the first try, through the same proxies."""
    settings = WeaviateSettings(endpoint=wnet.env["DRTOOL_WEAVIATE_ENDPOINT"],
                                grpc_endpoint=wnet.env["DRTOOL_WEAVIATE_GRPC_ENDPOINT"], timeout=3, max_attempts=4)
    target = WeaviateTarget(settings)
    try:
        with caplog.at_level(logging.WARNING, logger="drtool.weaviate"), pytest.raises(DrtoolError) as caught:
            target.count(f"Missing_{uuid.uuid4().hex}")
    finally:
        target.client.close()
    assert "count Missing_" in str(caught.value)
    assert not [r for r in caplog.records if "try 2 of" in r.getMessage()], caplog.text
# --- faults that outlast the budget: exit 1 naming the system, then --resume finishes ------------------------


def test_embedding_stops_answering_then_resume(net: RebuildNet) -> None:
    net.embed.blackhole()
    failed = net.run(extra={"DRTOOL_EMBEDDING_TIMEOUT": "3", "DRTOOL_EMBEDDING_MAX_ATTEMPTS": "2"})
    assert failed.code == 1, failed.stderr[-3000:]
    assert failed.no_traceback, failed.stderr[-3000:]
    event = failed_event(failed)
    assert event["exit_code"] == 1 and "embedding endpoint" in event["error"], event
    assert net.embed.listen in event["error"]
    net.embed.clear()
    result = _complete(net.run("--resume"))
    assert result["verification"]["count"] == CHUNKS


def test_object_store_gone_then_resume(net: RebuildNet) -> None:
    net.s3.disable()
    failed = net.run()
    assert failed.code == 1, failed.stderr[-3000:]
    assert failed.no_traceback, failed.stderr[-3000:]
    text = failed.stderr + json.dumps(failed.events())
    assert "object store" in text and net.s3.listen in text, text[-3000:]
    net.s3.enable()
    result = _complete(net.run("--resume"))
    assert result["verification"]["count"] == CHUNKS


def test_weaviate_grpc_stops_answering_then_resume(wnet: RebuildNet) -> None:
    assert wnet.weaviate_grpc is not None
    wnet.weaviate_grpc.blackhole()
    failed = wnet.run()
    assert failed.code == 1, failed.stderr[-3000:]
    assert failed.no_traceback, failed.stderr[-3000:]
    text = failed.stderr + json.dumps(failed.events())
    assert "weaviate" in text.lower() and wnet.weaviate_grpc.listen in text, text[-3000:]
    wnet.weaviate_grpc.clear()
    _complete(wnet.run("--resume"))
    assert sorted(wnet.stored_ids()) == sorted(c["id"] for c in wnet.chunks)


def test_weaviate_grpc_hangs_mid_run_then_resume(wnet: RebuildNet) -> None:
    """gRPC stops answering after the first checkpoint, while inserts are in flight: the insert times out
    (2 x weaviate.timeout), the run exits 1 with the ledger kept, and --resume continues from it."""
    import threading
    import time

    assert wnet.weaviate_grpc is not None
    grpc = wnet.weaviate_grpc
    stop = threading.Event()

    def cut_after_first_checkpoint() -> None:
        while not stop.is_set():
            try:
                if wnet.ledger("weaviate").get("lines_done", 0) >= 8:
                    grpc.blackhole()
                    return
            except wnet.client.exceptions.NoSuchKey:
                pass
            time.sleep(0.05)

    watcher = threading.Thread(target=cut_after_first_checkpoint, daemon=True)
    watcher.start()
    failed = wnet.run(extra={"DRTOOL_REBUILD_BATCH_SIZE": "4", "DRTOOL_EMBEDDING_BATCH_SIZE": "4"})
    stop.set()
    watcher.join(timeout=10)
    assert failed.code == 1, failed.stderr[-3000:]
    assert failed.no_traceback, failed.stderr[-3000:]
    event = failed_event(failed)
    assert "weaviate" in event["error"].lower(), event
    done = wnet.ledger("weaviate")["lines_done"]
    assert 8 <= done < CHUNKS
    grpc.clear()
    result = _complete(wnet.run("--resume"))
    assert result["resumed_from_line"] == done
    assert sorted(wnet.stored_ids()) == sorted(c["id"] for c in wnet.chunks)


def test_weaviate_refused_on_a_port_containing_401_is_exit_1_then_runs(wnet: RebuildNet,
                                                                          toxiproxy: Toxiproxy) -> None:
    """Found by these tests: any "401" in the client's message meant AuthError, and the message of a refused
    connection holds the URL, e.g. http://127.0.0.1:40129: exit 12 "check weaviate.api_key". It is exit 1."""
    assert wnet.weaviate_http is not None
    proxy = toxiproxy.proxy("weaviate_401", wnet.weaviate_http.upstream, port=free_port_containing("401"))
    proxy.disable()
    failed = wnet.run(extra={"DRTOOL_WEAVIATE_ENDPOINT": proxy.url()})
    assert failed.code == 1, failed.stderr[-3000:]
    assert failed.no_traceback, failed.stderr[-3000:]
    assert "weaviate.api_key" not in failed.stderr and proxy.listen in failed.stderr, failed.stderr[-3000:]
    assert "weaviate" in failed.stderr.lower()
    _complete(wnet.run("--resume"))  # Weaviate reachable again (the normal proxy): the run completes
    assert sorted(wnet.stored_ids()) == sorted(c["id"] for c in wnet.chunks)
