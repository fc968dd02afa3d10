"""The disaster of the demo: drop every collection (and alias) of a Milvus Lite file, as if the index were lost.

Run as its own process (``python -m demo.lose_index FILE``) because Milvus Lite serves a file from one process
at a time: the demo's own process must not keep it open while `drtool` works on it.
"""

from __future__ import annotations

import sys


def lose_index(uri: str) -> list[str]:
    """Drop every alias and collection in the Milvus Lite file `uri`; return the dropped collection names."""
    from pymilvus import MilvusClient

    client = MilvusClient(uri)
    try:
        dropped = []
        for name in client.list_collections():
            for alias in client.list_aliases(collection_name=name).get("aliases", []):
                client.drop_alias(alias=alias)
            client.drop_collection(name)
            dropped.append(name)
        return dropped
    finally:
        client.close()


if __name__ == "__main__":
    for name in lose_index(sys.argv[1]):
        print(f"dropped collection {name}")
