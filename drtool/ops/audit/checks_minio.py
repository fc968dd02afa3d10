"""`drtool audit`: the MinIO admin API's view: site replication, the audit log target, each site's `admin info`.

Each MinIO site of `replication.sites`, or `s3.endpoint` when none is configured; a site without the admin API
(not MinIO) or down is recorded as skipped by the checks that only read it (a site that is down is the
site-replication check's finding). `server_infos` is shared with checks_storage (free space).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from drtool.adapters.minio_admin import NotMinioError
from drtool.core.replication_verdict.site_answers import offline_peers
from drtool.core.replication_verdict.verdict import Level
from drtool.errors import ConfigError, UnavailableError
from drtool.ops.audit.context import AuditRun
from drtool.ops.replication.sites import Site, admin_for, configured_sites
from drtool.ops.replication.status import replication_status, thresholds_from


def server_infos(audit: AuditRun, what: str) -> Iterator[tuple[Any, dict[str, Any]]]:
    """(site, `admin info` answer) of every MinIO site of replication.sites, or of s3.endpoint when none is
    configured; a site without the admin API or down is recorded as skipped for `what` (a site that is down
    is the site-replication check's finding)."""
    try:
        sites = configured_sites(audit.settings)
    except ConfigError:
        sites = []
    if not sites and audit.settings.s3.endpoint:
        sites = [Site("s3", audit.settings.s3.endpoint.rstrip("/"))]
    if not sites:
        audit.result.skipped.append(f"minio: {what} (no replication.sites and no s3.endpoint)")
        return
    for site in sites:
        admin = admin_for(audit.settings, site)
        try:
            info = admin.server_info()
        except NotMinioError:
            audit.result.skipped.append(f"minio: {what} of {site.endpoint} (no MinIO admin API)")
            continue
        except UnavailableError:
            audit.result.skipped.append(f"minio: {what} of {site.endpoint} (unreachable)")
            continue
        finally:
            admin.close()
        yield site, info


def audit_log(audit: AuditRun) -> None:
    """Every MinIO site (or s3.endpoint) sends its audit log somewhere, and that target is online."""
    for site, info in server_infos(audit, "audit log"):
        targets: dict[str, str] = {}
        for entry in (info.get("services") or {}).get("audit") or []:
            for name, state in (entry or {}).items():
                targets[str(name)] = str((state or {}).get("status", "unknown"))
        fix = ("mc admin config set ALIAS audit_webhook enable=on endpoint=https://<collector>/ (or "
               "audit_kafka); MINIO_AUDIT_WEBHOOK_ENABLE_<ID>=on in the server's environment")
        if not targets:
            audit.add("minio.audit_log_off", f"admin info of {site.endpoint}: no audit target", fix,
                      site.endpoint)
        elif not any(status == "online" for status in targets.values()):
            listed = ", ".join(f"{name} {status}" for name, status in sorted(targets.items()))
            audit.add("minio.audit_log_offline", f"admin info of {site.endpoint}: {listed}",
                      "bring the audit target's endpoint back (check `mc admin info --json` services.audit)",
                      site.endpoint)


def site_replication(audit: AuditRun) -> None:
    try:
        sites = configured_sites(audit.settings)
    except ConfigError:  # none configured: ask s3.endpoint whether it replicates at all
        sites = []
    if not sites:
        endpoint = audit.settings.s3.endpoint
        if not endpoint:
            audit.result.skipped.append("minio: no replication.sites and no s3.endpoint")
            return
        admin = admin_for(audit.settings, Site("s3", endpoint.rstrip("/")))
        try:
            info = admin.info()
        except NotMinioError:
            audit.result.skipped.append("minio: s3.endpoint has no MinIO admin API")
            return
        finally:
            admin.close()
        if not info.get("enabled"):
            audit.add("minio.site_replication_off", f"site-replication/info of {endpoint}: enabled=false",
                      "mc admin replicate add ALIAS-A ALIAS-B (a second, empty MinIO with the same root "
                      "credentials), then set replication.sites=A=https://...,B=https://...", endpoint)
        audit.result.checked.append("minio: site replication enabled")
        return
    report = replication_status(audit.settings, sites, thresholds_from(audit.settings), check_buckets=False)
    audit.result.checked.append(f"minio: site replication of {len(sites)} site(s)")

    down = [f"site {a.alias} ({a.endpoint}) unreachable" for a in report.answers if a.error is not None]
    for a in report.answers:
        if a.error is None and a.status:
            down += [f"site {a.alias} reports peer {dep or '?'} offline" for dep, _ in offline_peers(a.status)]
    reasons = "; ".join(f"{r.level.label}: {r.message}" for r in report.verdict.reasons)
    if down:
        audit.add("minio.site_offline", "; ".join(down) + (f" ({reasons})" if reasons else ""),
                  "start the site again (systemctl start minio / docker compose up -d minio) and watch "
                  "drtool replication status until it is OK", ", ".join(s.alias for s in sites))
    elif report.verdict.level == Level.CRITICAL:
        audit.add("minio.replication_critical", reasons, "drtool replication status (each reason names the fix)",
                  ", ".join(s.alias for s in sites))
    elif report.verdict.level == Level.WARNING:
        audit.add("minio.replication_warning", reasons, "drtool replication status (each reason names the fix)",
                  ", ".join(s.alias for s in sites))
