"""The interfaces operations depend on; adapters implement them, tests use the real adapters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Embedder(Protocol):
    """Turns texts into L2-normalised vectors of one fixed dimension."""

    @property
    def model_id(self) -> str:
        """Stable identity of the model (provider + name), part of every cache key."""
        ...

    @property
    def dimension(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> list[list[float]]: ...
