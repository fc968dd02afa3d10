"""`drtool audit`: free space on the MinIO drives that hold Dify's files and the restore points.

Read from MinIO's `admin info` (servers[].drives[]: totalspace, availspace), the answer `mc admin info` prints;
the rule (which drive is too full) is pure: drtool.core.audit.low_free_drives. Each MinIO site of
`replication.sites`, or `s3.endpoint` when none is configured, as for the audit-log check.
"""

from __future__ import annotations

from drtool.core.audit import low_free_drives
from drtool.ops.audit.checks_minio import server_infos
from drtool.ops.audit.context import AuditRun

MAX_LISTED = 5  # drives named in one finding's evidence


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB"


def free_space(audit: AuditRun) -> None:
    """A drive below `AuditOptions.min_free_percent` free is a warning, one finding per site."""
    limit = audit.options.min_free_percent
    for site, info in server_infos(audit, "free space"):
        audit.result.checked.append(f"minio: free space of {site.endpoint}")
        low = low_free_drives(info, limit)
        if not low:
            continue
        listed = "; ".join(f"{d.server} {d.path}: {d.free_percent:.1f} % free ({_gb(d.available)} of "
                           f"{_gb(d.total)})" for d in low[:MAX_LISTED])
        more = f" (+{len(low) - MAX_LISTED} more)" if len(low) > MAX_LISTED else ""
        audit.add("minio.low_free_space",
                  f"admin info of {site.endpoint}: {len(low)} drive(s) below {limit:g} % free: {listed}{more}",
                  "add capacity (a new server pool, or larger drives); free space within the retention rules: "
                  "drtool snapshots prune, a lifecycle rule expiring noncurrent versions no sooner than the "
                  "retention horizon (docs/audit.md)", site.endpoint)
