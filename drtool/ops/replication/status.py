"""`drtool replication status`: ask every MinIO site, check every replicated bucket, decide one verdict.

Each site reports only its own queue and traffic, and a site that is down cannot say so itself, so every site
is asked (concurrently) and the verdict combines all answers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from drtool.adapters import s3 as s3_adapter
from drtool.adapters.minio_admin import MinioAdmin, NotMinioError, SiteUnreachable
from drtool.config import Settings
from drtool.core.metrics import Metric
from drtool.core.replication_verdict.backlog import Backlog, backlog_reasons, drop_healed_hourly_failures
from drtool.core.replication_verdict.bucket_config import BucketConfig, bucket_config_reasons
from drtool.core.replication_verdict.site_answers import SiteAnswer, Thresholds, offline_peers, site_reasons
from drtool.core.replication_verdict.verdict import Level, Reason, Verdict, decide
from drtool.errors import AuthError, DrtoolError, UnavailableError
from drtool.ops.replication.deadline import Progress
from drtool.ops.replication.sites import Site, admin_for, self_and_peers, site_client

log = logging.getLogger("drtool.replication")

__all__ = ["StatusReport", "replication_status", "status_metrics", "thresholds_from"]


def thresholds_from(settings: Settings) -> Thresholds:
    rep = settings.replication
    return Thresholds(expected_sites=rep.expected_sites, max_queued=rep.max_queued,
                      max_failed_last_hour=rep.max_failed_last_hour)


@dataclass
class StatusReport:
    checked_at: datetime
    answers: list[SiteAnswer]
    status_errors: dict[str, str]  # alias -> why the status call failed although the site answered
    buckets: list[BucketConfig]
    bucket_lists: dict[str, list[str]]  # alias -> buckets seen through S3
    verdict: Verdict
    extra_reasons: list[Reason] = field(default_factory=list)
    backlogs: list[Backlog] = field(default_factory=list)
    backlog_errors: dict[str, str] = field(default_factory=dict)  # alias -> why its backlog could not be read

    def to_dict(self) -> dict[str, Any]:
        return {
            "event": "result",
            "checked_at": self.checked_at.isoformat(),
            **self.verdict.to_dict(),
            "sites": [
                {"alias": a.alias, "endpoint": a.endpoint, "reachable": a.error is None, "error": a.error,
                 "status_error": self.status_errors.get(a.alias), "health": dict(a.health),
                 "info": a.info, "status": a.status, "buckets": self.bucket_lists.get(a.alias)}
                for a in self.answers
            ],
            "bucket_config": [
                {"site": b.site, "bucket": b.bucket, "versioning": b.versioning,
                 "replication_rules": [{"id": r.get("ID"), "status": r.get("Status"),
                                        "destination": (r.get("Destination") or {}).get("Bucket")}
                                       for r in b.rules],
                 "noncurrent_expiry_days": [(r.get("NoncurrentVersionExpiration") or {}).get("NoncurrentDays")
                                            for r in b.lifecycle_rules
                                            if r.get("Status") == "Enabled" and r.get("NoncurrentVersionExpiration")]}
                for b in self.buckets
            ],
            "backlog": [b.to_dict(self.checked_at) for b in self.backlogs],
            "backlog_errors": dict(self.backlog_errors),
        }


_RETRYABLE_STATUS_CODES = ("XMinioSiteReplicationBackendIssue", "XMinioServerNotInitialized")


def _ask_site(admin: MinioAdmin) -> tuple[SiteAnswer, str | None]:
    """Health, info and status of one site. Unreachable -> an answer with `error`; auth/TLS/not-MinIO raise."""
    health = admin.health()
    try:
        info = admin.info()
    except SiteUnreachable as exc:
        return SiteAnswer(admin.alias, admin.endpoint, error=exc.message, health=health), None
    status: dict[str, Any] | None = None
    status_error: str | None = None
    if info.get("enabled"):
        # The first status call after a peer goes offline answers 503 XMinioSiteReplicationBackendIssue; the
        # next one reports the peer as offline, which is the finding the operator needs.
        for attempt in range(3):
            try:
                status = admin.status()
                status_error = None
                break
            except (AuthError, NotMinioError):
                raise
            except UnavailableError as exc:
                if "TLS" in exc.message:
                    raise
                status_error = exc.message
                if not any(code in exc.message for code in _RETRYABLE_STATUS_CODES) or attempt == 2:
                    break
                time.sleep(1.0 + attempt)
    else:
        status = {"Enabled": False}
    return SiteAnswer(admin.alias, admin.endpoint, info=info, status=status, health=health), status_error


def _bucket_configs(settings: Settings, answer: SiteAnswer) -> tuple[list[str], list[BucketConfig]]:
    client = site_client(settings, Site(answer.alias, answer.endpoint))
    _, peers = self_and_peers(answer)
    what = f"site {answer.alias}: bucket configuration"
    try:
        names = sorted(b["Name"] for b in client.list_buckets().get("Buckets", []))
        configs = []
        for name in names:
            setup = s3_adapter.bucket_replication_setup(client, name)
            configs.append(BucketConfig(site=answer.alias, bucket=name, versioning=setup["versioning"],
                                        rules=setup["rules"], lifecycle_rules=setup["lifecycle_rules"], peers=peers))
    except Exception as exc:
        raise s3_adapter.translate_error(exc, what=what, endpoint=answer.endpoint) from None
    return names, configs


def _site_backlog(settings: Settings, answer: SiteAnswer, configs: Sequence[BucketConfig]
                  ) -> tuple[list[Backlog], str | None]:
    """Stream MinIO's replication diff of every replicated bucket of one site; an error is reported, not raised."""
    admin = admin_for(settings, Site(answer.alias, answer.endpoint))
    backlogs: list[Backlog] = []
    try:
        for config in configs:
            if not any(r.get("Status") == "Enabled" for r in config.rules):
                continue
            backlog = Backlog(answer.alias, config.bucket)
            for item in admin.replication_backlog(config.bucket):
                backlog.add(item)
            backlogs.append(backlog)
    except AuthError as exc:
        # The same rule as every refused permission (exit 12), naming the action the policy lacks.
        raise AuthError(f"{exc.message}; reading the replication backlog needs admin:ReplicationDiff",
                        system=exc.system, hint="grant admin:ReplicationDiff (docs/iam.md), or pass --no-backlog "
                                                "(replication.backlog_check = false)") from None
    except (NotMinioError, UnavailableError) as exc:
        return backlogs, exc.message
    finally:
        admin.close()
    return backlogs, None


def replication_status(settings: Settings, sites: Sequence[Site], thresholds: Thresholds, *,
                       check_buckets: bool = True, progress: Progress | None = None) -> StatusReport:
    """Ask every site, check replicated buckets on each reachable one, and decide the verdict."""
    checked_at = datetime.now(UTC)
    progress = progress or Progress()
    progress.plan(f"site {s.alias} status" for s in sites)
    if check_buckets:
        progress.plan(f"site {s.alias} buckets" for s in sites)
        if settings.replication.backlog_check:
            progress.plan(f"site {s.alias} backlog" for s in sites)
    admins = [admin_for(settings, s) for s in sites]
    errors: list[DrtoolError] = []
    answers: list[SiteAnswer] = []
    status_errors: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(admins)))) as pool:
        futures = [pool.submit(_ask_site, a) for a in admins]
        for admin, fut in zip(admins, futures, strict=True):
            try:
                answer, status_error = fut.result()
            except DrtoolError as exc:
                errors.append(exc)
                continue
            progress.done(f"site {admin.alias} status")
            answers.append(answer)
            if status_error:
                status_errors[admin.alias] = status_error
    for admin in admins:
        admin.close()
    if errors:
        # Credentials first (exit 12), then "not MinIO", then the rest: the most actionable error wins.
        errors.sort(key=lambda e: 0 if isinstance(e, AuthError) else 1 if isinstance(e, NotMinioError) else 2)
        for other in errors[1:]:
            log.error("%s", other)
        raise errors[0]

    reasons: list[Reason] = []
    for answer in answers:
        reasons.extend(site_reasons(answer, thresholds))
        if answer.alias in status_errors:
            reasons.append(Reason(Level.CRITICAL, "status_failed", answer.alias,
                                  f"site {answer.alias} could not build its replication status "
                                  f"({status_errors[answer.alias]}); usually a peer is unreachable"))

    bucket_lists: dict[str, list[str]] = {}
    configs: list[BucketConfig] = []
    if check_buckets:
        usable = [a for a in answers if a.error is None and (a.status or {}).get("Enabled")]
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(usable)))) as pool:
            results = list(pool.map(lambda a: _bucket_configs(settings, a), usable))
        for answer, (names, site_configs) in zip(usable, results, strict=True):
            progress.done(f"site {answer.alias} buckets")
            bucket_lists[answer.alias] = names
            configs.extend(site_configs)
        for config in configs:
            reasons.extend(bucket_config_reasons(config))
        # Direct evidence, independent of MinIO's own bookkeeping: a bucket one site has and another lacks.
        everywhere = set().union(*bucket_lists.values()) if bucket_lists else set()
        for alias, names in sorted(bucket_lists.items()):
            for bucket in sorted(everywhere - set(names)):
                reasons.append(Reason(Level.CRITICAL, "bucket_missing", alias,
                                      f"bucket {bucket} is missing on site {alias}", bucket))
    backlogs: list[Backlog] = []
    backlog_errors: dict[str, str] = {}
    if check_buckets and settings.replication.backlog_check:
        # Each site knows only what it has not sent yet, so every reachable site is asked.
        usable = [a for a in answers if a.alias in bucket_lists]
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(usable)))) as pool:
            found = list(pool.map(lambda a: _site_backlog(settings, a, [c for c in configs if c.site == a.alias]),
                                  usable))
        healed: set[str] = set()
        for answer, (site_backlogs, error) in zip(usable, found, strict=True):
            progress.done(f"site {answer.alias} backlog")
            backlogs.extend(site_backlogs)
            if error:
                backlog_errors[answer.alias] = error
                reasons.append(Reason(Level.WARNING, "backlog_unavailable", answer.alias,
                                      f"site {answer.alias}: could not read the replication backlog ({error})"))
            elif all(b.empty for b in site_backlogs):
                healed.add(answer.alias)
        reasons = drop_healed_hourly_failures(reasons, healed)
        reasons.extend(backlog_reasons(backlogs, datetime.now(UTC), float(settings.replication.max_failed_age)))
    return StatusReport(checked_at=checked_at, answers=answers, status_errors=status_errors, buckets=configs,
                        bucket_lists=bucket_lists, verdict=decide(_dedupe(reasons)), backlogs=backlogs,
                        backlog_errors=backlog_errors)


def _dedupe(reasons: Iterable[Reason]) -> list[Reason]:
    """Two sites describe the same mismatch in the same words; list it once."""
    seen: set[tuple[str, str]] = set()
    out: list[Reason] = []
    for reason in reasons:
        key = (reason.code, reason.message)
        if key not in seen:
            seen.add(key)
            out.append(reason)
    return out


def status_metrics(report: StatusReport) -> list[Metric]:
    """Prometheus gauges beyond the common four (drtool.cli.app): verdict, per site up/queue, per peer link
    online/failures/latency, per bucket backlog."""
    metrics = [
        Metric("drtool_replication_status_verdict", "Replication verdict: 0 OK, 1 WARNING, 2 CRITICAL",
               float(int(report.verdict.level))),
    ]
    for level in Level:
        metrics.append(Metric("drtool_replication_status_reasons", "Reasons found, by level",
                              float(sum(1 for r in report.verdict.reasons if r.level == level)),
                              {"level": level.label}))
    for answer in report.answers:
        site = {"site": answer.alias}
        metrics.append(Metric("drtool_replication_status_site_up", "1 when the site answered the admin API",
                              1.0 if answer.error is None else 0.0, site))
        status = answer.status or {}
        if answer.error is not None or not status.get("Enabled"):
            continue
        m = status.get("Metrics") or {}
        queued = ((m.get("queued") or {}).get("curr") or {})
        metrics.append(Metric("drtool_replication_status_queued_objects",
                              "Objects waiting in the site's replication queue",
                              float(queued.get("count") or 0), site))
        metrics.append(Metric("drtool_replication_status_queued_bytes",
                              "Bytes waiting in the site's replication queue",
                              float(queued.get("bytes") or 0), site))
        offline = {dep for dep, _ in offline_peers(status)}
        _, peers = self_and_peers(answer)
        repl = m.get("replMetrics") or {}
        for dep, name in sorted(peers.items(), key=lambda kv: kv[1]):
            labels = {"site": answer.alias, "peer": name}
            metrics.append(Metric("drtool_replication_status_link_online", "1 when the site reaches the peer",
                                  0.0 if dep in offline else 1.0, labels))
            peer_m = repl.get(dep) or {}
            failed = ((peer_m.get("failed") or {}).get("lastHour") or {}).get("count") or 0
            metrics.append(Metric("drtool_replication_status_failed_last_hour",
                                  "Replications to the peer that failed in the last hour", float(failed), labels))
            avg_ns = (peer_m.get("latency") or {}).get("avg") or 0
            metrics.append(Metric("drtool_replication_status_latency_seconds",
                                  "Average replication latency to the peer",
                                  float(avg_ns) / 1e9, labels))
    for backlog in report.backlogs:
        labels = {"site": backlog.site, "bucket": backlog.bucket}
        info = backlog.to_dict(report.checked_at)
        metrics.append(Metric("drtool_replication_status_backlog_failed_versions",
                              "Versions that failed to replicate, by bucket",
                              float(backlog.failed), labels))
        metrics.append(Metric("drtool_replication_status_backlog_pending_versions",
                              "Versions waiting to replicate, by bucket",
                              float(backlog.pending), labels))
        metrics.append(Metric("drtool_replication_status_backlog_oldest_failed_age_seconds",
                              "Age of the oldest version that failed to replicate (0: none)",
                              float(info["oldest_failed_age_seconds"] or 0), labels))
    # The text format wants each metric's samples together, under one HELP/TYPE header.
    order = {name: i for i, name in reversed(list(enumerate(m.name for m in metrics)))}
    return sorted(metrics, key=lambda m: order[m.name])
