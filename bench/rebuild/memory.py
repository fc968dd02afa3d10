"""Peak memory of a cold `drtool rebuild-index` as a user sees it, against the raw model on the same texts.

Issue 16: on an 8,383-chunk corpus a cold rebuild with the local model peaked above the raw model encoding the whole
corpus; the README's flat figure came from a --dry-run, which loads no model. This measures, in one run and per
size (default 20,000 and a larger count):

- the cold rebuild as one command (`drtool --json rebuild-index --dataset ID`, nothing cached, the bundled
  all-MiniLM-L6-v2 loaded, Milvus Lite as the default demo uses, the chunk file in a SeaweedFS bucket): peak RSS of
  the drtool process (its kernel high-water mark, from wait4) and of the whole process tree (drtool + the Milvus
  Lite server it starts), the tree summed by polling every 50 ms;
- the raw model: a plain Python process that loads the same model with sentence-transformers and encodes the same
  texts, read one batch at a time from a file, `embedding.batch_size` (64) texts per encode() call, throwing the
  vectors away: the model's own working memory, the least any tool embedding these texts can use.

Target (issue 16): the drtool process peaks at <= the raw model's peak + 300 MiB, and stays flat (within a few MiB)
from the small to the large count. Texts are 8-15 word windows of real prose (Python's standard-library docstrings,
PSF License), short enough that a 2-core machine embeds a large count in minutes.

    .venv/bin/python -m bench.rebuild.memory --sizes 20000 60000
    .venv/bin/python -m bench.rebuild.memory --probe 2000     # only: the raw model's texts/s on these texts
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
MIB = 1 << 20

RAW = r"""
import os, sys, time
os.environ.setdefault("HF_HUB_OFFLINE", "1")
from sentence_transformers import SentenceTransformer
model = SentenceTransformer(sys.argv[1], device="cpu")
size = int(sys.argv[3])
started, n, batch = time.monotonic(), 0, []
with open(sys.argv[2], encoding="utf-8") as f:
    for line in f:
        batch.append(line.rstrip("\n"))
        if len(batch) == size:
            model.encode(batch, batch_size=size, normalize_embeddings=True, show_progress_bar=False)
            n, batch = n + len(batch), []
if batch:
    model.encode(batch, batch_size=size, normalize_embeddings=True, show_progress_bar=False)
    n += len(batch)
print(n, round(time.monotonic() - started, 2))
"""


def short_texts(n: int, seed: int = 16) -> list[str]:
    """`n` distinct windows of 8-15 consecutive words of real prose."""
    sys.path.insert(0, str(ROOT))
    from tests.rebuild.prose import paragraphs

    rng = random.Random(seed)
    words = [p.split() for p in paragraphs()]
    out: list[str] = []
    seen: set[str] = set()
    offset = 0
    while len(out) < n:
        for para in words:
            start = offset % 12
            while start + 8 <= len(para) and len(out) < n:
                length = rng.randint(8, 15)
                text = " ".join(para[start:start + length])
                if text not in seen:
                    seen.add(text)
                    out.append(text)
                start += length
        offset += 1
        if offset > 200:
            raise RuntimeError("not enough prose for that many windows")
    return out


class TreePeak:
    """Peak of the summed RSS of a process and all its descendants, polled every `interval` seconds."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        import psutil

        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self.peak_root = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                return
            total = 0
            for p in procs:
                try:
                    rss = p.memory_info().rss
                except psutil.Error:
                    continue
                total += rss
                if p.pid == self.root.pid:
                    self.peak_root = max(self.peak_root, rss)
            self.peak = max(self.peak, total)
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def measured(argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run argv; its stdout, wall seconds, exit code, the root's exact peak RSS (wait4) and the tree's polled one."""
    started = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=err)
        poll = TreePeak(proc.pid)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        poll.stop()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"{argv[2:5]} failed ({proc.returncode}): {stderr[-3000:]}")
    # ru_maxrss (KiB) of a waited child: the kernel's high-water mark of that child (and of descendants it reaped).
    return {"stdout": stdout, "seconds": round(time.monotonic() - started, 1),
            "peak_mib": round(usage.ru_maxrss / 1024), "tree_peak_mib": round(poll.peak / MIB),
            "polled_root_peak_mib": round(poll.peak_root / MIB)}


def raw_model(texts_file: Path, batch_size: int) -> dict[str, Any]:
    from drtool.adapters.embedders import default_local_model

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run = measured([sys.executable, "-c", RAW, default_local_model(), str(texts_file), str(batch_size)], env)
    n, seconds = run.pop("stdout").split()
    return {**run, "texts": int(n), "encode_seconds": float(seconds)}


def cold_rebuild(env: dict[str, str], dataset: str) -> dict[str, Any]:
    run = measured([sys.executable, "-m", "drtool", "--json", "rebuild-index", "--dataset", dataset], env)
    lines = [json.loads(x) for x in run.pop("stdout").splitlines() if x.startswith("{")]
    result = next(x for x in lines if x.get("event") == "result")
    ds = result["datasets"][0]
    if ds["status"] != "rebuilt" or ds["embedded"] != ds["valid"]:
        raise SystemExit(f"not a cold rebuild: {ds['status']}, embedded {ds['embedded']} of {ds['valid']}")
    return {**run, "embedded": ds["embedded"], "inserted": ds["inserted"], "stage_seconds": ds["stage_seconds"],
            "peak_chunks_in_flight": ds.get("peak_chunks_in_flight"),
            "device": result.get("device") or ds.get("device")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[20000, 60000], help="chunk counts (cold rebuilds)")
    parser.add_argument("--batch-size", type=int, default=64, help="embedding.batch_size, the same for the raw model")
    parser.add_argument("--probe", type=int, default=0, help="only measure the raw model's rate on this many texts")
    parser.add_argument("--raw-limit", type=int, default=0,
                        help="the raw model encodes only the first N texts of each size (its peak depends on the "
                             "batch shape, not the count); 0 = all")
    parser.add_argument("--pipeline-sizes", type=int, nargs="*", default=[],
                        help="also: cold rebuilds through the openai provider against a bench server that returns "
                             "hash-derived unit vectors (no model), to measure the pipeline and Milvus Lite at "
                             "counts the model cannot embed here in time")
    parser.add_argument("--only-pipeline", action="store_true", help="skip the model runs; merge into the results")
    parser.add_argument("--out", default="rebuild-memory", help="bench/results/<out>.{json,md}")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from bench.rebuild.run import chunk_file, seaweed_env
    from tests.stack.seaweed_clusters import local_seaweed_pair

    work = Path(tempfile.mkdtemp(prefix="drtool-bench-memory-"))
    texts = short_texts(args.probe or max(args.sizes + args.pipeline_sizes))
    if args.probe:
        (work / "texts.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
        raw = raw_model(work / "texts.txt", args.batch_size)
        print(f"raw model: {raw['texts'] / raw['encode_seconds']:.0f} texts/s ({raw}); load {os.getloadavg()[0]:.1f}")
        return
    words = [len(t.split()) for t in texts]
    out = RESULTS / f"{args.out}.json"
    results: dict[str, Any] = json.loads(out.read_text()) if args.only_pipeline and out.exists() else {}
    results.update({
        "corpus": "8-15 word windows of Python standard library docstrings (PSF License)",
        "mean_words": round(sum(words) / len(words), 1),
        "model": "all-MiniLM-L6-v2 (sentence-transformers, CPU)", "cpus": os.cpu_count(),
        "batch_size": args.batch_size, "target_over_raw_mib": 300})
    results.setdefault("sizes", {})
    with local_seaweed_pair(work / "seaweed") as clusters:
        site = clusters.a
        client = site.s3_client()
        client.create_bucket(Bucket="bench")

        def put(n: int) -> str:
            ds = str(uuid.uuid4())
            client.put_object(Bucket="bench", Key=f"datasets/{ds}/processed/chunks.jsonl.gz",
                              Body=gzip.compress(chunk_file(ds, texts[:n])))
            return ds

        for n in [] if args.only_pipeline else args.sizes:
            texts_file = work / f"texts-{n}.txt"
            raw_n = min(n, args.raw_limit or n)
            texts_file.write_text("\n".join(texts[:raw_n]) + "\n", encoding="utf-8")
            ds = put(n)
            env = seaweed_env(site, DRTOOL_MILVUS_URI=str(work / f"milvus-{n}.db"),
                              DRTOOL_EMBEDDING_BATCH_SIZE=str(args.batch_size))
            raw = raw_model(texts_file, args.batch_size)
            print(f"{n}: raw model ({raw_n} texts) peak {raw['peak_mib']} MiB, {raw['encode_seconds']} s; "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
            cold = cold_rebuild(env, ds)
            print(f"{n}: cold rebuild peak {cold['peak_mib']} MiB (tree {cold['tree_peak_mib']} MiB), "
                  f"{cold['seconds']} s; load {os.getloadavg()[0]:.1f}", flush=True)
            results["sizes"][str(n)] = {"raw_model": raw, "cold_rebuild": cold,
                                        "over_raw_mib": cold["peak_mib"] - raw["peak_mib"],
                                        "tree_over_raw_mib": cold["tree_peak_mib"] - raw["peak_mib"]}
        if args.pipeline_sizes:
            results["pipeline"] = {}
            with hash_provider(384) as url:
                for n in args.pipeline_sizes:
                    ds = put(n)
                    env = seaweed_env(site, DRTOOL_MILVUS_URI=str(work / f"milvus-p{n}.db"),
                                      DRTOOL_EMBEDDING_PROVIDER="openai", DRTOOL_EMBEDDING_BASE_URL=url,
                                      DRTOOL_EMBEDDING_MODEL="hash-384", DRTOOL_EMBEDDING_DIMENSIONS="384",
                                      DRTOOL_EMBEDDING_BATCH_SIZE=str(args.batch_size), DRTOOL_REBUILD_SAMPLE="10")
                    run = cold_rebuild(env, ds)
                    print(f"{n}: pipeline-only cold rebuild peak {run['peak_mib']} MiB, {run['seconds']} s; "
                          f"load {os.getloadavg()[0]:.1f}", flush=True)
                    results["pipeline"][str(n)] = run
    results["load_average"] = round(os.getloadavg()[0], 1)
    _write(results, args.out)


@contextlib.contextmanager
def hash_provider(dim: int) -> Iterator[str]:
    """An OpenAI-compatible /v1/embeddings on loopback whose vectors are unit vectors derived from sha256 of the
    text: no model, so the pipeline (reading, 16 workers, vectors awaiting insert) and Milvus Lite are measured at
    counts the model cannot embed on this machine in the time; never used to judge quality."""
    import hashlib
    import math
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            data = []
            for i, text in enumerate(body["input"]):
                seed = hashlib.sha256(text.encode()).digest()
                raw = [((seed[j % 32] ^ (j * 37)) & 255) - 127.5 for j in range(dim)]
                norm = math.sqrt(sum(x * x for x in raw))
                data.append({"index": i, "embedding": [round(x / norm, 6) for x in raw]})
            out = json.dumps({"data": data, "model": body.get("model")}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()


def _write(results: dict[str, Any], name: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    sizes = results.get("sizes", {})
    md = [
        "# Peak memory of a cold rebuild with the local model",
        "",
        f"`{' '.join(['.venv/bin/python -m bench.rebuild.memory', *sys.argv[1:]])}` on {results['cpus']} CPUs "
        f"(load average {results['load_average']} at the end: the machine is shared); {results['corpus']}, "
        f"{results['mean_words']} words on average; {results['model']}, batches of {results['batch_size']}; "
        "SeaweedFS + Milvus Lite (in the drtool process); nothing cached (every chunk embedded).",
        "",
    ]
    if sizes:
        keys = list(sizes)
        growth = sizes[keys[-1]]["cold_rebuild"]["peak_mib"] - sizes[keys[0]]["cold_rebuild"]["peak_mib"]
        worst = max(s["over_raw_mib"] for s in sizes.values())
        md += [
            "| chunks | raw model peak (texts encoded) | cold rebuild peak (drtool process) | over raw "
            "| whole tree | rebuild wall | device |",
            "|---|---|---|---|---|---|---|",
            *[f"| {int(n):,} | {s['raw_model']['peak_mib']} MiB ({s['raw_model']['texts']:,}) | "
              f"**{s['cold_rebuild']['peak_mib']} MiB** | {s['over_raw_mib']:+d} MiB | "
              f"{s['cold_rebuild']['tree_peak_mib']} MiB | {s['cold_rebuild']['seconds']} s "
              f"| {s['cold_rebuild'].get('device') or '?'} |" for n, s in sizes.items()],
            "",
            f"Target (issue 16): drtool <= raw + {results['target_over_raw_mib']} MiB at every size: "
            f"**{'met' if worst <= results['target_over_raw_mib'] else 'NOT met'}** (worst {worst:+d} MiB); from "
            f"{int(keys[0]):,} to {int(keys[-1]):,} chunks: **{growth:+d} MiB**.",
            "",
        ]
    pipeline = results.get("pipeline", {})
    if pipeline:
        keys = list(pipeline)
        md += [
            "Pipeline only, at larger counts (`--pipeline-sizes`): the same cold rebuild through the openai provider "
            "(16 worker threads, the default `embedding.concurrency`) against a loopback server returning "
            "hash-derived 384-d unit vectors, no model; `rebuild.sample` 10. What grows with the count here (the "
            "pipeline's buffers and indexes, Milvus Lite in the process) grows the same way with the model loaded, "
            "whose own memory does not depend on the count (the raw model's peak above).",
            "",
            "| chunks | drtool process peak | wall |",
            "|---|---|---|",
            *[f"| {int(n):,} | **{r['peak_mib']} MiB** | {r['seconds']} s |" for n, r in pipeline.items()],
            "",
            f"From {int(keys[0]):,} to {int(keys[-1]):,} chunks: "
            f"**{pipeline[keys[-1]]['peak_mib'] - pipeline[keys[0]]['peak_mib']:+d} MiB**.",
            "",
        ]
    md += [
        "How it is measured: the drtool figure is the kernel's high-water mark of the `drtool rebuild-index` process "
        "(`ru_maxrss` from wait4), exact; the tree figure sums the RSS of the process and every descendant polled "
        "every 50 ms (Milvus Lite runs inside the drtool process, so the two agree). The raw model is a plain "
        "Python process that loads the same model with sentence-transformers and encodes the same texts (with "
        "`--raw-limit`, the first N of them: its peak depends on the batch shape, not the count), read from a file "
        f"{results['batch_size']} at a time, one encode() call per batch, vectors discarded: the model's own "
        "working memory, a stricter baseline than encoding the whole corpus in one call (which keeps every "
        "vector). Wall times include interpreter start, model load, verification (the gate) and the switch.",
        "",
    ]
    (RESULTS / f"{name}.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
