"""What one `drtool restore` reports: filled in by the object, store and database steps, printed by the command."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RestoreResult:
    snapshot_id: str
    dry_run: bool
    verify_only: bool
    database: dict[str, Any] = field(default_factory=dict)
    objects: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    authentication: dict[str, Any] = field(default_factory=dict)  # authenticated, signed_by, digest
    plugin_database: dict[str, Any] = field(default_factory=dict)  # issue 13: the plugin daemon's database
    stores: list[dict[str, Any]] = field(default_factory=list)  # issue 13: extra stores restored with --stores

    def to_dict(self) -> dict[str, Any]:
        return {"snapshot": self.snapshot_id, "dry_run": self.dry_run, "verify_only": self.verify_only,
                **self.authentication, "database": self.database, "objects": self.objects,
                **({"plugin_database": self.plugin_database} if self.plugin_database else {}),
                **({"stores": self.stores} if self.stores else {}),
                "problems": self.problems[:100]}
