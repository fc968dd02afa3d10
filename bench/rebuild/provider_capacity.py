"""Benchmark: how much of an embedding provider's capacity drtool's OpenAI-compatible client uses (issue 16).

The provider is the test embedding server (tests/stack/embedding_server.py) given a known capacity: at most LIMIT
requests in flight, each taking LATENCY seconds, 429 + Retry-After beyond (a gateway), cheap deterministic vectors
(so this 2-core machine's CPU is not what is measured). Its capacity is LIMIT / LATENCY requests per second; every
figure is a ratio to it, measured in the same run:

- `fixed-4`: adaptation off, 4 requests in flight (drtool's behaviour before issue 16: embedding.concurrency=4);
- `fixed-LIMIT`: adaptation off, exactly LIMIT in flight: what a client told the capacity can reach here;
- `adaptive`: the defaults (embedding.adaptive=true, ceiling embedding.concurrency=16), told nothing;
- `adaptive xN`: N drtool processes sharing the one provider, each adapting on its own (N rebuild shards).

Each client is its own process running the rebuild's pipeline primitive (`ordered_map` over batches with
`embedder.concurrency` workers, as ops/rebuild/build.py does); they start together at an agreed instant, so
interpreter start-up is not counted. Throughput = successful requests / (last client's end - start).

    .venv/bin/python -m bench.rebuild.provider_capacity                 # 600 requests per scenario
    .venv/bin/python -m bench.rebuild.provider_capacity --requests 1200 --repeat 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
DIMENSIONS = 384
TEXTS_PER_REQUEST = 8


def child(args: argparse.Namespace) -> None:
    """One drtool client: embed `--texts` texts through the pipeline, print what it saw as one JSON line."""
    from drtool.adapters.embedders import OpenAIEmbedder
    from drtool.config import EmbeddingSettings
    from drtool.core.pipeline import batched, ordered_map

    settings = EmbeddingSettings(provider="openai", base_url=os.environ["BENCH_BASE_URL"],
                                 api_key=os.environ["BENCH_API_KEY"], model="all-MiniLM-L6-v2",
                                 dimensions=DIMENSIONS, batch_size=TEXTS_PER_REQUEST, concurrency=args.concurrency,
                                 adaptive=args.adaptive, max_attempts=20)
    embedder = OpenAIEmbedder(settings)
    texts = [f"process {args.index} chunk {i}: a sentence about disaster recovery" for i in range(args.texts)]
    delay = args.start_at - time.monotonic()  # CLOCK_MONOTONIC is system-wide: every child starts together
    if delay > 0:
        time.sleep(delay)
    started = time.monotonic()
    done = 0
    workers = embedder.concurrency
    for _batch, vectors in ordered_map(embedder.embed, batched(texts, TEXTS_PER_REQUEST), workers=workers,
                                       max_in_flight=workers + 1):
        done += len(vectors)
    ended = time.monotonic()
    limit = embedder.gate.controller
    embedder.close()
    print(json.dumps({"texts": done, "started": started, "ended": ended, "http_requests": embedder.requests,
                      "peak_in_flight": embedder.gate.peak_in_flight,
                      "final_allowed": limit.allowed if limit else workers,
                      "overload_signals": limit.overloads if limit else None,
                      "decreases": limit.decreases if limit else None}))


def scenario(server: Any, capacity: Any, name: str, *, processes: int, requests: int, adaptive: bool,
             concurrency: int) -> dict[str, Any]:
    server.reset()
    server.set_capacity(capacity.limit, capacity.latency, cheap=True)
    texts = requests * TEXTS_PER_REQUEST // processes
    start_at = time.monotonic() + 3.0 + 0.5 * processes  # time for every interpreter to start
    env = {**os.environ, "BENCH_BASE_URL": server.base_url, "BENCH_API_KEY": server.api_key,
           "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-m", "bench.rebuild.provider_capacity", "--child",
                               "--index", str(i), "--texts", str(texts), "--start-at", str(start_at),
                               "--concurrency", str(concurrency), *([] if adaptive else ["--fixed"])],
                              env=env, stdout=subprocess.PIPE, text=True, cwd=ROOT) for i in range(processes)]
    outs = []
    for proc in procs:
        stdout, _ = proc.communicate(timeout=900)
        if proc.returncode != 0:
            raise SystemExit(f"client failed in scenario {name}")
        outs.append(json.loads(stdout.strip().splitlines()[-1]))
    if min(o["started"] for o in outs) < start_at - 0.01:
        raise SystemExit("a client started late; raise the start-up allowance")
    elapsed = max(o["ended"] for o in outs) - start_at
    ok = sum(1 for r in server.history if r.status == 200 and r.path.endswith("/embeddings"))
    refused = sum(1 for r in server.history if r.status == 429)
    rps = ok / elapsed
    return {"scenario": name, "processes": processes, "adaptive": adaptive, "ceiling": concurrency,
            "requests_ok": ok, "requests_429": refused, "seconds": round(elapsed, 3),
            "requests_per_s": round(rps, 2), "fraction_of_capacity": round(rps / capacity.requests_per_second, 3),
            "server_peak_in_flight": server.peak_in_flight,
            "clients": [{k: o[k] for k in ("peak_in_flight", "final_allowed", "overload_signals", "decreases")}
                        for o in outs]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--texts", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--fixed", dest="adaptive", action="store_false", help=argparse.SUPPRESS)
    parser.add_argument("--concurrency", type=int, default=16, help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, default=6, help="provider: requests in flight before 429")
    parser.add_argument("--latency", type=float, default=0.2, help="provider: seconds per request")
    parser.add_argument("--requests", type=int, default=600, help="successful requests per scenario (all clients)")
    parser.add_argument("--shards", default="2,4", help="process counts sharing the provider")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of every scenario (medians reported)")
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    sys.path.insert(0, str(ROOT))
    from tests.stack.embedding_server import local_embedding_server

    plan: list[tuple[str, int, bool, int]] = [
        ("fixed-4 (before issue 16)", 1, False, 4),
        (f"fixed-{args.limit} (told the capacity)", 1, False, args.limit),
        ("adaptive, 1 process", 1, True, 16),
    ] + [(f"adaptive, {n} processes", n, True, 16) for n in (int(x) for x in args.shards.split(",") if x)]
    rounds: list[list[dict[str, Any]]] = []
    with local_embedding_server(None, dimensions=DIMENSIONS) as server:
        capacity = server.set_capacity(args.limit, args.latency, cheap=True)
        assert capacity is not None
        for r in range(args.repeat):
            rows = []
            for name, processes, adaptive, ceiling in plan:
                row = scenario(server, capacity, name, processes=processes, requests=args.requests,
                               adaptive=adaptive, concurrency=ceiling)
                print(f"round {r + 1}: {name}: {row['fraction_of_capacity']:.3f} of capacity "
                      f"({row['requests_per_s']} req/s, {row['requests_429']} x 429)", flush=True)
                rows.append(row)
            rounds.append(rows)
    summary = []
    for i, (name, *_rest) in enumerate(plan):
        fractions = [rows[i]["fraction_of_capacity"] for rows in rounds]
        # Against the client told the capacity (plan[1]) in the same round: what this machine itself allows.
        vs_told = [rows[i]["requests_per_s"] / rows[1]["requests_per_s"] for rows in rounds]
        summary.append({"scenario": name, "fraction_of_capacity_median": round(statistics.median(fractions), 3),
                        "fractions": fractions, "vs_told_client_median": round(statistics.median(vs_told), 3),
                        "last_round": rounds[-1][i]})
    load = os.getloadavg()[0]
    result = {"benchmark": "provider_capacity", "provider": {"limit": args.limit, "latency_s": args.latency,
                                                             "capacity_requests_per_s": capacity.requests_per_second,
                                                             "retry_after_s": capacity.retry_after,
                                                             "texts_per_request": TEXTS_PER_REQUEST},
              "requests_per_scenario": args.requests, "repeat": args.repeat, "cpus": os.cpu_count(),
              "load_average_end": round(load, 2), "scenarios": summary}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "provider_capacity.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "provider_capacity.md").write_text(render(result, args))
    print(f"wrote {RESULTS / 'provider_capacity.md'}")


def render(result: dict[str, Any], args: argparse.Namespace) -> str:
    p = result["provider"]
    lines = [
        "# Embedding provider capacity benchmark",
        "",
        f"`.venv/bin/python -m bench.rebuild.provider_capacity --requests {args.requests} --repeat {args.repeat}` "
        f"on {result['cpus']} CPUs. Provider: the test embedding server with a gateway limit of {p['limit']} "
        f"requests in flight (429 + Retry-After {p['retry_after_s']:.3g} s beyond), {p['latency_s']:g} s per request, "
        f"cheap deterministic vectors, {p['texts_per_request']} texts per request: known capacity "
        f"**{p['capacity_requests_per_s']:g} requests/s**. Each client is a separate process running the rebuild's "
        "pipeline (`ordered_map`, `embedder.concurrency` workers); clients start together; throughput = "
        "successful requests / time until the last client finished.",
        "",
        "| scenario | fraction of capacity (median) | rounds | vs the client told the capacity (median) | "
        "req/s (last) | 429s (last) | peak in flight per client (last) | limit at the end per client (last) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in result["scenarios"]:
        last = s["last_round"]
        peaks = ", ".join(str(c["peak_in_flight"]) for c in last["clients"])
        finals = ", ".join(str(c["final_allowed"]) for c in last["clients"])
        lines.append(f"| {s['scenario']} | **{s['fraction_of_capacity_median']:.3f}** | "
                     f"{', '.join(f'{f:.3f}' for f in s['fractions'])} | {s['vs_told_client_median']:.3f} | "
                     f"{last['requests_per_s']} | "
                     f"{last['requests_429']} | {peaks} | {finals} |")
    lines += [
        "",
        f"{result['requests_per_scenario']} successful requests per scenario (split between the processes). "
        f"Load average at the end: {result['load_average_end']} on this {result['cpus']}-CPU machine (shared). "
        "The adaptive clients start at 4 in flight and double per round trip until the first 429, so a short run "
        "includes the ramp; N processes adapt independently (no coordination), each seeing the others' requests "
        "only as 429s.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
