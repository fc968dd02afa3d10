"""A warm `rebuild-index` as a whole command vs a plain pymilvus insert loop of the same vectors (issue 16).

A warm rebuild has every vector in drtool's sidecar cache, so what is left is reading the chunk file and the
cache, inserting, the verification gate and the switch. The yardstick is the least any tool must do: a fresh
Python process that imports pymilvus, creates the collection (Dify's layout, drtool's adapter) and inserts the same
vectors in batches of 512, with nothing else. Both are timed as whole processes (interpreter start included), in
interleaved pairs, and the ratio of their medians is the figure (target <= 2x); the machine is shared, so only the
ratio measured in one run means anything.

    .venv/bin/python -m bench.rebuild.warm_vs_insert                 # 2,000 chunks, 3 pairs
    .venv/bin/python -m bench.rebuild.warm_vs_insert --chunks 20000
    .venv/bin/python -m bench.rebuild.warm_vs_insert --chunks 20000 --store server   # a real Milvus 2.3.5 server

Everything is real: SeaweedFS (tests/stack), Milvus Lite or the standalone Milvus server from PyPI's `milvus`,
the offline all-MiniLM-L6-v2 for the cold run that fills the cache, prose from Python's standard library
docstrings (PSF License).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.rebuild.run import RESULTS, ROOT, _run, chunk_file, seaweed_env

BATCH = 512  # drtool's default rebuild.batch_size

PLAIN_LOOP = """
import json, sys, uuid
from drtool.adapters.milvus import MilvusTarget
from drtool.config import MilvusSettings
rows = json.load(open(sys.argv[2]))
target = MilvusTarget(MilvusSettings(uri=sys.argv[1]))
name = "plain_" + uuid.uuid4().hex[:8]
target.create(name, len(rows[0]["vector"]))
for k in range(0, len(rows), int(sys.argv[3])):
    target.client.insert(name, rows[k:k + int(sys.argv[3])])
target.finish(name)
target.close()
"""


EXPORT = """
import json, sys
from pymilvus import MilvusClient
client = MilvusClient(sys.argv[1])
client.load_collection(sys.argv[2])
rows = []
iterator = client.query_iterator(sys.argv[2], batch_size=1000, filter="id >= 0",
                                 output_fields=["page_content", "metadata", "vector"])
while batch := iterator.next():
    rows.extend({"page_content": r["page_content"], "metadata": r["metadata"],
                 "vector": [float(x) for x in r["vector"]]} for r in batch)
iterator.close()
client.close()
json.dump(rows, open(sys.argv[3], "w"))
print(len(rows))
"""


def _vectors(uri: str, collection: str, path: Path) -> int:
    """The built collection's rows (text, metadata, vector), for the plain loop to insert again; in a child
    process, because Milvus Lite serves a file to one process and the next warm run needs it."""
    out = subprocess.run([sys.executable, "-c", EXPORT, uri, collection, str(path)], check=True, cwd=ROOT,
                         capture_output=True, text=True, env={**os.environ, "GRPC_VERBOSITY": "NONE"})
    return int(out.stdout.strip().splitlines()[-1])


def _plain(uri: str, rows_file: Path) -> float:
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", PLAIN_LOOP, uri, str(rows_file), str(BATCH)], check=True,
                   cwd=ROOT, env={**os.environ, "GRPC_VERBOSITY": "NONE"})
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=2000)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--store", choices=("lite", "server"), default="lite",
                        help="Milvus Lite files, or one real Milvus server for both sides")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from drtool.core.naming import dify_collection_name
    from tests.rebuild.prose import texts as prose
    from tests.stack.milvus_server import local_milvus_server
    from tests.stack.seaweed_clusters import local_seaweed_pair

    texts = prose(args.chunks)
    work = Path(tempfile.mkdtemp(prefix="drtool-bench-warm-"))
    with contextlib.ExitStack() as stack:
        server_uri = stack.enter_context(local_milvus_server(work / "milvus")).uri if args.store == "server" else None
        clusters = stack.enter_context(local_seaweed_pair(work / "seaweed"))
        uri = server_uri or str(work / "milvus.db")
        client = clusters.a.s3_client()
        client.create_bucket(Bucket="bench")
        env = seaweed_env(clusters.a, DRTOOL_MILVUS_URI=uri)
        ds = str(uuid.uuid4())
        client.put_object(Bucket="bench", Key=f"datasets/{ds}/processed/chunks.jsonl", Body=chunk_file(ds, texts))
        cold, cold_wall, _ = _run(env, "--dataset", ds)
        print(f"cold {cold_wall:.1f} s, embedded {cold['datasets'][0]['embedded']}", flush=True)
        rows_file = work / "rows.json"
        rows = _vectors(uri, dify_collection_name(ds), rows_file)
        pairs: list[dict[str, Any]] = []
        for i in range(args.pairs):
            warm, warm_wall, _ = _run(env, "--dataset", ds)
            report = warm["datasets"][0]
            assert report["embedded"] == 0, "the warm run must find every vector cached"
            # Lite: a file of its own, like a fresh store; server: a fresh collection on the same server.
            plain_wall = _plain(server_uri or str(work / f"plain-{i}.db"), rows_file)
            pairs.append({"warm_wall_s": round(warm_wall, 2), "plain_wall_s": round(plain_wall, 2),
                          "ratio": round(warm_wall / plain_wall, 2), "warm_stage_seconds": report["stage_seconds"]})
            print(f"pair {i + 1}: warm {warm_wall:.1f} s, plain loop {plain_wall:.1f} s, "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
    median = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    warm_med, plain_med = median([p["warm_wall_s"] for p in pairs]), median([p["plain_wall_s"] for p in pairs])
    results = {"chunks": args.chunks, "rows": rows, "cpus": os.cpu_count(), "pairs": pairs,
               "cold_wall_s": round(cold_wall, 1), "warm_wall_s": warm_med, "plain_wall_s": plain_med,
               "warm_vs_plain": round(warm_med / plain_med, 2), "load_average": round(os.getloadavg()[0], 1),
               "store": args.store}
    _write(results)


def _write(results: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "rebuild_warm" if results["store"] == "lite" else "rebuild_warm_server"
    store = "Milvus Lite" if results["store"] == "lite" else "a Milvus 2.3.5 standalone server"
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "# Warm rebuild vs a plain insert loop",
        "",
        f"`{' '.join(['.venv/bin/python -m bench.rebuild.warm_vs_insert', *sys.argv[1:]])}` on {results['cpus']} "
        f"CPUs (load average {results['load_average']}, shared machine); {results['chunks']} chunks; SeaweedFS + "
        f"{store}; whole processes, interleaved pairs, medians.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| cold rebuild, whole command (fills the cache) | {results['cold_wall_s']} s |",
        f"| warm rebuild, whole command (0 texts embedded; no model loaded) | {results['warm_wall_s']} s |",
        f"| plain pymilvus insert loop of the same {results['rows']} vectors, whole process | "
        f"{results['plain_wall_s']} s |",
        f"| **warm / plain** | **{results['warm_vs_plain']}x** (target <= 2x) |",
        "",
        "| pair | warm s | plain s | ratio | warm stages (s) |",
        "|---|---|---|---|---|",
    ]
    for i, p in enumerate(results["pairs"], 1):
        stages = ", ".join(f"{k} {float(v):.2f}" for k, v in p["warm_stage_seconds"].items())
        lines.append(f"| {i} | {p['warm_wall_s']} | {p['plain_wall_s']} | {p['ratio']} | {stages} |")
    lines += ["", "The warm run also reads the chunk file and the sidecar cache from object storage, writes a "
              "checkpoint per batch, runs the verification gate (count, self-retrieval, Dify's filtered query on "
              "`rebuild.sample` chunks) and switches by rename; the plain loop does none of that.", ""]
    (RESULTS / f"{name}.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
