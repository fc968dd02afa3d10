"""The vector stores verify (and audit) read: one connection per backend, and the collection a dataset lives in."""

from __future__ import annotations

from drtool import wiring
from drtool.adapters import vector_stores
from drtool.adapters.dify_metadata import DatasetRow
from drtool.config import Settings
from drtool.core import naming
from drtool.core.ports import VectorStore
from drtool.errors import ConfigError


class Scanners:
    """One vector-store connection per backend, opened through the registry when a dataset first needs it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.open: dict[str, VectorStore] = {}

    def get(self, backend: str) -> VectorStore:
        if backend not in self.open:
            entry = vector_stores.get(backend)
            if not entry.configured(self.settings):
                raise ConfigError(f"a dataset is indexed in {backend} but its {entry.section} settings are not set",
                                  hint=entry.hint)
            self.open[backend] = wiring.vector_store(self.settings, backend)
        return self.open[backend]

    def close(self) -> None:
        for scanner in self.open.values():
            scanner.close()

def collection_of(dataset: DatasetRow, settings: Settings) -> tuple[str | None, str]:
    kind, class_prefix = naming.from_index_struct(dataset.index_struct)
    backend = kind or settings.vector.store
    return backend, class_prefix or naming.dify_collection_name(dataset.id, settings.vector.index_prefix)
