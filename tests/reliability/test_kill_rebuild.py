"""kill -9 at seeded random moments during `drtool rebuild-index` (Milvus Lite, HTTP embedder); after each,
`rebuild-index --resume` ends with exactly one vector per chunk (no duplicates, no gaps), no ledger or lock is
left, and the chunk file is unchanged. Half the trials start with drtool's vector cache emptied, so the kill also
lands while vectors are embedded and the cache is written (a quarter of them: embedding on this shared CPU is
what makes a trial slow)."""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from pymilvus import MilvusClient

from drtool.core.chunks import dumps_chunk
from drtool.core.naming import dify_collection_name
from tests.rebuild.conftest import make_chunks
from tests.reliability.conftest import InProcess, bucket_fingerprint
from tests.reliability.harness import (
    Kill,
    KillPoint,
    Trials,
    delays_over,
    reap_group,
    record_extra,
    rng_for,
    run_and_kill,
    temp_problems,
    timed_run,
    trials,
)

CHUNKS = 64


def _delete_prefix(client: Any, bucket: str, prefix: str) -> None:
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", ()):
            client.delete_object(Bucket=bucket, Key=o["Key"])


def _doc_ids(uri: str, name: str) -> Counter[str]:
    client = MilvusClient(uri)
    try:
        if not client.has_collection(name):
            return Counter()
        client.load_collection(name)
        rows = client.query(name, filter="id >= 0", output_fields=["metadata"], limit=16384)
        return Counter(r["metadata"]["doc_id"] for r in rows)
    finally:
        client.close()


def test_rebuild_index_resume_after_kill_9(minio_pair: Any, embedding_server: Any, cli: InProcess,
                                           tmp_path: Path) -> None:
    site = minio_pair.a
    client = site.s3_client()
    bucket = f"rel-rebuild-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    ds = str(uuid.uuid4())
    chunks = make_chunks(ds, CHUNKS)
    client.put_object(Bucket=bucket, Key=f"datasets/{ds}/processed/chunks.jsonl",
                      Body=b"".join(dumps_chunk(c) for c in chunks))
    want = {c["id"] for c in chunks}
    name = dify_collection_name(ds)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {
        "DRTOOL_S3_ENDPOINT": site.endpoint, "DRTOOL_S3_BUCKET": bucket, "DRTOOL_S3_ACCESS_KEY": site.access_key,
        "DRTOOL_S3_SECRET_KEY": site.secret_key, "DRTOOL_S3_ADDRESS_STYLE": "path", "DRTOOL_VECTOR_STORE": "milvus",
        "DRTOOL_EMBEDDING_PROVIDER": "openai", "DRTOOL_EMBEDDING_BASE_URL": embedding_server.base_url,
        "DRTOOL_EMBEDDING_API_KEY": embedding_server.api_key, "DRTOOL_EMBEDDING_MODEL": embedding_server.model_name,
        "DRTOOL_EMBEDDING_DIMENSIONS": str(embedding_server.dimensions), "DRTOOL_EMBEDDING_BATCH_SIZE": "8",
        "DRTOOL_REBUILD_BATCH_SIZE": "8", "DRTOOL_REBUILD_SAMPLE": "8", "TMPDIR": str(tmp),
    }
    vectors = f"datasets/{ds}/processed/vectors/"
    skip = (vectors, "drtool/")
    source_before = bucket_fingerprint(client, bucket, versions=False, skip=skip)
    args = ["rebuild-index", "--dataset", ds]

    cold = timed_run(args, {**env, "DRTOOL_MILVUS_URI": str(tmp_path / "cold.db")})
    assert cold.code == 0, cold.stderr
    warm = timed_run(args, {**env, "DRTOOL_MILVUS_URI": str(tmp_path / "warm.db")})
    assert warm.code == 0, warm.stderr
    record_extra("calibration", command="rebuild-index", seconds=round(warm.seconds, 3),
                 first_event_s=warm.first_event_s, cold_seconds=round(cold.seconds, 3))
    n = trials()
    rng = rng_for("rebuild-index")
    empty_cache = [rng.random() < 0.25 for _ in range(n)]
    # A third before the first event: connecting, planning, the ledger and the collection come before it.
    cold_points = delays_over(rng, n, cold, startup_share=0.3)
    warm_points = delays_over(rng, n, warm, startup_share=0.3)
    delays = [cold_points[i] if empty_cache[i] else warm_points[i] for i in range(n)]
    runner = Trials("rebuild-index")

    def one(i: int, point: KillPoint) -> tuple[Kill, list[str]]:
        uri = str(tmp_path / f"trial-{i}.db")
        trial_env = {**env, "DRTOOL_MILVUS_URI": uri}
        if empty_cache[i]:
            _delete_prefix(client, bucket, vectors)
        kill = run_and_kill(args, trial_env, point.delay_s, after_first_event=point.after_first_event)
        reap_group(kill.pgid)  # Milvus Lite's server of the killed run must not hold the file open
        if empty_cache[i] and kill.killed:
            kill.last_event += " (cold cache)"
        problems: list[str] = []
        resumed = cli([*args, "--resume"], trial_env)
        if resumed.code != 0:
            failed = [e.get("error") for e in resumed.events() if e.get("event") == "rebuild.dataset_failed"]
            problems.append(f"--resume exit {resumed.code}: {failed or resumed.stderr.strip()[-400:]}")
        counts = _doc_ids(uri, name)
        if set(counts) != want:
            problems.append(f"gaps: {len(want - set(counts))} chunk(s) missing, {len(set(counts) - want)} unknown")
        dupes = [k for k, c in counts.items() if c > 1]
        if dupes:
            problems.append(f"duplicates: {len(dupes)} chunk(s) stored more than once")
        left = [k for k, *_ in bucket_fingerprint(client, bucket, versions=False) if k.startswith("drtool/")]
        if left:
            problems.append(f"ledger or lock left behind: {left}")
        problems += temp_problems(tmp)
        return kill, problems

    runner.run(n, delays, one)
    record_extra("phases", command="rebuild-index", phases=runner.phases())
    assert bucket_fingerprint(client, bucket, versions=False, skip=skip) == source_before, "the chunk file changed"
    runner.assert_ok()
