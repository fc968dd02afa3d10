"""What `snapshot create` checks before it writes anything: a refusal here leaves the destination untouched."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from drtool.adapters import postgres as pga
from drtool.adapters import s3 as s3a
from drtool.config import S3Settings, Settings
from drtool.core.object_lock import Retention, retention_for
from drtool.errors import ConfigError, DrtoolError, UsageError, VerificationFailed
from drtool.ops.replication.summary import replication_summary
from drtool.ops.snapshot.destination import Destination

log = logging.getLogger("drtool.snapshot")


def replication_verdict(settings: Settings, required: bool) -> dict[str, Any] | None:
    """The replication verdict for meta.json; with --require-replication a bad verdict stops the snapshot."""
    if not required and not settings.replication.sites:
        return None
    try:
        summary = replication_summary(settings, probe=False)
    except DrtoolError as exc:
        if required:
            raise
        log.warning("replication status unknown: %s", exc)
        return {"verdict": "UNKNOWN", "error": str(exc)}
    if required and summary.get("verdict") not in ("OK", "WARNING"):
        reasons = "; ".join(str(r.get("message", r)) for r in summary.get("reasons", [])[:3])
        raise VerificationFailed(f"replication verdict is {summary.get('verdict')}: {reasons}",
                                 hint="fix replication (drtool replication status) or run without "
                                      "--require-replication", system="replication")
    return summary


def object_lock(settings: Settings, retain_until: str | None, dest: Destination) -> Retention | None:
    """The retention every artifact gets, after checking the snapshot bucket can enforce it.

    Asked for on a bucket without Object Lock it is a configuration error, not a warning: an operator who asked
    for immutable restore points must not get mutable ones in silence.
    """
    try:
        retention = retention_for(settings.snapshot.object_lock_mode, retain_until=retain_until,
                                  days=settings.snapshot.object_lock_days, now=datetime.now(UTC))
    except ValueError as exc:
        raise UsageError(str(exc), hint="e.g. --retain-until 30d or --retain-until 2027-01-31") from None
    if retention is None:
        return None
    try:
        config = s3a.object_lock_configuration(dest.client, dest.bucket)
    except Exception as exc:
        raise dest.s3_error(exc, f"Object Lock configuration of snapshot bucket {dest.bucket}") from None
    if config is None:
        raise ConfigError(
            f"retention was asked for (until {retention.until.isoformat()}) but snapshot bucket {dest.bucket} "
            "does not have Object Lock enabled",
            hint="Object Lock can only be enabled when a bucket is created: create a new bucket with it "
                 "(`mc mb --with-lock ALIAS/BUCKET`, or `aws s3api create-bucket --object-lock-enabled-for-bucket`) "
                 "and point snapshot.bucket at it; or drop --retain-until / set snapshot.object_lock_days = 0")
    if (config.get("Rule") or {}).get("DefaultRetention"):
        log.info("snapshot bucket %s has a default retention rule: the lock objects and verified.json are locked "
                 "too (only new versions can replace them)", dest.bucket)
    return retention


def s3_endpoint_key(s3: S3Settings) -> str:
    return (s3.endpoint or "aws").rstrip("/")


def check_pg_dump(settings: Settings) -> None:
    """Refuse a pg_dump older than the server before anything is written (issue 12).

    The exported snapshot's transaction checks again (the server could be upgraded in between), but only after
    the destination lock is written; an operator whose client is too old should get the refusal with the bucket
    as it was.
    """
    pg = settings.postgres
    with pga.connect(pg, autocommit=True) as conn:
        row = conn.execute("SELECT current_setting('server_version_num')::int, current_setting('server_version')"
                           ).fetchone()
    assert row is not None
    server_major = pga.server_major_of(int(row[0]))
    pg_dump = pga.find_pg_tool("pg_dump", server_major=server_major, bin_dir=settings.snapshot.pg_bin_dir)
    dump_major, dump_text = pga.tool_version(pg_dump)
    pga.check_tool_not_older("pg_dump", dump_major, dump_text, server_major, str(row[1]), path=pg_dump)

