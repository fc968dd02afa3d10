"""What a rebuild run is asked to do and what it answers: the options, one report per dataset, the run's exit code.

Kept apart from the work itself so the command, the drill and the progress display read them without the build.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from drtool.errors import ExitCode, UsageError


@dataclass
class Options:
    datasets: tuple[str, ...] = ()
    all_datasets: bool = False
    resume: bool = False
    force: bool = False
    dry_run: bool = False
    rollback: bool = False
    drop_old: bool = False
    yes: bool = False
    verify: bool = True
    break_stale_lock: bool = False


@dataclass
class DatasetReport:
    dataset_id: str
    collection: str
    collection_source: str
    chunk_file: str | None = None
    mode: str = ""
    build_collection: str = ""
    lines_read: int = 0
    valid: int = 0
    rejected: int = 0
    rejections: list[str] = field(default_factory=list)
    resumed_from_line: int = 0
    skipped_done: int = 0
    truncated: int = 0
    key_collisions: int = 0  # chunks that share a store object id (Weaviate content UUIDs: same text)
    late_rejected: int = 0  # rejected after parsing (over the model's limit), counted in `rejected`
    cache_hits_sidecar: int = 0
    cache_hits_dify: int = 0
    dify_cache_refused: int = 0
    cache_vectors_ignored: int = 0  # cached vectors with NaN/inf, a wrong dimension or not unit norm: re-embedded
    embedded: int = 0
    inserted: int = 0
    deleted_on_resume: int = 0
    peak_chunks_in_flight: int = 0  # most chunks the build's pipeline held at once (rebuild.max_chunks_in_flight)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    verification: dict[str, Any] = field(default_factory=dict)
    plan: dict[str, Any] = field(default_factory=dict)  # --dry-run: what a run would do
    switch: str = ""
    redis_keys_deleted: list[str] = field(default_factory=list)
    status: str = "pending"
    error: str | None = None
    exit_code: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ChunkFileRefused(UsageError):
    """The chunk file cannot be used as it is (damaged, or more rejected lines than --max-rejects)."""


def overall_exit_code(reports: list[DatasetReport]) -> int:
    codes = [r.exit_code for r in reports if r.exit_code]
    if not codes:
        return int(ExitCode.OK)
    return max(codes, key=lambda c: (c == ExitCode.CRITICAL, c))  # a failed gate outranks the rest
