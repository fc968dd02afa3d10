"""The checkpoint ledger of one dataset's rebuild, kept in object storage: what `--resume` finishes from."""

from __future__ import annotations

import json
import time
from typing import Any

from drtool.errors import UsageError

LEDGER_VERSION = 1


class Ledger:
    """The checkpoint of one dataset's rebuild: one small JSON object, rewritten after every insert batch."""

    def __init__(self, store: Any, prefix: str, backend: str, collection: str) -> None:
        self.store = store
        self.key = f"{prefix.rstrip('/')}/{backend}/{collection}.json"
        self.data: dict[str, Any] = {}

    def load(self) -> dict[str, Any] | None:
        raw = self.store.get(self.key)
        if raw is None:
            return None
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            data = None
        if not isinstance(data, dict):
            raise UsageError(f"checkpoint ledger {self.store.url(self.key)} is not a JSON object",
                             hint="rerun with --force to start this dataset over")
        if data.get("version") != LEDGER_VERSION:
            raise UsageError(f"checkpoint ledger {self.store.url(self.key)} has version {data.get('version')}",
                             hint="rerun with --force to start this dataset over")
        self.data = data
        return data

    def save(self, **changes: Any) -> None:
        self.data.update(changes, version=LEDGER_VERSION, updated_at=time.time())
        self.store.put(self.key, json.dumps(self.data, sort_keys=True).encode(), content_type="application/json")

    def delete(self) -> None:
        self.store.delete(self.key)
