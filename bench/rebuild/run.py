"""Benchmark of `drtool rebuild-index` (issue 4): ratios measured in one run, never absolute targets.

- cold rebuild chunks/s / raw model throughput on the same texts (target >= 0.9);
- warm rebuild (everything in drtool's sidecar cache) / cold (target >= 20x);
- peak RSS of a streaming pass (--dry-run: read, parse, cache lookups) at N vs 10N chunks (flat); measured
  with the HTTP provider configured (never called by a dry run) so that the model's ~1 GiB does not hide it.

Raw model and cold rebuild are measured in interleaved pairs (raw, cold, raw, cold, ...; medians), because the
machine is shared and load drifts; the CPU-time ratio (all threads of each process) is the robust figure.

Everything is real: a SeaweedFS cluster (tests/stack), Milvus Lite, the offline all-MiniLM-L6-v2 through
sentence-transformers, and real prose (docstrings of Python's standard library, PSF License).

    .venv/bin/python -m bench.rebuild.run            # --quick default: 2,000 chunks, RSS at 2k vs 20k
    .venv/bin/python -m bench.rebuild.run --chunks 20000 --rss-large 200000
    .venv/bin/python -m bench.rebuild.run --only rss --rss-large 200000   # one part; results are merged
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"


def chunk_file(dataset_id: str, texts: list[str]) -> bytes:
    from drtool.core.chunks import dumps_chunk

    return b"".join(dumps_chunk({"id": f"n{i}", "text": t, "dataset_id": dataset_id, "document_id": f"d{i % 50}",
                                 "position": i}) for i, t in enumerate(texts))


def seaweed_env(site: Any, **settings: str) -> dict[str, str]:
    """The environment of a benchmarked drtool run: the bench bucket on a SeaweedFS site, Milvus Lite, the local
    model; `settings` are more DRTOOL_* variables."""
    return {**os.environ, "DRTOOL_S3_ENDPOINT": site.endpoint, "DRTOOL_S3_BUCKET": "bench",
            "DRTOOL_S3_ACCESS_KEY": site.access_key, "DRTOOL_S3_SECRET_KEY": site.secret_key,
            "DRTOOL_S3_ADDRESS_STYLE": "path", "DRTOOL_VECTOR_STORE": "milvus", "DRTOOL_EMBEDDING_PROVIDER": "local",
            **settings}


def _run(env: dict[str, str], *args: str) -> tuple[dict[str, Any], float, int]:
    """drtool in a child process: (summary, wall seconds, peak RSS in MiB)."""
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "drtool", "--json", "rebuild-index", *args], env=env,
                          capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    summary = next((x for x in lines if x.get("event") == "result"), None)
    if proc.returncode != 0 or summary is None:
        raise SystemExit(f"rebuild failed ({proc.returncode}): {proc.stderr[-2000:]}")
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024
    return summary, seconds, rss


def _rss_child(env: dict[str, str], *args: str) -> int:
    """Peak RSS (MiB) of one child, measured by a wrapper so earlier children do not count."""
    code = ("import resource,subprocess,sys; subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL);"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)")
    out = subprocess.run([sys.executable, "-c", code, sys.executable, "-m", "drtool", "--json", "rebuild-index",
                          *args], env=env, capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=2000, help="chunks for cold/warm/raw (default 2000)")
    parser.add_argument("--rss-small", type=int, default=2000)
    parser.add_argument("--rss-large", type=int, default=20000)
    parser.add_argument("--quick", action="store_true", help="the default sizes (kept for symmetry)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="raw/cold pairs, interleaved (raw, cold, raw, cold, ...); medians are reported")
    parser.add_argument("--only", choices=["throughput", "rss"], help="run one part; merge into the results")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from tests.rebuild.prose import texts as prose
    from tests.stack.seaweed_clusters import local_seaweed_pair

    texts = prose(max(args.chunks, args.rss_large))
    out = RESULTS / "rebuild.json"
    previous = json.loads(out.read_text()) if args.only and out.exists() else {}
    work = Path(tempfile.mkdtemp(prefix="drtool-bench-rebuild-"))
    results: dict[str, Any] = {**previous, "corpus": "Python standard library docstrings (PSF License)",
                               "model": "all-MiniLM-L6-v2 (sentence-transformers, CPU)", "cpus": os.cpu_count()}
    with local_seaweed_pair(work / "seaweed") as clusters:
        site = clusters.a
        client = site.s3_client()
        client.create_bucket(Bucket="bench")
        env = seaweed_env(site, DRTOOL_MILVUS_URI=str(work / "milvus.db"))
        main_ds = str(uuid.uuid4())
        if args.only != "rss":
            _throughput(env, client, main_ds, texts, args.chunks, results, args.repeat)
        if args.only != "throughput":
            rss_env = {**env, "DRTOOL_EMBEDDING_PROVIDER": "openai", "DRTOOL_EMBEDDING_MODEL": "all-MiniLM-L6-v2",
                       "DRTOOL_EMBEDDING_BASE_URL": "http://127.0.0.1:9/v1", "DRTOOL_EMBEDDING_DIMENSIONS": "384"}
            rss: dict[str, int] = {}
            for n in (args.rss_small, args.rss_large):
                ds = str(uuid.uuid4())
                client.put_object(Bucket="bench", Key=f"datasets/{ds}/processed/chunks.jsonl.gz",
                                  Body=gzip.compress(chunk_file(ds, texts[:n])))
                rss[str(n)] = _rss_child(rss_env, "--dataset", ds, "--dry-run")
            results["peak_rss_mib_dry_run"] = rss
    _write(results)


def _throughput(env: dict[str, str], client: Any, main_ds: str, texts: list[str], chunks: int,
                results: dict[str, Any], repeat: int) -> None:
    """Raw model and cold rebuild, interleaved: the machine is shared, so load drifts; each pair sees the same.

    Every cold run gets its own dataset id (same texts), so no run finds another's vector cache; the warm run
    repeats the last dataset, whose cache is then complete.
    """
    from sentence_transformers import SentenceTransformer

    from drtool.adapters.embedders import default_local_model

    sample = texts[:chunks]

    # Raw model throughput on the same texts, same process settings as drtool's local embedder.
    model = SentenceTransformer(default_local_model(), device="cpu")
    model.encode(sample[:64], batch_size=64, normalize_embeddings=True)  # warm-up
    raws: list[tuple[float, float]] = []
    colds: list[dict[str, Any]] = []
    cold_walls: list[float] = []
    ds = main_ds
    for i in range(max(1, repeat)):
        t, cpu = time.monotonic(), time.process_time()
        model.encode(sample, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
        raws.append((time.monotonic() - t, time.process_time() - cpu))
        ds = main_ds if i == 0 else str(uuid.uuid4())
        body = chunk_file(ds, sample)
        client.put_object(Bucket="bench", Key=f"datasets/{ds}/processed/chunks.jsonl", Body=body)
        cold, cold_wall, _ = _run(env, "--dataset", ds)
        colds.append(cold["datasets"][0])
        cold_walls.append(cold_wall)
        print(f"pair {i + 1}: raw {raws[-1][0]:.1f} s wall {raws[-1][1]:.1f} s CPU; cold build "
              f"{colds[-1]['stage_seconds']['build_total']:.1f} s wall {colds[-1]['stage_seconds']['build_cpu']:.1f} "
              f"s CPU; load {os.getloadavg()[0]:.1f}", flush=True)
    del model

    warm, warm_wall, _ = _run(env, "--dataset", ds)
    warm_ds = warm["datasets"][0]
    median = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    # The pipeline's own time excludes interpreter start and model load (the same for any tool).
    raw_seconds = median([r[0] for r in raws])
    raw_cpu = median([r[1] for r in raws])
    cold_build = median([c["stage_seconds"]["build_total"] for c in colds])
    cold_cpu = median([c["stage_seconds"]["build_cpu"] for c in colds])
    cold_ds = sorted(colds, key=lambda c: c["stage_seconds"]["build_total"])[len(colds) // 2]
    warm_build = warm_ds["stage_seconds"]["build_total"]
    results.update(
        raw_model_chunks_per_s=round(chunks / raw_seconds, 1),
        cold_chunks_per_s=round(chunks / cold_build, 1),
        cold_vs_raw=round(raw_seconds / cold_build, 3),
        cold_vs_raw_cpu=round(raw_cpu / cold_cpu, 3), raw_cpu_s=round(raw_cpu, 1), cold_build_cpu_s=cold_cpu,
        pairs=[{"raw_wall_s": round(r[0], 2), "raw_cpu_s": round(r[1], 2),
                "cold_build_wall_s": s["build_total"], "cold_build_cpu_s": s["build_cpu"],
                "cpu_ratio": round(r[1] / s["build_cpu"], 3), "wall_ratio": round(r[0] / s["build_total"], 3)}
               for r, s in zip(raws, [c["stage_seconds"] for c in colds], strict=True)],
        repeat=len(raws),
        warm_chunks_per_s=round(chunks / warm_build, 1),
        warm_vs_cold=round(cold_build / warm_build, 1),
        cold_wall_s=round(median(cold_walls), 1), warm_wall_s=round(warm_wall, 1),
        warm_model_calls=warm_ds["embedded"], cold_stage_seconds=cold_ds["stage_seconds"],
        warm_stage_seconds=warm_ds["stage_seconds"], chunks=chunks, load_average=round(os.getloadavg()[0], 1),
    )


def _write(results: dict[str, Any]) -> None:
    out = RESULTS / "rebuild.json"
    RESULTS.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    md = [
        "# rebuild-index benchmark",
        "",
        f"`{' '.join(['.venv/bin/python -m bench.rebuild.run', *sys.argv[1:]])}` on {os.cpu_count()} CPUs; "
        f"{results.get('chunks')} chunks of {results['corpus']}; {results['model']}; SeaweedFS + Milvus Lite.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| raw model throughput | {results['raw_model_chunks_per_s']} chunks/s |",
        f"| cold rebuild (pipeline, excl. start-up) | {results['cold_chunks_per_s']} chunks/s |",
        f"| **cold / raw model, CPU time** (robust to other load; median of {results.get('repeat', 1)} interleaved "
        f"pairs) | **{results['cold_vs_raw_cpu']}** "
        "(target >= 0.9) |",
        f"| cold / raw model, wall time | {results['cold_vs_raw']} |",
        f"| warm rebuild (all cached) | {results['warm_chunks_per_s']} chunks/s, {results['warm_model_calls']} "
        "texts embedded |",
        f"| **warm / cold** | **{results['warm_vs_cold']}x** (target >= 20x) |",
        f"| wall time cold / warm incl. start-up | {results['cold_wall_s']} s / {results['warm_wall_s']} s |",
        "| peak RSS streaming pass (--dry-run) | "
        + ", ".join(f"{k} chunks: {v} MiB" for k, v in results.get("peak_rss_mib_dry_run", {}).items()) + " |",
        "",
        "Pairs (raw model, then a cold rebuild of a fresh dataset with the same texts): "
        + "; ".join(f"CPU {x['raw_cpu_s']} s / {x['cold_build_cpu_s']} s = {x['cpu_ratio']}, wall {x['wall_ratio']}"
                    for x in results.get("pairs", []))
        + f". Load average at the end: {results.get('load_average', '?')} on this {results.get('cpus', '?')}-CPU "
        + ("machine (other work running), so wall ratios are noisy. "
           if float(results.get("load_average") or 0) > float(results.get("cpus") or 2) + 0.5
           else "machine (nothing else running). ")
        + "The cold figure is the "
        "pipeline's build stage (read, parse, cache lookups, embed, insert, checkpoint), without interpreter start, "
        "model load and verification, which cost the same for any tool. With `--only`, the rows of the other part "
        "are those of an earlier run merged from the same JSON.",
        "",
    ]
    (RESULTS / "rebuild.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
