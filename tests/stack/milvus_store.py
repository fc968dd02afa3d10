"""Milvus for the tests: Milvus Lite in a file per test, or an external Milvus server.

Milvus Lite (``pymilvus.MilvusClient("<file>.db")``) runs the same collection, index and search code paths as
a server, including HNSW/IP indexes, JSON fields and aliases, so drtool's Milvus adapter is tested against it
without a Milvus cluster. A new file per test keeps collections apart; against an external server, tests must
use unique collection names (unique_collection_name helps).
"""

from __future__ import annotations

import uuid
from pathlib import Path

__all__ = ["lite_uri", "unique_collection_name"]


def lite_uri(folder: Path) -> str:
    """The Milvus Lite URI for a fresh database file in `folder` (Milvus Lite wants a name ending in .db)."""
    return str(folder / "milvus.db")


def unique_collection_name(prefix: str = "drtool_test") -> str:
    """A collection name no other test uses (Milvus names: letters, digits, underscores)."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"
