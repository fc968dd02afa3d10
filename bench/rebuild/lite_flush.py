"""Milvus Lite's own memory while a collection of Dify's shape is filled and flushed, in this one process.

Milvus Lite runs inside the process that opens it (drtool's, for a rebuild with a Lite URI). This inserts N rows of
384-d vectors in batches of 512 and prints the process's RSS and high-water mark (VmHWM), then flushes and loads as
drtool's `finish` does; with `--flush-every K` it also flushes every K rows. It shows that the peak of a rebuild into
Lite at the end (the flush builds the HNSW index of every row still in the growing segment) grows with the rows
flushed at once, independently of drtool's pipeline (bench/results/rebuild-memory.md).

    .venv/bin/python -m bench.rebuild.lite_flush 30000
    .venv/bin/python -m bench.rebuild.lite_flush 30000 --flush-every 8192
"""

from __future__ import annotations

import argparse
import random
import tempfile


def _status(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        return int(f.read().split(f"{field}:")[1].split()[0]) // 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rows", type=int)
    parser.add_argument("--flush-every", type=int, default=0)
    args = parser.parse_args()
    from pymilvus import DataType, MilvusClient

    dim = 384
    client = MilvusClient(tempfile.mkdtemp() + "/lite.db")
    print(f"opened: RSS {_status('VmRSS')} MiB", flush=True)
    schema = client.create_schema(auto_id=True)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("page_content", DataType.VARCHAR, max_length=65535)
    schema.add_field("metadata", DataType.JSON)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    index = client.prepare_index_params()
    index.add_index("vector", index_type="HNSW", metric_type="IP", params={"M": 8, "efConstruction": 64})
    client.create_collection("t", schema=schema, index_params=index)
    rng = random.Random(1)
    since = 0
    for start in range(0, args.rows, 512):
        rows = [{"page_content": "word " * 12, "metadata": {"doc_id": f"n{start + i}", "document_id": "d"},
                 "vector": [rng.random() for _ in range(dim)]} for i in range(512)]
        client.insert("t", rows)
        since += len(rows)
        if args.flush_every and since >= args.flush_every:
            client.flush("t")
            since = 0
            print(f"{start + 512} rows, flushed: RSS {_status('VmRSS')} MiB, peak {_status('VmHWM')} MiB", flush=True)
    print(f"inserted: RSS {_status('VmRSS')} MiB, peak {_status('VmHWM')} MiB", flush=True)
    client.flush("t")
    client.load_collection("t")
    print(f"flushed and loaded: RSS {_status('VmRSS')} MiB, peak {_status('VmHWM')} MiB", flush=True)


if __name__ == "__main__":
    main()
