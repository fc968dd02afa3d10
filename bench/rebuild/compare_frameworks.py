"""drtool's cold rebuild versus the same rebuild with LangChain's indexing API and a LlamaIndex IngestionPipeline.

Issue 4 asks how drtool compares with what an operator would otherwise script: `langchain_core.indexing.index`
(record manager + langchain-milvus) and llama-index's IngestionPipeline (+ llama-index-vector-stores-milvus). All
three get the same texts (real prose, tests/rebuild/prose.py), the same offline all-MiniLM-L6-v2 on the CPU
(drtool.adapters.embedders.default_local_model(), L2-normalised, model batch 64) and a fresh Milvus Lite file per
run with the same HNSW/IP M=8 efConstruction=64 index. Runs are interleaved (drtool, LangChain, LlamaIndex, drtool,
...) and medians reported, because the 2-core machine is shared and load drifts within minutes; CPU time (all
threads of the process) is the figure least disturbed by other load.

The timed region of each tool is its ingest pipeline: reading and parsing the chunks, embedding, inserting, with
the model already loaded and the store connected (drtool's `build_total`/`build_cpu`; for the frameworks the same
span measured around `index()` / `pipeline.run()` including reading the JSONL file). Interpreter start-up, model load
and drtool's verification gate are outside it; whole-process figures are reported as well.

The comparison packages are not drtool dependencies and must not go into the project venv: they pin pymilvus below
3 (llama-index-vector-stores-milvus) and pull their own trees. Install them beside it (see SETUP below), and this
script appends that folder AFTER the venv's site-packages, so torch, sentence-transformers and pymilvus 3.0.2 are the
venv's own.

    .venv/bin/python -m bench.rebuild.compare_frameworks                 # 2,000 chunks, 3 interleaved rounds
    .venv/bin/python -m bench.rebuild.compare_frameworks --chunks 20000 --repeat 1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
SITE = os.environ.get("DRTOOL_BENCH_CMP_SITE", "/tmp/cmp-site")
MODEL_BATCH = 64  # sentence-transformers batch, as drtool's embedding.batch_size default and bench/rebuild/run.py
DIM = 384
INDEX = {"index_type": "HNSW", "metric_type": "IP", "params": {"M": 8, "efConstruction": 64}}
# Resolved with `pip install --dry-run` against the project venv: everything the frameworks need that the venv does
# not already have, minus pymilvus (both integrations' latest releases are listed; llama-index's pins pymilvus<3).
PACKAGES = (
    "langchain-core==1.8.3 langchain-milvus==0.4.0 langchain-protocol==0.0.20 langsmith==0.15.1 jsonpatch==1.48 "
    "jsonpointer==3.12 requests-toolbelt==1.0.0 uuid_utils==0.19.0 xxhash==4.1.0 websockets==17.4 distro==1.9.0 "
    "sniffio==1.3.1 llama-index-core==0.14.25 llama-index-vector-stores-milvus==1.2.0 "
    "llama-index-instrumentation==0.6.0 llama-index-workflows==2.26.1 aiohttp==3.14.5 aiohappyeyeballs==2.7.1 "
    "aiosignal==1.4.0 aiosqlite==0.22.1 attrs==26.1.0 banks==2.5.1 colorama==0.4.6 dataclasses-json==0.6.7 "
    "defusedxml==0.7.1 Deprecated==1.3.1 dirtyjson==1.0.8 filetype==1.2.0 frozenlist==1.8.0 greenlet==3.5.6 "
    "griffe==2.4.1 griffecli==2.4.1 griffelib==2.4.1 marshmallow==3.26.2 multidict==7.2.1 mypy_extensions==1.2.0 "
    "nest-asyncio==1.6.0 nltk==3.10.4 pillow==13.0.0 platformdirs==4.14.8 propcache==0.5.4 SQLAlchemy==2.1.9 "
    "tiktoken==0.14.0 tinytag==2.3.2 typing-inspect==0.9.0 wrapt==2.5.2 yarl==1.25.1"
)
SETUP = f".venv/bin/pip install --no-deps --target {SITE} {PACKAGES}"


def _frameworks_importable() -> str | None:
    """None when both frameworks import from SITE with the venv's pymilvus; otherwise why not."""
    code = (f"import sys; sys.path.append({SITE!r}); import langchain_core.indexing, langchain_milvus, "
            "llama_index.core.ingestion, llama_index.vector_stores.milvus, pymilvus; print(pymilvus.__version__)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "import failed"
    return None


# ---------------------------------------------------------------- workers (child processes, one run each)

def _load_model() -> Any:
    from sentence_transformers import SentenceTransformer

    from drtool.adapters.embedders import default_local_model

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = SentenceTransformer(default_local_model(), device="cpu")
    model.encode(["warm-up"] * 8, batch_size=8, normalize_embeddings=True, show_progress_bar=False)
    return model


_MODEL_TIME = [0.0, 0.0]  # wall and CPU seconds spent inside the model, to separate it from the framework's own


def _encode(model: Any, texts: list[str]) -> list[list[float]]:
    t, cpu = time.monotonic(), time.process_time()
    out = model.encode(texts, batch_size=MODEL_BATCH, normalize_embeddings=True, convert_to_numpy=True,
                       show_progress_bar=False).tolist()
    _MODEL_TIME[0] += time.monotonic() - t
    _MODEL_TIME[1] += time.process_time() - cpu
    return out


def _read(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _count(client: Any, collection: str) -> int:
    client.flush(collection)
    rows = client.query(collection, filter="", output_fields=["count(*)"], consistency_level="Strong")
    return int(rows[0]["count(*)"])


def _worker_langchain(chunks_path: str, uri: str) -> dict[str, Any]:
    """LangChain's indexing API: hashes each document into the record manager, skips what it has seen, adds the rest.

    An in-memory record manager (an SQL one adds a SQLite write per batch); cleanup="incremental" with the Dify
    document id as source, the mode meant for re-indexing a changing corpus.
    """
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from langchain_core.indexing import InMemoryRecordManager, index
    from langchain_milvus import Milvus

    model = _load_model()

    class STEmbeddings(Embeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return _encode(model, list(texts))

        def embed_query(self, text: str) -> list[float]:
            return _encode(model, [text])[0]

    collection = "lc_" + uuid.uuid4().hex[:8]
    store = Milvus(embedding_function=STEmbeddings(), collection_name=collection, connection_args={"uri": uri},
                   index_params=INDEX, consistency_level="Session", auto_id=False)
    manager = InMemoryRecordManager(namespace=f"milvus/{collection}")
    manager.create_schema()
    t, cpu = time.monotonic(), time.process_time()
    docs = [Document(page_content=c["text"], metadata={"doc_id": c["id"], "document_id": c["document_id"],
                                                       "dataset_id": c["dataset_id"]}) for c in _read(chunks_path)]
    result = index(docs, manager, store, cleanup="incremental", source_id_key="document_id", key_encoder="sha256")
    wall, cpu_s = time.monotonic() - t, time.process_time() - cpu
    return {"wall_s": wall, "cpu_s": cpu_s, "model_wall_s": _MODEL_TIME[0], "model_cpu_s": _MODEL_TIME[1],
            "result": dict(result), "count": _count(store.client, collection)}


def _worker_llamaindex(chunks_path: str, uri: str) -> dict[str, Any]:
    """LlamaIndex: an IngestionPipeline whose only transformation is the embedding (the chunks are already split)."""
    from llama_index.core.embeddings import BaseEmbedding
    from llama_index.core.ingestion import IngestionPipeline
    from llama_index.core.schema import Document
    from llama_index.vector_stores.milvus import MilvusVectorStore
    from pydantic import PrivateAttr

    model = _load_model()

    class STEmbedding(BaseEmbedding):
        _model: Any = PrivateAttr()

        def __init__(self, st_model: Any, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._model = st_model

        def _get_query_embedding(self, query: str) -> list[float]:
            return _encode(self._model, [query])[0]

        async def _aget_query_embedding(self, query: str) -> list[float]:
            return self._get_query_embedding(query)

        def _get_text_embedding(self, text: str) -> list[float]:
            return _encode(self._model, [text])[0]

        def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
            return _encode(self._model, texts)

    collection = "li_" + uuid.uuid4().hex[:8]
    # llama-index's default embed_batch_size is 10; 64 gives the model the same batches as the other two tools.
    embed = STEmbedding(model, model_name="all-MiniLM-L6-v2", embed_batch_size=MODEL_BATCH)
    store = MilvusVectorStore(uri=uri, collection_name=collection, dim=DIM, overwrite=True, similarity_metric="IP",
                              index_config={"index_type": "HNSW", **INDEX["params"]}, consistency_level="Session",
                              use_async_client=False)
    t, cpu = time.monotonic(), time.process_time()
    docs = [Document(id_=c["id"], text=c["text"], metadata={"doc_id": c["id"], "document_id": c["document_id"],
                                                              "dataset_id": c["dataset_id"]})
            for c in _read(chunks_path)]
    nodes = IngestionPipeline(transformations=[embed], vector_store=store).run(documents=docs, show_progress=False)
    wall, cpu_s = time.monotonic() - t, time.process_time() - cpu
    return {"wall_s": wall, "cpu_s": cpu_s, "model_wall_s": _MODEL_TIME[0], "model_cpu_s": _MODEL_TIME[1],
            "result": {"nodes": len(nodes)}, "count": _count(store.client, collection)}


# ---------------------------------------------------------------- parent

def _child(cmd: list[str], env: dict[str, str]) -> tuple[str, float, float]:
    """Run one child; (stdout, wall s, CPU s of it and its descendants, e.g. the Milvus Lite server)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.monotonic() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed ({proc.returncode}): {proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return proc.stdout, wall, cpu


def _run_drtool(env: dict[str, str], client: Any, texts: list[str], work: Path) -> dict[str, Any]:
    from bench.rebuild.run import chunk_file

    ds = str(uuid.uuid4())  # a fresh dataset: no vector sidecar from an earlier run, a truly cold rebuild
    client.put_object(Bucket="bench", Key=f"datasets/{ds}/processed/chunks.jsonl", Body=chunk_file(ds, texts))
    db = work / f"drtool-{ds[:8]}.db"
    out, wall, cpu = _child([sys.executable, "-m", "drtool", "--json", "rebuild-index", "--dataset", ds],
                            {**env, "DRTOOL_MILVUS_URI": str(db)})
    summary = next(x for x in (json.loads(s) for s in out.splitlines() if s.startswith("{"))
                   if x.get("event") == "result")
    report = summary["datasets"][0]
    _drop_lite(db)
    return {"wall_s": report["stage_seconds"]["build_total"], "cpu_s": report["stage_seconds"]["build_cpu"],
            "count": report["inserted"], "process_wall_s": wall, "process_cpu_s": cpu}


def _run_framework(name: str, chunks_path: Path, work: Path) -> dict[str, Any]:
    db = work / f"{name}-{uuid.uuid4().hex[:8]}.db"
    out, wall, cpu = _child([sys.executable, "-m", "bench.rebuild.compare_frameworks", "--worker", name,
                             "--input", str(chunks_path), "--milvus", str(db)], {**os.environ, "PYTHONPATH": str(ROOT)})
    result = json.loads(out.strip().splitlines()[-1])
    _drop_lite(db)
    return {**result, "process_wall_s": wall, "process_cpu_s": cpu}


def _drop_lite(db: Path) -> None:
    for p in db.parent.glob(db.name + "*"):
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    lock = db.parent / f".{db.name}.lock"
    lock.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=f"SETUP (once, outside the project venv):\n  {SETUP}")
    parser.add_argument("--chunks", type=int, default=2000, help="chunks per rebuild (default 2000)")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds (drtool, LangChain, LlamaIndex)")
    parser.add_argument("--worker", choices=["langchain", "llamaindex"], help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--milvus", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        sys.path.append(SITE)  # after the venv: its torch, sentence-transformers and pymilvus win
        fn = _worker_langchain if args.worker == "langchain" else _worker_llamaindex
        print(json.dumps(fn(args.input, args.milvus)), flush=True)
        return

    print(f"Comparison packages are read from {SITE} (DRTOOL_BENCH_CMP_SITE), appended after the venv. Set up with:"
          f"\n  {SETUP}\n", flush=True)
    problem = _frameworks_importable()
    if problem:
        raise SystemExit(f"cannot import the comparison packages from {SITE}: {problem}\nrun: {SETUP}")

    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import pymilvus

    from bench.rebuild.run import chunk_file, seaweed_env
    from tests.rebuild.prose import texts as prose
    from tests.stack.seaweed_clusters import local_seaweed_pair

    texts = prose(args.chunks)
    work = Path(tempfile.mkdtemp(prefix="drtool-bench-compare-"))
    chunks_path = work / "chunks.jsonl"  # the frameworks read the same JSONL lines from a local file
    chunks_path.write_bytes(chunk_file(str(uuid.uuid4()), texts))
    runs: dict[str, list[dict[str, Any]]] = {"drtool": [], "langchain": [], "llamaindex": []}
    try:
        with local_seaweed_pair(work / "seaweed") as clusters:
            site = clusters.a
            client = site.s3_client()
            client.create_bucket(Bucket="bench")
            env = seaweed_env(site)
            for i in range(max(1, args.repeat)):
                for name in runs:
                    run = (_run_drtool(env, client, texts, work) if name == "drtool"
                           else _run_framework(name, chunks_path, work))
                    if run["count"] != args.chunks:
                        raise SystemExit(f"{name} stored {run['count']} of {args.chunks} chunks")
                    run["load"] = round(os.getloadavg()[0], 1)
                    runs[name].append(run)
                    print(f"round {i + 1} {name}: pipeline {run['wall_s']:.1f} s wall {run['cpu_s']:.1f} s CPU; "
                          f"process {run['process_wall_s']:.1f} s wall {run['process_cpu_s']:.1f} s CPU; "
                          f"load {run['load']}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _write(args, runs, pymilvus.__version__)


def _write(args: argparse.Namespace, runs: dict[str, list[dict[str, Any]]], pymilvus_version: str) -> None:
    median = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    n = args.chunks
    summary: dict[str, dict[str, float]] = {}
    for name, rs in runs.items():
        summary[name] = {k: round(median([r[k] for r in rs]), 2)
                         for k in ("wall_s", "cpu_s", "process_wall_s", "process_cpu_s")}
        summary[name]["chunks_per_s"] = round(n / summary[name]["wall_s"], 2)
    base = summary["drtool"]
    ratios = {name: {"wall": round(s["wall_s"] / base["wall_s"], 3), "cpu": round(s["cpu_s"] / base["cpu_s"], 3),
                     "process_wall": round(s["process_wall_s"] / base["process_wall_s"], 3),
                     "process_cpu": round(s["process_cpu_s"] / base["process_cpu_s"], 3),
                     "drtool_speedup_chunks_per_s": round(base["chunks_per_s"] / s["chunks_per_s"], 3)}
              for name, s in summary.items() if name != "drtool"}
    versions = {}
    for dist in ("langchain-core", "langchain-milvus", "llama-index-core", "llama-index-vector-stores-milvus"):
        proc = subprocess.run([sys.executable, "-c", f"import sys; sys.path.append({SITE!r}); "
                               f"from importlib.metadata import version; print(version({dist!r}))"],
                              capture_output=True, text=True, check=False)
        versions[dist] = proc.stdout.strip() or "?"
    versions["pymilvus"] = pymilvus_version
    result = {"chunks": n, "repeat": max(1, args.repeat), "cpus": os.cpu_count(),
              "corpus": "Python standard library docstrings (PSF License)",
              "model": f"all-MiniLM-L6-v2 (sentence-transformers, CPU, batch {MODEL_BATCH})",
              "store": "Milvus Lite, fresh file per run, HNSW/IP M=8 efConstruction=64",
              "versions": versions, "median": summary, "ratio_to_drtool": ratios, "runs": runs,
              "command": " ".join([".venv/bin/python -m bench.rebuild.compare_frameworks", *sys.argv[1:]]),
              "setup": SETUP}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "rebuild-compare.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"median": summary, "ratio_to_drtool": ratios}, indent=2))


if __name__ == "__main__":
    main()
