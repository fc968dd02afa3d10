"""`redis_url` is a real Redis with working expiry."""

from __future__ import annotations

import redis


def test_set_get_ttl(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        client.set("vector_indexing_Vector_index_smoke_Node", "1", ex=3600)
        assert client.get("vector_indexing_Vector_index_smoke_Node") == "1"
        assert 3590 <= client.ttl("vector_indexing_Vector_index_smoke_Node") <= 3600
        client.delete("vector_indexing_Vector_index_smoke_Node")
        assert client.get("vector_indexing_Vector_index_smoke_Node") is None
        assert client.info("server")["redis_version"]
    finally:
        client.close()
