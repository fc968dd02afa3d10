"""`drtool drill`: a real restore from a snapshot into scratch targets, timed, verified, reported, then removed.

Phases (RTO is their sum; each is the step an operator would run during an incident):
1. snapshot_check   - `snapshots verify --deep`: checksums, every pinned object version still exists, dump readable;
2. restore_database - `restore --target-db <scratch>` (no object copies: the pinned versions are read in place);
3. rebuild_index    - `rebuild-index` of every high-quality dataset of the restored database into scratch
                      collections, from the chunk files at the versions the snapshot pinned, with the gate; and
                      `rebuild-index --annotations` of every app the restored database has annotation reply
                      enabled for (app_annotation_settings + dataset_collection_bindings), from the annotation
                      files at their pinned versions, with Dify's annotation query as the gate (issue #13);
4. verify           - `verify --snapshot --annotations` against the scratch database and collections.

Nothing live is written except two additive things: the drill's history object under the snapshot prefix and
rebuild's embedding sidecar cache (which later rebuilds reuse). The scratch collections get their own names
(`Drill_<id>_<name>`) because the restored rows are rewritten to point at them, so rebuild and verify, which take
collection names from `datasets.index_struct`, find the scratch ones through their normal code path. Annotation
collections have no index_struct: their name is Dify's gen_collection_name_by_id(app id) under vector.index_prefix,
so the scratch settings prepend the same `Drill_<id>_` to that prefix and both commands land on scratch names.
Every scratch target is removed afterwards (also on failure, Ctrl-C or SIGTERM) unless --keep.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, cast

from drtool import __version__
from drtool.adapters import vector_stores
from drtool.config import Settings
from drtool.core.drill_record import build_record
from drtool.core.events import Emit
from drtool.errors import DrtoolError
from drtool.ops.drill.history import append_history, load_history, write_reports
from drtool.ops.drill.options import DrillOptions, DrillOutcome, DrillState
from drtool.ops.drill.rebuild import rebuild_index
from drtool.ops.drill.restore import check_snapshot, restore_database
from drtool.ops.drill.scratch import preflight, remove_scratch_targets
from drtool.ops.drill.verify import verify
from drtool.ops.replication.summary import replication_summary
from drtool.ops.snapshot.catalog import SnapshotInfo
from drtool.redact import redact_obj

log = logging.getLogger("drtool.drill")


class _Interrupted(KeyboardInterrupt):
    """SIGTERM (cron timeout, Kubernetes) handled like Ctrl-C: clean up, then stop."""


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(_signum: int, _frame: Any) -> None:
        raise _Interrupted()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """While cleaning up, a second Ctrl-C or SIGTERM must not stop the cleanup half way: ignore both."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class Drill(DrillState):
    """The phases in order, each timed; cleanup on every way out; then the record, its history entry and reports."""

    # -- phases
    def _phase(self, name: str, fn: Callable[[dict[str, Any]], None]) -> bool:
        phase: dict[str, Any] = {"name": name, "status": "running", "seconds": 0.0, "detail": {}, "error": None}
        self.phases.append(phase)
        self.emit({"event": "drill.phase_started", "phase": name})
        t = time.monotonic()
        try:
            fn(phase["detail"])
            phase["status"] = "ok"
        except DrtoolError as exc:
            phase["status"], phase["error"] = "failed", str(exc)
        except KeyboardInterrupt:
            phase["status"], phase["error"] = "failed", "interrupted"
            phase["seconds"] = round(time.monotonic() - t, 3)
            raise
        except Exception as exc:  # an unexpected failure is still a failed drill, with a report
            log.debug("phase %s", name, exc_info=True)
            phase["status"], phase["error"] = "failed", f"unexpected error: {type(exc).__name__}: {exc}"
        phase["seconds"] = round(time.monotonic() - t, 3)
        if phase["error"]:
            self.problems.append(f"{name}: {phase['error']}")
        self.emit({"event": "drill.phase", **phase})
        return phase["status"] == "ok"

    # -- replication lag, for the RPO
    def replication_lag(self, info: SnapshotInfo) -> tuple[float | None, str]:
        s = self.settings
        if s.replication.sites:
            try:
                summary = replication_summary(s, probe=True)
            except Exception as exc:  # the RPO is still reported, with the lag as unknown
                return None, f"unknown: replication check failed ({getattr(exc, 'message', exc)})"
            if summary.get("lag_seconds") is not None:
                return float(summary["lag_seconds"]), "measured now by a replication probe"
            return None, "unknown: " + (summary.get("probe_error") or "the probe measured no lag")
        lag = (info.meta.get("replication") or {}).get("lag_seconds")
        if lag is not None:
            return float(lag), "measured when the snapshot was taken"
        return None, "unknown: no replication check configured (replication.sites)"

    # -- the whole run
    def run(self) -> DrillOutcome:
        dest, info = preflight(self)
        self.emit({"event": "drill.started", "drill_id": self.drill_id, "snapshot": info.id,
                   "scratch_database": self.scratch.database, "scratch_prefix": self.scratch.prefix})
        cleanup: dict[str, Any] = {}
        with _sigterm_as_interrupt():
            try:
                steps: list[tuple[str, Callable[[dict[str, Any]], None]]] = [
                    ("snapshot_check", lambda d: check_snapshot(self, dest, info, d)),
                    ("restore_database", lambda d: restore_database(self, dest, info, d)),
                    ("rebuild_index", lambda d: rebuild_index(self, dest, info, d)),
                    ("verify", lambda d: verify(self, info, d)),
                ]
                for number, (name, fn) in enumerate(steps, start=1):
                    if self.phases and self.phases[-1]["status"] != "ok":
                        self.phases.append({"name": name, "status": "skipped", "seconds": 0.0, "detail": {},
                                            "error": None})
                        continue
                    self._phase(name, fn)
                    self.emit({"event": "progress", "task": "drill", "unit": "phases", "done": number,
                               "total": len(steps)})
            except KeyboardInterrupt:
                log.error("drill %s interrupted: %s", self.drill_id,
                          "scratch targets kept (--keep)" if self.options.keep else "removing its scratch targets")
                raise
            finally:
                if not self.options.keep:
                    with _signals_deferred():
                        cleanup = remove_scratch_targets(self)
        lag, lag_source = self.replication_lag(info)
        s = self.settings
        where = vector_stores.get(self.scratch.backend).location(s) if self.scratch.backend else None
        scratch = {"database": f"{s.postgres.host}:{s.postgres.port}/{self.scratch.database}",
                   "collections": ", ".join(self.scratch.collections) or "(none)",
                   "vector_store": f"{self.scratch.backend} {where}",
                   "rebuild_ledgers": self.scratch.ledger_prefix}
        if self.scratch.plugin_database:
            scratch["plugin_database"] = f"{s.postgres.host}:{s.postgres.port}/{self.scratch.plugin_database}"
        record = build_record(
            drill_id=self.drill_id, started_at=self.started, finished_at=datetime.now(UTC),
            snapshot={"id": info.id, "fence": info.meta.get("fence"), "encrypted": info.encrypted,
                      **(info.authentication.to_dict() if info.authentication else {"authenticated": False})},
            fence=info.fence, phases=self.phases, rto_slo=self.options.rto_slo, rpo_slo=self.options.rpo_slo,
            lag=lag, lag_source=lag_source, scratch=scratch, cleanup=cleanup, kept=self.options.keep,
            problems=self.problems, version=__version__)
        record = cast(dict[str, Any], redact_obj(record))  # reports and history leave this machine
        history_error = None
        try:
            earlier = load_history(dest, 30)
        except DrtoolError as exc:
            earlier, history_error = [], f"could not read the drill history: {exc}"
        history_key = None
        try:
            history_key = append_history(dest, record)
        except DrtoolError as exc:
            history_error = f"could not append to the drill history: {exc}"
            log.warning("%s", history_error)
        reports = write_reports(record, earlier, self.options.report_dir)
        return DrillOutcome(record=record, reports=reports, history_key=history_key, history_error=history_error)


def run_drill(settings: Settings, options: DrillOptions, *, emit: Emit) -> DrillOutcome:
    return Drill(settings, options, emit=emit).run()
