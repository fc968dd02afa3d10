"""Milvus for the tests: Milvus Lite in a file per test, or an external Milvus server.

Milvus Lite (``pymilvus.MilvusClient("<file>.db")``) runs the same collection, index and search code paths as
a server, including HNSW/IP indexes, JSON fields and aliases, so drtool's Milvus adapter is tested against it
without a Milvus cluster. A new file per test keeps collections apart; against an external server, tests must
use unique collection names (unique_collection_name helps).

Lite is not a server, though: it rejects Dify's `metadata["document_id"] in [...]` filter and answers every read
at once, where a server reads at bounded/session consistency and checks credentials. `MilvusTestTarget` is what
the `milvus_target` fixture yields for either kind ("lite": a fresh file; "server": the session's real server,
tests/stack/milvus_server.py), so one test body runs on both; on a server the collections a test made are dropped
after it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["MilvusTestTarget", "lite_uri", "unique_collection_name"]

# Collections drtool derives from a live name during a rebuild (drtool.core.naming), dropped with it.
_DERIVED_SUFFIXES = ("", "_drtool_build", "_drtool_prev", "_drtool_swap")


@dataclass
class MilvusTestTarget:
    """A Milvus for one test: ``kind`` is "lite" (a fresh file) or "server"; ``token`` is ``user:password``."""

    kind: str
    uri: str
    token: str | None = None
    tracked: set[str] = field(default_factory=set)

    def env(self) -> dict[str, str]:
        """drtool's settings for this Milvus."""
        return {"DRTOOL_MILVUS_URI": self.uri, **({"DRTOOL_MILVUS_TOKEN": self.token} if self.token else {})}

    def settings(self) -> Any:
        """drtool.config.MilvusSettings for this Milvus."""
        from drtool.config import MilvusSettings

        return MilvusSettings(uri=self.uri, token=self.token)

    def client(self) -> Any:
        """A pymilvus MilvusClient (the caller closes it)."""
        from pymilvus import MilvusClient

        return MilvusClient(self.uri, token=self.token) if self.token else MilvusClient(self.uri)

    def track(self, *names: str) -> None:
        """Drop these collections (and drtool's build/prev/swap generations of them) after the test."""
        self.tracked.update(names)

    def drop_tracked(self, also: Iterable[str] = ()) -> None:
        """Drop what the test made on a server (a Lite file disappears with the test's tmp_path)."""
        if self.kind != "server":
            return
        client = self.client()
        try:
            existing = set(client.list_collections())
            names = {n + suffix for n in self.tracked for suffix in _DERIVED_SUFFIXES} | set(also)
            for name in sorted(names & existing):
                client.drop_collection(name)
        finally:
            client.close()


def lite_uri(folder: Path) -> str:
    """The Milvus Lite URI for a fresh database file in `folder` (Milvus Lite wants a name ending in .db)."""
    return str(folder / "milvus.db")


def unique_collection_name(prefix: str = "drtool_test") -> str:
    """A collection name no other test uses (Milvus names: letters, digits, underscores)."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"
