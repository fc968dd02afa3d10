"""The replication verdict and the measured lag, as `drtool snapshot create` records them in meta.json.

Apart from status and probe because it uses both: the status verdict first, then (unless that is CRITICAL) a
probe for the lag, which the drill also reports as the RPO.
"""

from __future__ import annotations

from typing import Any

from drtool.config import Settings
from drtool.core.replication_verdict.verdict import Level
from drtool.ops.replication.probe import run_probe
from drtool.ops.replication.sites import configured_sites
from drtool.ops.replication.status import replication_status, thresholds_from

__all__ = ["replication_summary"]


def replication_summary(settings: Settings, *, probe: bool = True) -> dict[str, Any]:
    """The replication verdict (and, with `probe`, the measured lag) for `drtool snapshot create`'s meta.json.

    Returns {"verdict": "OK"|"WARNING"|"CRITICAL"|"UNKNOWN", "exit_code", "reasons": [...], "checked_at",
    "sites": [aliases], "lag_seconds": float|None, "delete_lag_seconds": float|None, "probe_error": str|None}.
    Raises ConfigError when no site is configured (replication.sites), and the status errors (AuthError, ...)
    when a site refuses; the caller decides whether that blocks the snapshot (--require-replication).
    The probe writes a small canary into s3.bucket on the first site and always removes it.
    """
    sites = configured_sites(settings)
    report = replication_status(settings, sites, thresholds_from(settings))
    summary: dict[str, Any] = {
        "verdict": report.verdict.level.label,
        "exit_code": report.verdict.exit_code,
        "reasons": [r.to_dict() for r in report.verdict.reasons],
        "checked_at": report.checked_at.isoformat(),
        "sites": [s.alias for s in sites],
        "lag_seconds": None,
        "delete_lag_seconds": None,
        "probe_error": None,
    }
    if probe and len(sites) >= 2 and settings.s3.bucket and report.verdict.level != Level.CRITICAL:
        result = run_probe(settings, sites[0], sites[1], bucket=settings.s3.bucket,
                           timeout=float(settings.replication.probe_timeout))
        summary["lag_seconds"] = result.put_lag
        summary["delete_lag_seconds"] = result.delete_lag
        summary["probe_error"] = result.error
    return summary
