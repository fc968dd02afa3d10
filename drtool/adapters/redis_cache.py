"""Dify's Redis: drtool only deletes the `vector_indexing_<collection>` keys a rebuild leaves stale."""

from __future__ import annotations

from typing import Any

import redis

from drtool.errors import AuthError, UnavailableError


def connect(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=10)


def check(url: str) -> dict[str, Any]:
    try:
        client = connect(url)
        info = client.info("server")
    except redis.AuthenticationError:
        raise AuthError("authentication failed", hint="check the password in redis.url", system="redis") from None
    except redis.RedisError as exc:
        raise UnavailableError(f"{type(exc).__name__}: {exc}", hint="check redis.url", system="redis") from None
    return {"version": info.get("redis_version")}


def delete_indexing_keys(url: str, collections: list[str]) -> list[str]:
    """Delete Dify's `vector_indexing_<collection>` keys (they make Dify skip creating a collection for 1 h)."""
    try:
        client = connect(url)
        keys = [f"vector_indexing_{c}" for c in collections]
        present = [k for k in keys if client.exists(k)]
        if present:
            client.delete(*present)
    except redis.AuthenticationError:
        raise AuthError("authentication failed", hint="check the password in redis.url", system="redis") from None
    except redis.RedisError as exc:
        raise UnavailableError(f"{type(exc).__name__}: {exc}", hint="check redis.url", system="redis") from None
    return present
