"""`vector_backend`: one real vector store per entry of tests/conformance/backends.py, built through drtool's
registry, with collections that are unique to the test and removed after it.

Use it in any test (also outside this folder, by importing the fixture) that should hold for every backend:

    def test_something(vector_backend: VectorBackendUnderTest) -> None:
        name = vector_backend.new_name()
        vector_backend.store.create(name, DIM)
"""

from __future__ import annotations

import contextlib
import math
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from drtool.adapters import vector_stores
from drtool.config import Settings, load_settings
from drtool.core.ports import Row, VectorStore
from tests.conformance.backends import BACKENDS, BackendSpec, Flags

DIM = 8


def settings_for(spec: BackendSpec, flags: Flags) -> Settings:
    """drtool's settings for this backend, from these flags only (no DRTOOL_* of the test run, no drtool.toml)."""
    return load_settings(flags={"vector.store": spec.store, **flags}, environ={}, config_path=None)


@dataclass
class VectorBackendUnderTest:
    spec: BackendSpec
    settings: Settings
    request: pytest.FixtureRequest
    tracked: list[str] = field(default_factory=list)
    _opened: list[VectorStore] = field(default_factory=list)
    _store: VectorStore | None = None

    @property
    def store(self) -> VectorStore:
        """The store under test, opened through the registry on first use."""
        if self._store is None:
            self._store = self.open()
        return self._store

    def open(self, settings: Settings | None = None) -> VectorStore:
        """Another store of this backend (e.g. a second process's view), closed after the test."""
        store = vector_stores.open_store(settings or self.settings)
        self._opened.append(store)
        return store

    def new_name(self) -> str:
        """A collection name no other test uses (valid for Milvus and Weaviate), purged after the test."""
        name = f"Conformance_{uuid.uuid4().hex[:12]}"
        self.tracked.append(name)
        return name

    def cleanup(self) -> None:
        try:
            if self.tracked:
                store = self.store
                for name in self.tracked:
                    store.purge(name)
        finally:
            for store in self._opened:
                with contextlib.suppress(Exception):
                    store.close()


def _under_test(request: pytest.FixtureRequest) -> Iterator[VectorBackendUnderTest]:
    spec: BackendSpec = request.param
    backend = VectorBackendUnderTest(spec, settings_for(spec, spec.flags(request)), request)
    try:
        yield backend
    finally:
        backend.cleanup()


@pytest.fixture(params=[pytest.param(spec, id=spec.id) for spec in BACKENDS])
def vector_backend(request: pytest.FixtureRequest) -> Iterator[VectorBackendUnderTest]:
    yield from _under_test(request)


@pytest.fixture(params=[pytest.param(spec, id=spec.id) for spec in BACKENDS if spec.credentials is not None])
def authenticated_backend(request: pytest.FixtureRequest) -> Iterator[VectorBackendUnderTest]:
    """The backends whose test stack has an authenticated variant (`BackendSpec.credentials`)."""
    yield from _under_test(request)


def unit(i: int, dim: int = DIM) -> list[float]:
    """A unit vector close to axis i: its own nearest neighbour by both inner product and cosine."""
    v = [0.05] * dim
    v[i % dim] = 1.0
    norm = math.sqrt(sum(x * x for x in v))
    return [x / norm for x in v]


# Dify's ids are UUIDs; a filter must keep two of them apart (`doc-a`/`doc-b` would share the token "doc").
DOC_A = "0b6c6a8e-3f0e-4c53-9d0a-1b2f3c4d5e6f"
DOC_B = "7d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6"
DATASET = "5f0e1d2c-3b4a-4958-8776-655443322110"


def make_rows(n: int, *, dataset_id: str = DATASET, documents: tuple[str, ...] = (DOC_A, DOC_B),
              tag: str = "") -> list[Row]:
    """n rows in Dify's metadata layout, rows alternating between `documents`; texts unique per `tag`."""
    rows: list[Row] = []
    for i in range(n):
        meta: dict[str, Any] = {"doc_id": f"chunk-{tag}{i}", "doc_hash": f"hash-{tag}{i}",
                                "document_id": documents[i % len(documents)], "dataset_id": dataset_id}
        rows.append((f"text {tag}{i}: conformance", meta, unit(i)))
    return rows


def fill(store: VectorStore, name: str, rows: list[Row]) -> None:
    """Create `name` and store `rows` the way rebuild-index does: create, insert, finish."""
    store.create(name, DIM)
    store.insert(name, rows)
    store.finish(name)
