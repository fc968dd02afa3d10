"""Turn MinIO's site-replication answers into one verdict with every reason listed.

`mc admin replicate status` prints tables and exits 0 whatever they show; cron and alerting need a decision.
This module is pure: it takes the parsed JSON each site returned (or the fact that it did not answer) and
returns reasons, each with a level, the site that reported it and a sentence an operator can act on.

Why each rule (see docs/replication.md):
- CRITICAL means data written now may not reach the other site: replication off, a site missing from the
  configuration, a site unreachable or reported offline by a peer, a bucket absent on a site, a bucket without
  versioning or without its replication rule to a peer.
- WARNING means replication works but something drifts: config mismatches per entity, a queue above a threshold,
  failures in the last hour, a lifecycle rule that expires noncurrent versions (it erases the history a restore
  of an older snapshot needs).
- `StatsSummary` is deliberately ignored: MinIO counts a bucket as replicated even where it is missing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any

__all__ = [
    "Backlog",
    "BucketConfig",
    "Level",
    "Reason",
    "SiteAnswer",
    "Thresholds",
    "Verdict",
    "backlog_reasons",
    "bucket_config_reasons",
    "decide",
    "drop_healed_hourly_failures",
    "exit_code",
    "offline_peers",
    "site_reasons",
]


class Level(IntEnum):
    OK = 0
    WARNING = 1
    CRITICAL = 2

    @property
    def label(self) -> str:
        return self.name


_EXIT = {Level.OK: 0, Level.WARNING: 3, Level.CRITICAL: 4}


def exit_code(level: Level) -> int:
    """drtool's exit code table: OK 0, WARNING 3 (degraded), CRITICAL 4."""
    return _EXIT[level]


@dataclass(frozen=True)
class Thresholds:
    expected_sites: int | None = None
    max_queued: int = 1000
    max_failed_last_hour: int = 0


@dataclass(frozen=True)
class Reason:
    level: Level
    code: str  # stable identifier for alert routing, e.g. "peer_offline"
    site: str  # the alias of the site that reported it
    message: str
    entity: str | None = None  # bucket, user, group, policy or rule name when the reason is about one

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["level"] = self.level.label
        return data


@dataclass(frozen=True)
class SiteAnswer:
    """What one site said. `error` is set when it could not be asked (unreachable, timed out)."""

    alias: str
    endpoint: str
    info: Mapping[str, Any] | None = None
    status: Mapping[str, Any] | None = None
    error: str | None = None
    health: Mapping[str, int | None] = field(default_factory=dict)  # path -> HTTP status (None: no answer)


@dataclass(frozen=True)
class BucketConfig:
    """A bucket's own configuration as seen through the S3 API of one site."""

    site: str
    bucket: str
    versioning: str | None  # "Enabled", "Suspended" or None (never enabled)
    rules: Sequence[Mapping[str, Any]]  # ReplicationConfiguration.Rules as boto3 returns them
    lifecycle_rules: Sequence[Mapping[str, Any]] = ()
    peers: Mapping[str, str] = field(default_factory=dict)  # peer deploymentID -> peer name (this site excluded)


@dataclass(frozen=True)
class Verdict:
    level: Level
    reasons: tuple[Reason, ...]

    @property
    def exit_code(self) -> int:
        return exit_code(self.level)

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.level.label, "exit_code": self.exit_code,
                "reasons": [r.to_dict() for r in self.reasons]}


def decide(reasons: Iterable[Reason]) -> Verdict:
    """The worst level wins; reasons are kept in order, CRITICAL first, so the top line is the one to read."""
    ordered = sorted(reasons, key=lambda r: -int(r.level))
    level = max((r.level for r in ordered), default=Level.OK)
    return Verdict(level=level, reasons=tuple(ordered))


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


@dataclass
class Backlog:
    """One site's unreplicated versions of one bucket, counted as they stream by (memory does not grow)."""

    site: str
    bucket: str
    failed: int = 0
    pending: int = 0
    oldest_failed: datetime | None = None
    oldest_pending: datetime | None = None
    examples: list[str] = field(default_factory=list)  # a few keys, for the operator

    def add(self, item: Mapping[str, Any], keep: int = 5) -> None:
        """Count one line of MinIO's replication diff; FAILED on any target counts as failed."""
        states = {str(item.get(k) or "").upper() for k in ("rStatus", "dStatus")}
        for target in (item.get("targets") or {}).values() if isinstance(item.get("targets"), Mapping) else ():
            if isinstance(target, Mapping):
                states |= {str(target.get(k) or "").upper() for k in ("rStatus", "dStatus")}
        when = _parse_time(item.get("lastModified"))
        if "FAILED" in states:
            self.failed += 1
            if when is not None and (self.oldest_failed is None or when < self.oldest_failed):
                self.oldest_failed = when
        elif states & {"PENDING", "QUEUED"}:
            self.pending += 1
            if when is not None and (self.oldest_pending is None or when < self.oldest_pending):
                self.oldest_pending = when
        else:
            return
        if len(self.examples) < keep:
            self.examples.append(str(item.get("object") or "")[:200])

    @property
    def empty(self) -> bool:
        return self.failed == 0 and self.pending == 0

    def to_dict(self, now: datetime) -> dict[str, Any]:
        def age(t: datetime | None) -> float | None:
            return None if t is None else max(0.0, (now - t).total_seconds())

        return {"site": self.site, "bucket": self.bucket, "failed": self.failed, "pending": self.pending,
                "oldest_failed_age_seconds": age(self.oldest_failed),
                "oldest_pending_age_seconds": age(self.oldest_pending), "examples": list(self.examples)}


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().replace("Z", "+00:00")
    head, dot, frac = text.partition(".")
    if dot:  # Go writes nanoseconds; Python reads at most microseconds
        digits = "".join(ch for ch in frac if ch.isdigit())
        text = f"{head}.{digits[:6]}{frac[len(digits):]}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def backlog_reasons(backlogs: Iterable[Backlog], now: datetime, max_failed_age: float) -> list[Reason]:
    """CRITICAL when a failed version is older than `max_failed_age` s, whatever MinIO's hourly counter says;
    WARNING while anything else waits. An empty backlog gives no reason at all."""
    reasons: list[Reason] = []
    for b in backlogs:
        if b.empty:
            continue
        failed_age = (now - b.oldest_failed).total_seconds() if b.oldest_failed else None
        pending_age = (now - b.oldest_pending).total_seconds() if b.oldest_pending else None
        if b.failed and (failed_age is None or failed_age > max_failed_age):
            reasons.append(Reason(
                Level.CRITICAL, "backlog_failed_old", b.site,
                f"site {b.site}: {b.failed} version(s) in bucket {b.bucket} failed to replicate, the oldest "
                f"written {_age(failed_age)} ago (threshold {max_failed_age:g} s)", b.bucket))
        else:
            oldest = max(a for a in (failed_age, pending_age, 0.0) if a is not None)
            reasons.append(Reason(
                Level.WARNING, "replication_backlog", b.site,
                f"site {b.site}: bucket {b.bucket} has {b.failed} failed and {b.pending} pending version(s) "
                f"not yet replicated, the oldest written {_age(oldest)} ago", b.bucket))
    return reasons


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "at an unknown time"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def drop_healed_hourly_failures(reasons: Iterable[Reason], healed_sites: set[str]) -> list[Reason]:
    """MinIO's failed-last-hour counter stays up for an hour after an outage healed; when a site's backlog is
    known to be empty, its failures were retried successfully and the counter alone is no reason to warn."""
    return [r for r in reasons if not (r.code == "failures_last_hour" and r.site in healed_sites)]


def _rule_destination_id(rule: Mapping[str, Any]) -> str:
    arn = str((rule.get("Destination") or {}).get("Bucket") or "")
    # arn:minio:replication::<deploymentID>:<bucket>
    parts = arn.split(":")
    return parts[4] if len(parts) >= 6 and parts[:3] == ["arn", "minio", "replication"] else ""


def bucket_config_reasons(config: BucketConfig) -> list[Reason]:
    """Check a replicated bucket's own configuration: versioning on, one enabled rule per peer, no noncurrent expiry."""
    reasons: list[Reason] = []
    site, bucket = config.site, config.bucket
    if config.versioning != "Enabled":
        reasons.append(Reason(Level.CRITICAL, "versioning_off", site,
                              f"bucket {bucket} on site {site} has versioning {config.versioning or 'never enabled'}:"
                              " replication needs it Enabled", bucket))
    enabled: dict[str, int] = {}
    for rule in config.rules:
        if rule.get("Status") == "Enabled":
            dest = _rule_destination_id(rule) or str(rule.get("ID", "")).removeprefix("site-repl-")
            enabled[dest] = enabled.get(dest, 0) + 1
    for dep, name in sorted(config.peers.items(), key=lambda kv: kv[1]):
        n = enabled.get(dep, 0)
        if n == 0:
            reasons.append(Reason(Level.CRITICAL, "replication_rule_missing", site,
                                  f"bucket {bucket} on site {site} has no enabled replication rule to peer {name}",
                                  bucket))
        elif n > 1:
            reasons.append(Reason(Level.WARNING, "replication_rule_duplicate", site,
                                  f"bucket {bucket} on site {site} has {n} enabled replication rules to peer {name}",
                                  bucket))
    for rule in config.lifecycle_rules:
        if rule.get("Status") != "Enabled":
            continue
        noncurrent = rule.get("NoncurrentVersionExpiration")
        if noncurrent:
            days = noncurrent.get("NoncurrentDays")
            reasons.append(Reason(Level.WARNING, "noncurrent_expiry", site,
                                  f"bucket {bucket} on site {site}: lifecycle rule {rule.get('ID') or '(no id)'} "
                                  f"expires noncurrent versions after {days} day(s); snapshots older than that "
                                  "cannot be restored", bucket))
    return reasons
