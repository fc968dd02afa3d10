"""The state one `drtool audit` run shares with every check: settings, options, S3 clients, the findings.

Read-only by design: the only write is a probe of one drtool-owned key (`<snapshot.prefix>/audit/probe`) in each
bucket, deleted again by version, because "can drtool still write here?" cannot be answered by reading. Each check
catches its own failures and turns them into an `audit.check_failed` finding (`AuditRun.guarded`), so one system
that is down never hides what the audit could say about the others. Every checks_* module imports this one; the
runner imports them all, so no check imports another check's caller.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from drtool.config import S3Settings, Settings
from drtool.core.audit import MIN_FREE_PERCENT, AuditResult, Finding, Severity
from drtool.errors import DrtoolError
from drtool.ops.snapshot.destination import Destination, destination_settings
from drtool.wiring import anonymous_s3_client, s3_client

log = logging.getLogger("drtool.audit")

DEFAULT_KEYS = {"minioadmin"}  # MinIO's documented default root user


@dataclass(frozen=True)
class AuditOptions:
    rpo_hours: float = 26.0  # nightly snapshots plus slack
    drill_max_age_days: float = 14.0  # weekly drills, one may be missed
    probe: bool = True
    min_free_percent: float = MIN_FREE_PERCENT  # a MinIO drive with less free space is a warning


@dataclass
class AuditedBucket:
    role: str  # "dify", "snapshot" or "dify+snapshot"
    s3: S3Settings

    @property
    def name(self) -> str:
        return str(self.s3.bucket)


class AuditRun:
    def __init__(self, settings: Settings, options: AuditOptions) -> None:
        self.settings = settings
        self.options = options
        self.result = AuditResult()
        self.now = datetime.now(UTC)
        self._clients: dict[tuple[Any, ...], Any] = {}  # S3 clients take ~0.25 s each to make: one per key
        self._dest: Any = None

    def client(self, s3: S3Settings, *, anonymous: bool = False) -> Any:
        key = (s3.endpoint, s3.region, s3.address_style, s3.verify_tls, s3.ca_bundle, anonymous,
               None if anonymous else (s3.access_key, s3.secret_key, s3.use_instance_credentials))
        if key not in self._clients:
            self._clients[key] = anonymous_s3_client(s3) if anonymous else s3_client(s3, max_attempts=2)
        return self._clients[key]

    def destination(self) -> Any:
        if self._dest is None:
            s3 = destination_settings(self.settings)
            self._dest = Destination(s3=s3, client=self.client(s3), bucket=str(s3.bucket),
                                     prefix=self.settings.snapshot.prefix)
        return self._dest

    def add(self, fid: str, evidence: str, fix: str, target: str = "", severity: Severity | None = None) -> None:
        self.result.findings.append(Finding(fid, evidence, fix, target, severity))

    def guarded(self, what: str, fn: Callable[[], None]) -> None:
        """Run one check; a failure becomes a finding that names the check, never the end of the audit."""
        try:
            fn()
            self.result.checked.append(what)
        except Exception as exc:
            message = str(exc) if isinstance(exc, DrtoolError) else f"{type(exc).__name__}: {exc}"
            hint = getattr(exc, "hint", None)
            self.add("audit.check_failed", f"{what}: {message}", hint or "fix the cause and run drtool audit again",
                     target=what)
