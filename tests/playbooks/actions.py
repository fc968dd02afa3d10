"""Disasters the runbook test inflicts on the Milvus Lite index, run as their own process.

Milvus Lite serves a file from one process at a time, so the test never opens the file itself while drtool
might: ``python -m tests.playbooks.actions corrupt-index FILE``.
"""

from __future__ import annotations

import sys


def corrupt_index(uri: str) -> int:
    """Delete a third of the vectors of the first collection (an index that lost part of its data)."""
    from pymilvus import MilvusClient

    client = MilvusClient(uri)
    try:
        name = sorted(client.list_collections())[0]
        client.load_collection(name)
        rows = client.query(name, filter="id >= 0", output_fields=["id"], limit=16384)
        ids = [r["id"] for r in rows][::3]
        client.delete(name, ids=ids)
        return len(ids)
    finally:
        client.close()


if __name__ == "__main__":
    if sys.argv[1:2] != ["corrupt-index"] or len(sys.argv) != 3:
        raise SystemExit("usage: python -m tests.playbooks.actions corrupt-index MILVUS_LITE_FILE")
    print(f"deleted {corrupt_index(sys.argv[2])} vectors")
