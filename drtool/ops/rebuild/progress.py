"""How a rebuild shows its progress: the Progress protocol the command's display implements, the event form used
inside the drill, and the silent default."""

from __future__ import annotations

from typing import Protocol

from drtool.core.events import Emit
from drtool.ops.rebuild.options import DatasetReport


class Progress(Protocol):
    def plan(self, datasets: int) -> None: ...  # more datasets to come (a run may plan twice: annotations)
    def start(self, dataset_id: str, total_bytes: int | None) -> None: ...
    def advance(self, bytes_read: int, report: DatasetReport) -> None: ...
    def stop(self) -> None: ...


class ChunkProgressEvents:
    """Progress as `progress` events, for a rebuild run inside another command (the drill), whose display
    (drtool/cli/progress.py) reads events: chunks stored, one task per dataset."""

    def __init__(self, emit: Emit, task: str) -> None:
        self.emit, self.task = emit, task
        self.datasets = self.index = 0

    def plan(self, datasets: int) -> None:
        self.datasets += datasets

    def start(self, dataset_id: str, total_bytes: int | None) -> None:
        self.index += 1

    def advance(self, bytes_read: int, report: DatasetReport) -> None:
        # One task per dataset: `done` is absolute within a task, and each dataset's count starts at 0.
        self.emit({"event": "progress", "task": f"{self.task} [{self.index}/{max(self.datasets, self.index)}]",
                   "unit": "chunks", "done": report.inserted + report.skipped_done, "total": None})

    def stop(self) -> None:
        pass


class NoProgress:
    """No display: the default when the caller shows nothing."""

    def plan(self, datasets: int) -> None:
        pass

    def start(self, dataset_id: str, total_bytes: int | None) -> None:
        pass

    def advance(self, bytes_read: int, report: DatasetReport) -> None:
        pass

    def stop(self) -> None:
        pass
