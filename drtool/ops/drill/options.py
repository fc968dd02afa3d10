"""The drill's options, its outcome, its scratch targets and the state every phase reads and adds to."""

from __future__ import annotations

import dataclasses
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drtool.config import Settings
from drtool.core.events import Emit

if TYPE_CHECKING:
    from drtool.adapters.dify_annotations import AnnotationApp


@dataclass
class DrillOptions:
    snapshot: str = "latest"
    rto_slo: float | None = None
    rpo_slo: float | None = None
    report_dir: Path = Path("drill-reports")
    keep: bool = False
    scratch_db: str | None = None
    identity: str | None = None
    expect_digest: str | None = None  # --expect-digest: the snapshot must be exactly the one pinned out of band


@dataclass
class DrillOutcome:
    record: dict[str, Any]
    reports: dict[str, str]
    history_key: str | None
    history_error: str | None = None


@dataclass
class Scratch:
    """The scratch targets a drill creates, and which of them exist so far (cleanup removes exactly those)."""

    database: str
    prefix: str  # collection-name prefix
    ledger_prefix: str
    db_created: bool = False
    collections: list[str] = field(default_factory=list)
    backend: str | None = None
    plugin_database: str | None = None  # issue 13: the plugin daemon's database, when the snapshot holds one
    plugin_db_created: bool = False
    # issue 13: apps with annotation reply enabled in the restored database, and their scratch collections
    annotation_apps: list[AnnotationApp] = field(default_factory=list)
    annotation_collections: dict[str, str] = field(default_factory=dict)


class DrillState:
    """One drill: its id, scratch targets, identities and findings so far; what every phase reads and adds to."""

    def __init__(self, settings: Settings, options: DrillOptions, *, emit: Emit) -> None:
        self.settings = settings
        self.options = options
        self.emit = emit
        self.started = datetime.now(UTC)
        self.token = secrets.token_hex(3)
        self.drill_id = f"{self.started:%Y%m%dT%H%M%SZ}-{self.token}"
        self.phases: list[dict[str, Any]] = []
        self.problems: list[str] = []
        self.identities: list[Any] | None = None
        name = options.scratch_db or f"drtool_drill_{self.token}"
        self.scratch = Scratch(database=name, prefix=f"Drill_{self.token}_",
                               ledger_prefix=f"{settings.rebuild.ledger_prefix.rstrip('/')}/drill-{self.drill_id}")

    def scratch_settings(self) -> Settings:
        s = self.settings
        return dataclasses.replace(
            s, postgres=dataclasses.replace(s.postgres, database=self.scratch.database),
            vector=dataclasses.replace(s.vector, index_prefix=self.scratch.prefix + s.vector.index_prefix),
            rebuild=dataclasses.replace(s.rebuild, ledger_prefix=self.scratch.ledger_prefix),
            redis=dataclasses.replace(s.redis, url=None))  # never touch live Dify's Redis keys

    def progress_only(self, event: dict[str, Any]) -> None:
        """What a phase's command reports, reduced to its unit counts: the drill's own events are its JSON contract,
        so verify's or restore's events stay out of it, but their `progress` reaches the display (never stdout)."""
        if event.get("event") == "progress":
            self.emit(event)
