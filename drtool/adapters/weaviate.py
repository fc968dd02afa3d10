"""Weaviate through weaviate-client v4 (gRPC for data, REST for schema and meta)."""

from __future__ import annotations

from typing import Any

import httpx

from drtool.config import WeaviateSettings
from drtool.errors import AuthError, UnavailableError


def _headers(weaviate: WeaviateSettings) -> dict[str, str]:
    return {"Authorization": f"Bearer {weaviate.api_key}"} if weaviate.api_key else {}


def check(weaviate: WeaviateSettings) -> dict[str, Any]:
    if not weaviate.endpoint:
        raise UnavailableError("weaviate.endpoint is not set", system="weaviate")
    url = weaviate.endpoint.rstrip("/") + "/v1/meta"
    system = f"weaviate {weaviate.endpoint}"
    try:
        response = httpx.get(url, headers=_headers(weaviate), timeout=10)
    except httpx.HTTPError as exc:
        raise UnavailableError(f"cannot reach {url}: {type(exc).__name__}",
                               hint="check weaviate.endpoint and that Weaviate is running", system=system) from None
    if response.status_code in (401, 403):
        raise AuthError(f"refused with HTTP {response.status_code}", hint="check weaviate.api_key", system=system)
    if response.status_code != 200:
        raise UnavailableError(f"HTTP {response.status_code} from {url}", system=system)
    return {"version": response.json().get("version")}
