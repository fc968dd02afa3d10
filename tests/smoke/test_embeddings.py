"""`embedding_server` speaks OpenAI's embeddings API and returns exactly the offline model's vectors."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.stack.embedding_server import EmbeddingServer, embed_texts, load_local_model

TEXTS = [
    "Full-time employees accrue two vacation days per month.",
    "Error code E21 means an insulation fault was detected on the DC side.",
]


def _post(server: EmbeddingServer, body: dict[str, object], key: str | None = None) -> httpx.Response:
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    return httpx.post(f"{server.base_url}/embeddings", json=body, headers=headers, timeout=60)


def test_http_vectors_equal_the_local_model(
    embedding_server: EmbeddingServer, local_model_path: Path
) -> None:
    response = _post(
        embedding_server, {"input": TEXTS, "model": embedding_server.model_name}, embedding_server.api_key
    )
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list" and body["model"] == embedding_server.model_name
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 0
    served = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
    assert served.shape == (2, embedding_server.dimensions) == (2, 384)
    local = embed_texts(load_local_model(local_model_path), TEXTS)
    np.testing.assert_allclose(served, local, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-5)


def test_single_string_base64_and_dimensions(embedding_server: EmbeddingServer) -> None:
    key, model = embedding_server.api_key, embedding_server.model_name
    as_float = _post(embedding_server, {"input": TEXTS[0], "model": model}, key).json()["data"][0][
        "embedding"
    ]
    encoded = _post(embedding_server, {"input": TEXTS[0], "model": model, "encoding_format": "base64"}, key)
    decoded = np.frombuffer(base64.b64decode(encoded.json()["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(decoded, np.array(as_float, dtype=np.float32), atol=1e-7)
    short = _post(embedding_server, {"input": [TEXTS[0]], "model": model, "dimensions": 64}, key).json()
    vector = np.array(short["data"][0]["embedding"])
    assert vector.shape == (64,) and abs(np.linalg.norm(vector) - 1.0) < 1e-5


def test_requests_without_the_key_get_401(embedding_server: EmbeddingServer) -> None:
    missing = _post(embedding_server, {"input": "x", "model": embedding_server.model_name})
    wrong = _post(embedding_server, {"input": "x", "model": embedding_server.model_name}, "sk-wrong")
    for response in (missing, wrong):
        assert response.status_code == 401
        assert set(response.json()["error"]) >= {"message", "type", "code"}
    models = httpx.get(
        f"{embedding_server.base_url}/models", headers={"Authorization": f"Bearer {embedding_server.api_key}"}
    )
    assert embedding_server.model_name in [m["id"] for m in models.json()["data"]]


def test_fault_injection_and_request_counter(embedding_server: EmbeddingServer) -> None:
    if not embedding_server.controllable:
        with pytest.raises(RuntimeError, match="external"):
            embedding_server.fail_next(429, 1)
        return
    key, model = embedding_server.api_key, embedding_server.model_name
    assert embedding_server.requests == 0  # reset before every test
    embedding_server.fail_next(429, 2, retry_after=1.5)
    embedding_server.fail_next(500, 1)
    first = _post(embedding_server, {"input": "x", "model": model}, key)
    assert first.status_code == 429
    assert first.headers["Retry-After"] == "1.5" and first.headers["retry-after-ms"] == "1500"
    assert first.json()["error"]["code"] == "rate_limit_exceeded"
    assert _post(embedding_server, {"input": "x", "model": model}, key).status_code == 429
    assert _post(embedding_server, {"input": "x", "model": model}, key).status_code == 500
    assert _post(embedding_server, {"input": "x", "model": model}, key).status_code == 200
    assert _post(embedding_server, {"input": "x", "model": "text-embedding-3-large"}, key).status_code == 404
    assert embedding_server.requests == 5
    assert [r.status for r in embedding_server.history] == [429, 429, 500, 200, 404]
    embedding_server.slow_next(1.0)
    with pytest.raises(httpx.TimeoutException):
        httpx.post(
            f"{embedding_server.base_url}/embeddings",
            json={"input": "x", "model": model},
            headers={"Authorization": f"Bearer {key}"},
            timeout=0.3,
        )
