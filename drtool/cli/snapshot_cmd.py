"""`drtool snapshot create` and `drtool snapshots list|verify|prune|gc|unlock`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from drtool.cli.app import App, Outcome, conclude, global_options, metrics_option, pass_app
from drtool.core.metrics import Metric
from drtool.core.terminal import one_line
from drtool.errors import DrtoolError, VerificationFailed


def s3_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Any S3 error that escaped the operation still reaches the operator as a DrtoolError with an exit code."""
    import functools

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except DrtoolError:
            raise
        except Exception as exc:
            if type(exc).__module__.startswith(("botocore", "boto3", "s3transfer", "urllib3")):
                from drtool.adapters.s3 import translate_error
                from drtool.ops.snapshot.destination import destination_endpoint

                # Name the endpoint the command used (a stream cut mid-read lands here), not "AWS S3".
                context = click.get_current_context(silent=True)
                app = context.find_object(App) if context else None
                loaded = app.loaded_settings if app is not None else None
                endpoint = destination_endpoint(loaded) if loaded is not None else None
                raise translate_error(exc, what="snapshot storage", endpoint=endpoint) from None
            raise

    return wrapper


def destination_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Where snapshots live; every snapshot command takes these (they override snapshot.* settings)."""
    options = [
        click.option("--dest-bucket", help="Snapshot bucket (snapshot.bucket; default: s3.bucket)."),
        click.option("--dest-prefix", help="Key prefix of snapshots in that bucket (snapshot.prefix, default drtool)."),
        click.option("--dest-endpoint", help="S3 endpoint of the snapshot bucket (snapshot.endpoint; default: "
                                             "s3.endpoint)."),
    ]
    command = s3_errors(command)
    for option in reversed(options):
        command = option(command)
    return command


def expect_digest_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """--expect-digest for the commands that read a snapshot back (verify, restore, drill)."""
    return click.option(
        "--expect-digest", metavar="HEX",
        help="Refuse (exit 4) unless the snapshot's digest (the sha256 of its SHA256SUMS, printed by `snapshot "
             "create`) is exactly this: pins one snapshot out of band, also against a replayed older one.")(command)


def dest_flags(dest_bucket: str | None, dest_prefix: str | None, dest_endpoint: str | None) -> dict[str, Any]:
    return {"snapshot.bucket": dest_bucket, "snapshot.prefix": dest_prefix, "snapshot.endpoint": dest_endpoint}


def _human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _human_age(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


# --- snapshot create ---------------------------------------------------------------------------------------------

@click.group("snapshot")
def snapshot_group() -> None:
    """Take a consistent snapshot: Postgres dump + the object versions it references, at one instant."""


@snapshot_group.command("create")
@global_options
@destination_options
@click.option("--schema", "schemas", multiple=True, metavar="NAME", help="Dump only this schema (repeatable).")
@click.option("--table", "tables", multiple=True, metavar="NAME", help="Dump only this table (repeatable).")
@click.option("--encrypt-to", "encrypt_to", multiple=True, metavar="RECIPIENT",
              help="age recipient (age1…) or recipients file; repeatable (snapshot.encrypt_to).")
@click.option("--copy-unversioned", is_flag=True,
              help="Source bucket without versioning: copy referenced objects into the snapshot (server-side).")
@click.option("--require-replication", is_flag=True,
              help="Refuse to snapshot unless the replication verdict (replication.sites) is OK or WARNING.")
@click.option("--break-stale-lock", is_flag=True,
              help="Replace a lock judged stale (older than snapshot.lock_stale_after, or unverifiable: held from "
                   "another PID namespace or boot of this host name), with a warning; a live lock is never replaced.")
@metrics_option
@click.option("--retain-until", metavar="DATE|DURATION",
              help="S3 Object Lock: no one can delete or overwrite the snapshot's artifacts before this date "
                   "(2027-01-31, or 30d / 12h / 2w from now; overrides snapshot.object_lock_days). The snapshot "
                   "bucket must have Object Lock enabled, else exit 2 and nothing is written.")
@click.option("--max-requests-per-second", "max_rps", type=click.FloatRange(min=0), metavar="N",
              help="Send at most N listing requests per second to the source bucket, so that live writers keep "
                   "their throughput (snapshot.max_requests_per_second; 0 = no cap). The listing takes longer.")
@pass_app
def create(app: App, dest_bucket: str | None, dest_prefix: str | None, dest_endpoint: str | None,
           schemas: tuple[str, ...], tables: tuple[str, ...], encrypt_to: tuple[str, ...], copy_unversioned: bool,
           require_replication: bool, break_stale_lock: bool, retain_until: str | None,
           max_rps: float | None) -> int | Outcome:
    """Dump Postgres and pin every object version its rows reference, as of one fence time.

    Writes <prefix>/snapshots/<id>/ (dump, manifest.jsonl.zst, meta.json, SHA256SUMS, COMMITTED last). Silent on
    success unless -v. Exit 0 ok, 3 committed with warnings (dangling references, lifecycle rule, clock skew),
    2 --retain-until on a bucket without Object Lock, 11 another run holds the lock, 12 credentials refused.
    """
    from drtool.ops.snapshot.create import CreateOptions, create_snapshot

    flags = dest_flags(dest_bucket, dest_prefix, dest_endpoint)
    if encrypt_to:
        flags["snapshot.encrypt_to"] = encrypt_to  # a list setting: each item whole, a comma in a path included
    if max_rps is not None:
        flags["snapshot.max_requests_per_second"] = max_rps
    settings = app.settings(flags)
    options = CreateOptions(schemas=schemas, tables=tables, encrypt_to=settings.snapshot.encrypt_to,
                            copy_unversioned=copy_unversioned, require_replication=require_replication,
                            break_stale_lock=break_stale_lock, retain_until=retain_until)
    result = create_snapshot(settings, options, emit=app.emit)
    meta = result.meta
    code = result.exit_code
    app.add_metrics([
        Metric("drtool_snapshot_create_written_bytes", "Bytes the last snapshot wrote (dump + manifest).",
               meta["bytes"]["dump"] + meta["bytes"]["manifest"]),
        Metric("drtool_snapshot_create_pinned_objects", "Object versions the last snapshot pinned.",
               meta["counts"]["pinned"]),
        Metric("drtool_snapshot_create_dangling_references", "Referenced keys without an object at the fence.",
               meta["counts"]["dangling"]),
    ])
    payload = {"event": "result", "snapshot": result.snapshot_id,
               "fence": result.fence, "fence_window_start": meta["fence_window_start"], "counts": meta["counts"],
               "bytes": meta["bytes"], "retention": meta.get("retention"), "warnings": result.warnings,
               "digest": result.digest, "signed_by": result.signed_by, "exit_code": code}

    def render() -> None:
        if app.verbosity:
            c = meta["counts"]
            app.echo(f"snapshot {result.snapshot_id} committed: fence {result.fence}, {c['pinned']} object "
                     f"versions pinned, {c['dangling']} dangling, dump {_human_bytes(meta['bytes']['dump'])}")
            signed = f"signed by key {result.signed_by}" if result.signed_by else "NOT signed"
            app.echo(f"digest {result.digest} ({signed}; pin it with --expect-digest)")

    app.result(payload, render)
    warnings = "; ".join(result.warnings)
    return conclude(code, f"snapshot {result.snapshot_id} committed with {len(result.warnings)} warning(s): "
                          f"{warnings}")


# --- snapshots ... -----------------------------------------------------------------------------------------------

@click.group("snapshots")
def snapshots_group() -> None:
    """List, verify, prune and garbage-collect snapshots; remove a stale lock."""


@snapshots_group.command("list")
@global_options
@destination_options
@pass_app
def list_cmd(app: App, dest_bucket: str | None, dest_prefix: str | None, dest_endpoint: str | None) -> int:
    """Committed snapshots, newest first, with size, age, counts, encryption and verification state."""
    from drtool.ops.snapshot.catalog import list_snapshots
    from drtool.ops.snapshot.destination import open_destination

    settings = app.settings(dest_flags(dest_bucket, dest_prefix, dest_endpoint))
    dest = open_destination(settings)
    rows = [s.summary() for s in list_snapshots(dest)]
    payload = {"event": "result", "destination": dest.url, "snapshots": rows}

    def render() -> None:
        if not rows:
            app.echo(f"no committed snapshot in {dest.url}")
            return
        app.echo(f"{'ID':<24} {'FENCE (UTC)':<20} {'AGE':>5} {'SIZE':>10} {'OBJECTS':>8} {'DANGLING':>8} "
                 f"{'ENC':<4} {'SIGNED BY':<16} VERIFIED")
        for r in rows:
            v = r["verified"]
            verified = "never" if not v else (("ok" if v["ok"] else "BROKEN") + (" (deep)" if v["deep"] else ""))
            if r.get("retain_until"):
                verified += f", locked until {r['retain_until'][:10]}"
            fence = str(r["fence"])[:19].replace("T", " ")
            app.echo(f"{r['id']:<24} {fence:<20} {_human_age(r['age_s']):>5} {_human_bytes(r['bytes']):>10} "
                     f"{r['pinned']:>8} {r['dangling']:>8} {'age' if r['encrypted'] else '-':<4} "
                     f"{r.get('signed_by') or '-':<16} {verified}")

    app.result(payload, render)
    return 0


@snapshots_group.command("verify")
@global_options
@destination_options
@click.argument("snapshot_id", required=False)
@click.option("--latest", is_flag=True, hidden=True, help="Same as the ID `latest`.")
@click.option("--all", "all_", is_flag=True, help="Verify every committed snapshot.")
@click.option("--deep", is_flag=True, help="Also check every pinned object version (etag, size) and that "
                                           "pg_restore can read the dump.")
@click.option("--identity", type=click.Path(dir_okay=False, exists=True),
              help="age identity file; --deep of an encrypted snapshot needs it.")
@expect_digest_option
@pass_app
def verify_cmd(app: App, dest_bucket: str | None, dest_prefix: str | None, dest_endpoint: str | None,
               snapshot_id: str | None, latest: bool, all_: bool, deep: bool, identity: str | None,
               expect_digest: str | None) -> int:
    """Check who signed the snapshot (snapshot.trusted_keys), its artifact checksums and that its manifest stays
    inside its folder (and with --deep the pinned objects and the dump). Exit 4 naming what is broken."""
    from drtool.adapters.age import load_identities
    from drtool.errors import UsageError
    from drtool.ops.snapshot.auth import parse_expect_digest
    from drtool.ops.snapshot.catalog import list_snapshots, resolve
    from drtool.ops.snapshot.destination import open_destination
    from drtool.ops.snapshot.verify import verify

    if sum(bool(x) for x in (snapshot_id, latest, all_)) != 1:
        raise UsageError("name one snapshot: ID (or latest), or --all")
    if expect_digest and all_:
        raise UsageError("--expect-digest names one snapshot: use it with ID or --latest, not --all")
    expect_digest = parse_expect_digest(expect_digest)
    settings = app.settings(dest_flags(dest_bucket, dest_prefix, dest_endpoint))
    dest = open_destination(settings)
    identities = load_identities(identity) if identity else None
    targets = list_snapshots(dest) if all_ else [resolve(dest, "latest" if latest else str(snapshot_id))]
    results: list[dict[str, Any]] = []
    for info in targets:
        broken = verify(settings, dest, info, deep=deep, identities=identities, expect_digest=expect_digest)
        auth = info.authentication.to_dict() if info.authentication else {"authenticated": False}
        results.append({"snapshot": info.id, "ok": not broken, "broken": broken, **auth})
        app.emit({"event": "snapshot.verified", "snapshot": info.id, "ok": not broken, "deep": deep, **auth,
                  "broken": broken[:100]})
    failed = [r for r in results if not r["ok"]]
    if failed:
        lines = [f"{r['snapshot']}: {b}" for r in failed for b in r["broken"][:20]]
        raise VerificationFailed(f"{len(failed)} of {len(results)} snapshot(s) broken:\n  " + "\n  ".join(lines),
                                 hint="do not rely on them; take a new snapshot")
    if not app.json_mode and app.verbosity:
        for r in results:
            signed = f"signed by trusted key {r['signed_by']}" if r["authenticated"] else "NOT authenticated"
            app.echo(f"{r['snapshot']}: ok{' (deep)' if deep else ''}, {signed}")
    return 0


@snapshots_group.command("prune")
@global_options
@destination_options
@click.option("--keep-last", type=click.IntRange(min=0), help="Keep the newest N (snapshot.keep_last).")
@click.option("--keep-daily", type=click.IntRange(min=0), help="Keep one per day for N days (snapshot.keep_daily).")
@click.option("--keep-weekly", type=click.IntRange(min=0), help="Keep one per ISO week for N weeks.")
@click.option("--keep-monthly", type=click.IntRange(min=0), help="Keep one per month for N months.")
@click.option("--dry-run", is_flag=True, help="Print what would be deleted; delete nothing.")
@metrics_option
@pass_app
def prune_cmd(app: App, dest_bucket: str | None, dest_prefix: str | None, dest_endpoint: str | None,
              keep_last: int | None, keep_daily: int | None, keep_weekly: int | None, keep_monthly: int | None,
              dry_run: bool) -> int:
    """Delete committed snapshots outside the grandfather-father-son policy; the newest one always stays, and so
    does one still under Object Lock retention (reported as kept, exit 0)."""
    from drtool.core.retention import Policy
    from drtool.ops.snapshot.destination import open_destination
    from drtool.ops.snapshot.retention import prune

    flags = dest_flags(dest_bucket, dest_prefix, dest_endpoint) | {
        "snapshot.keep_last": keep_last, "snapshot.keep_daily": keep_daily, "snapshot.keep_weekly": keep_weekly,
        "snapshot.keep_monthly": keep_monthly}
    settings = app.settings(flags)
    s = settings.snapshot
    policy = Policy(s.keep_last, s.keep_daily, s.keep_weekly, s.keep_monthly)
    result = prune(settings, open_destination(settings), policy, dry_run=dry_run)
    payload = {"event": "result", "dry_run": dry_run, "keep": result.keep,
               "remove": result.remove, "removed": result.removed, "locked": result.locked}
    app.add_metrics([
        Metric("drtool_snapshots_prune_kept_snapshots", "Snapshots the policy kept in the last prune.",
               len(result.keep)),
        Metric("drtool_snapshots_prune_removed_snapshots", "Snapshots the last prune removed (would, with "
               "--dry-run).", len(result.remove if dry_run else result.removed)),
        Metric("drtool_snapshots_prune_locked_snapshots", "Snapshots the policy drops that Object Lock still keeps.",
               len(result.locked)),
    ])

    def render() -> None:
        if dry_run:
            for sid in result.remove:
                app.echo(f"would remove {sid}")
            for sid, reasons in result.keep.items():
                app.echo(f"keep {sid}  ({', '.join(reasons)})")
        elif app.verbosity:
            for sid in result.removed:
                app.echo(f"removed {sid}")
        if not dry_run:  # the policy would drop these: say why they stay, even without -v
            for sid, until in result.locked.items():
                app.echo(f"kept {sid}: Object Lock retention until {until}")

    app.result(payload, render)
    return 0


@snapshots_group.command("gc")
@global_options
@destination_options
@click.option("--grace", type=click.IntRange(min=0), help="Seconds an uncommitted folder is left alone "
                                                          "(snapshot.gc_grace, default 86400).")
@click.option("--dry-run", is_flag=True, help="Print what would be removed; remove nothing.")
@metrics_option
@pass_app
def gc_cmd(app: App, dest_bucket: str | None, dest_prefix: str | None, dest_endpoint: str | None,
           grace: int | None, dry_run: bool) -> int:
    """Remove uncommitted snapshot folders (killed runs) older than the grace period, and their unfinished
    multipart uploads."""
    from drtool.ops.snapshot.destination import open_destination
    from drtool.ops.snapshot.retention import gc

    settings = app.settings(dest_flags(dest_bucket, dest_prefix, dest_endpoint) | {"snapshot.gc_grace": grace})
    result = gc(settings, open_destination(settings), grace_s=settings.snapshot.gc_grace, dry_run=dry_run)
    payload = {"event": "result", "dry_run": dry_run, "removed": result.removed,
               "kept_young": result.kept_young, "kept_locked": result.kept_locked,
               "aborted_uploads": result.aborted_uploads}
    app.add_metrics([
        Metric("drtool_snapshots_gc_removed_folders", "Uncommitted snapshot folders the last gc removed (would, "
               "with --dry-run).", len(result.removed)),
        Metric("drtool_snapshots_gc_kept_folders", "Uncommitted folders left: younger than the grace period or "
               "under Object Lock.", len(result.kept_young) + len(result.kept_locked)),
        Metric("drtool_snapshots_gc_aborted_uploads", "Unfinished multipart uploads the last gc aborted.",
               result.aborted_uploads),
    ])

    def render() -> None:
        if dry_run or app.verbosity:
            verb = "would remove" if dry_run else "removed"
            for sid in result.removed:
                app.echo(f"{verb} uncommitted {sid}")
            for sid in result.kept_young:
                app.echo(f"left {sid} (younger than the grace period: may still be running)")
            for sid, until in result.kept_locked.items():
                app.echo(f"left {sid} (Object Lock retention until {until})")

    app.result(payload, render)
    return 0


@snapshots_group.command("unlock")
@global_options
@destination_options
@click.option("--force", is_flag=True, help="Remove the lock even if its holder may still be running.")
@pass_app
def unlock_cmd(app: App, dest_bucket: str | None, dest_prefix: str | None, dest_endpoint: str | None,
               force: bool) -> int:
    """Remove the destination's lock after a crashed run; refuses a lock that does not look stale."""
    from drtool.ops.snapshot.destination import open_destination
    from drtool.ops.snapshot.retention import unlock

    settings = app.settings(dest_flags(dest_bucket, dest_prefix, dest_endpoint))
    result = unlock(settings, open_destination(settings), force=force)
    app.result({"event": "result", **result},
               lambda: app.echo(f"removed the lock held by {one_line(result['holder'])}"))
    return 0


# `drtool snapshot list` and `drtool snapshots create` work too: one command, either spelling of the group.
for _command in list(snapshots_group.commands.values()):
    snapshot_group.add_command(_command)
snapshots_group.add_command(snapshot_group.commands["create"])
