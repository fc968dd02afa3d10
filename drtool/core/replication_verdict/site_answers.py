"""What one site's admin API said (info, status, health) -> the reasons for a verdict worse than OK.

Each site reports only its own queue and its own view of its peers; the caller asks every site and combines the
reasons (drtool/ops/replication/status.py). `StatsSummary` is deliberately ignored: MinIO counts a bucket as
replicated even where it is missing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from drtool.core.replication_verdict.verdict import Level, Reason

__all__ = ["SiteAnswer", "Thresholds", "offline_peers", "site_reasons"]


@dataclass(frozen=True)
class Thresholds:
    expected_sites: int | None = None
    max_queued: int = 1000
    max_failed_last_hour: int = 0


@dataclass(frozen=True)
class SiteAnswer:
    """What one site said. `error` is set when it could not be asked (unreachable, timed out)."""

    alias: str
    endpoint: str
    info: Mapping[str, Any] | None = None
    status: Mapping[str, Any] | None = None
    error: str | None = None
    health: Mapping[str, int | None] = field(default_factory=dict)  # path -> HTTP status (None: no answer)


def _site_names(status: Mapping[str, Any]) -> dict[str, str]:
    sites = status.get("Sites") or {}
    return {dep: (peer.get("name") or peer.get("endpoint") or dep) for dep, peer in sites.items()}


def offline_peers(status: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Peers this site could not reach, as (deploymentID, name).

    MinIO shows an unreachable peer in two ways: its deploymentID is missing from `StatsSummary` and an
    empty-string key appears instead (the peer answered nothing), or `replMetrics[peer].isOnline` is false.
    """
    names = _site_names(status)
    summary = status.get("StatsSummary") or {}
    found: dict[str, str] = {}
    if "" in summary or any("" in (per or {}) for per in (status.get("BucketStats") or {}).values()):
        for dep, name in names.items():
            if dep not in summary:
                found[dep] = name
        if not found:
            found[""] = "an unnamed peer"
    metrics = (status.get("Metrics") or {}).get("replMetrics") or {}
    for dep, metric in metrics.items():
        if metric.get("isOnline") is False:
            found.setdefault(dep, names.get(dep) or metric.get("endpoint") or dep)
    return sorted(found.items(), key=lambda kv: kv[1])


_BUCKET_FLAGS = (
    ("TagMismatch", "tags"),
    ("VersioningConfigMismatch", "versioning configuration"),
    ("OLockConfigMismatch", "object-lock configuration"),
    ("PolicyMismatch", "bucket policy"),
    ("SSEConfigMismatch", "encryption configuration"),
    ("ReplicationCfgMismatch", "replication configuration"),
    ("QuotaCfgMismatch", "quota configuration"),
    ("CorsCfgMismatch", "CORS configuration"),
)
_ENTITY_FLAGS: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    "PolicyStats": ("policy", (("PolicyMismatch", "policy document"),)),
    "UserStats": ("user", (("PolicyMismatch", "policy mapping"), ("UserInfoMismatch", "user info"))),
    "GroupStats": ("group", (("PolicyMismatch", "policy mapping"), ("GroupDescMismatch", "group description"))),
    "ILMExpiryStats": ("ILM expiry rule", (("ILMExpiryRuleMismatch", "rule"),)),
}
_HAS_FLAG = {"PolicyStats": "HasPolicy", "UserStats": "HasUser", "GroupStats": "HasGroup",
             "ILMExpiryStats": "HasILMExpiryRules"}


def _number(value: Any) -> float:
    try:
        return float(value or 0)
    except (TypeError, ValueError):
        return 0.0


def site_reasons(answer: SiteAnswer, thresholds: Thresholds) -> list[Reason]:
    """Every reason one site's answers give for a verdict worse than OK."""
    site = answer.alias
    reasons: list[Reason] = []

    def add(level: Level, code: str, message: str, entity: str | None = None) -> None:
        reasons.append(Reason(level, code, site, message, entity))

    if answer.error is not None:
        add(Level.CRITICAL, "site_unreachable", f"site {site} ({answer.endpoint}) did not answer: {answer.error}")
        return reasons
    for path, code in answer.health.items():
        if path.startswith("/minio/health/cluster") and code not in (200, None):
            add(Level.CRITICAL, "no_write_quorum",
                f"site {site} health {path} answered {code}: the site has no write quorum")
    info = answer.info or {}
    status = answer.status or {}
    enabled = status.get("Enabled") if answer.status is not None else info.get("enabled")
    if not enabled:
        add(Level.CRITICAL, "replication_disabled", f"site replication is not enabled on site {site}")
        return reasons
    names = _site_names(status)
    count = len(status.get("Sites") or info.get("sites") or [])
    if thresholds.expected_sites is not None and count < thresholds.expected_sites:
        add(Level.CRITICAL, "too_few_sites",
            f"site {site} replicates with {count} site(s) ({', '.join(sorted(names.values()))}), "
            f"expected {thresholds.expected_sites}")
    for dep, name in offline_peers(status):
        add(Level.CRITICAL, "peer_offline", f"site {site} reports peer {name} offline"
            + (f" (deploymentID {dep})" if dep else ""), name)
    if "" in (status.get("StatsSummary") or {}):
        # A peer answered nothing, so every entity compares against an empty answer and shows as mismatched:
        # dozens of false warnings that would bury the one CRITICAL above.
        add(Level.WARNING, "entity_check_incomplete",
            f"site {site} could not compare buckets, users and policies with its offline peer")
    else:
        _entity_reasons(status, names, add)
    _metric_reasons(site, status, names, thresholds, add)
    return reasons


def _entity_reasons(status: Mapping[str, Any], names: Mapping[str, str], add: Any) -> None:
    """One reason per entity and flag, naming every site that differs (MinIO marks each side of a mismatch)."""

    def where(deps: Iterable[str]) -> str:
        return ", ".join(sorted(names.get(d) or d for d in deps))

    for bucket, per_site in sorted((status.get("BucketStats") or {}).items()):
        per_site = {d: s for d, s in (per_site or {}).items() if d}
        for dep in sorted(d for d, s in per_site.items() if s.get("HasBucket") is False):
            add(Level.CRITICAL, "bucket_missing", f"bucket {bucket} is missing on site {where([dep])}", bucket)
        deleted = [d for d, s in per_site.items() if s.get("BucketMarkedDeleted")]
        if deleted:
            add(Level.WARNING, "bucket_marked_deleted",
                f"bucket {bucket} is marked deleted on site {where(deleted)} but still exists elsewhere", bucket)
        for flag, what in _BUCKET_FLAGS:
            differing = [d for d, s in per_site.items() if s.get(flag)]
            if differing:
                add(Level.WARNING, "bucket_config_mismatch",
                    f"bucket {bucket}: {what} differs between sites ({where(differing)})", bucket)
    for key, (kind, flags) in _ENTITY_FLAGS.items():
        code = kind.replace(" ", "_").lower()
        for entity, per_site in sorted((status.get(key) or {}).items()):
            per_site = {d: s for d, s in (per_site or {}).items() if d}
            absent = [d for d, s in per_site.items() if s.get(_HAS_FLAG[key]) is False]
            if absent:
                add(Level.WARNING, f"{code}_missing", f"{kind} {entity} is missing on site {where(absent)}", entity)
            for flag, what in flags:
                differing = [d for d, s in per_site.items() if s.get(flag)]
                if differing:
                    add(Level.WARNING, f"{code}_mismatch",
                        f"{kind} {entity}: {what} differs between sites ({where(differing)})", entity)


def _metric_reasons(site: str, status: Mapping[str, Any], names: Mapping[str, str], thresholds: Thresholds,
                    add: Any) -> None:
    metrics = status.get("Metrics") or {}
    queued = _number(((metrics.get("queued") or {}).get("curr") or {}).get("count"))
    if queued > thresholds.max_queued:
        add(Level.WARNING, "queue_above_threshold",
            f"site {site} has {queued:.0f} objects queued for replication (threshold {thresholds.max_queued})")
    for dep, metric in sorted((metrics.get("replMetrics") or {}).items()):
        failed = _number(((metric.get("failed") or {}).get("lastHour") or {}).get("count"))
        if failed > thresholds.max_failed_last_hour:
            peer = names.get(dep) or metric.get("endpoint") or dep
            add(Level.WARNING, "failures_last_hour",
                f"site {site}: {failed:.0f} replications to {peer} failed in the last hour "
                f"(threshold {thresholds.max_failed_last_hour})", peer)
