"""A replicated bucket's own configuration, read through the S3 API of one site -> reasons.

MinIO's status can call a bucket replicated while its versioning is off or its rule to a peer is gone; the
bucket's own settings are the direct evidence. A lifecycle rule that expires noncurrent versions erases the
history a restore of an older snapshot needs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from drtool.core.replication_verdict.verdict import Level, Reason

__all__ = ["BucketConfig", "bucket_config_reasons"]


@dataclass(frozen=True)
class BucketConfig:
    """A bucket's own configuration as seen through the S3 API of one site."""

    site: str
    bucket: str
    versioning: str | None  # "Enabled", "Suspended" or None (never enabled)
    rules: Sequence[Mapping[str, Any]]  # ReplicationConfiguration.Rules as boto3 returns them
    lifecycle_rules: Sequence[Mapping[str, Any]] = ()
    peers: Mapping[str, str] = field(default_factory=dict)  # peer deploymentID -> peer name (this site excluded)


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
