"""Vectors from the test embedding server, fetched the way Dify fetches them, to seed Dify's embedding cache."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx


def embed_via(server: Any) -> Callable[[list[str]], list[list[float]]]:
    """An `embed(texts)` that asks `server` (tests.stack.embedding_server) over its OpenAI-compatible API, so
    the cached vectors equal what a rebuild against the same server computes."""
    def embed(texts: list[str]) -> list[list[float]]:
        response = httpx.post(server.base_url + "/embeddings", json={"model": server.model_name, "input": texts},
                              headers={"Authorization": f"Bearer {server.api_key}"}, timeout=120)
        response.raise_for_status()
        return [d["embedding"] for d in sorted(response.json()["data"], key=lambda d: d["index"])]
    return embed
