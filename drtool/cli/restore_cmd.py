"""`drtool restore`: bring a snapshot's objects and database back."""

from __future__ import annotations

from typing import Any

import click

from drtool.cli.app import App, global_options, metrics_option, pass_app
from drtool.cli.snapshot_cmd import dest_flags, destination_options, expect_digest_option
from drtool.core.metrics import Metric


@click.command("restore")
@global_options
@destination_options
@click.argument("snapshot_id")
@click.option("--target-db", metavar="DSN|NAME",
              help="Database to restore into: a DSN or a database name on the configured server (created when "
                   "missing). The password may come from postgres.password or PGPASSWORD instead of the DSN.")
@click.option("--target-plugin-db", metavar="DSN|NAME",
              help="Database to restore the plugin daemon's database into, when the snapshot holds one (default: "
                   "the snapshot's own plugin database name for an in-place --target-db, else <target-db>_plugin).")
@click.option("--objects-to", metavar="BUCKET", help="Bucket to restore objects into (default: s3.bucket).")
@click.option("--no-objects", is_flag=True, help="Restore only the database.")
@click.option("--stores", is_flag=True,
              help="Also restore the extra stores the snapshot pinned (plugin storage outside Dify's bucket, archive "
                   "storage): their pinned versions made current again in their own configured buckets, in place. "
                   "Works with --dry-run and --verify-only.")
@click.option("--verify-only", is_flag=True, help="Only check that the target bucket holds every pinned version.")
@click.option("--dry-run", is_flag=True, help="Say what would be done; change nothing.")
@click.option("--yes", is_flag=True, help="Allow replacing the objects of a non-empty target database.")
@click.option("--no-owner", is_flag=True, help="Do not restore ownership and privileges (roles missing there).")
@click.option("--identity", type=click.Path(dir_okay=False, exists=True),
              help="age identity file, for an encrypted snapshot.")
@click.option("--break-stale-lock", is_flag=True,
              help="Replace a target's restore lock judged stale (held on another host, or older than "
                   "snapshot.lock_stale_after, or unverifiable: this host name but another PID namespace); a "
                   "dead run's lock in this host and PID namespace is taken over without it.")
@expect_digest_option
@metrics_option
@pass_app
def restore_cmd(app: App, dest_bucket: str | None, dest_prefix: str | None, dest_endpoint: str | None,
                snapshot_id: str, target_db: str | None, objects_to: str | None, no_objects: bool,
                verify_only: bool, dry_run: bool, yes: bool, no_owner: bool, identity: str | None,
                break_stale_lock: bool, expect_digest: str | None, target_plugin_db: str | None = None,
                stores: bool = False) -> int:
    """Restore SNAPSHOT_ID (or `latest`): make every pinned version current in the target bucket (server-side
    copy; objects already current are untouched), then pg_restore into --target-db in one transaction.

    Idempotent: a second run copies nothing and skips a database it already restored. Exit 4 when a pinned
    version is gone or (--verify-only) the target differs; 10 when the snapshot does not exist; 11 when another
    restore holds the target bucket's or database's lock (kept in the snapshot bucket under <prefix>/locks/).
    Also exit 4, with nothing copied or restored, when snapshot.trusted_keys is set and no trusted key signed the
    snapshot, when --expect-digest does not match, or when a manifest record would write or copy outside its place.
    """
    from drtool.adapters.age import load_identities
    from drtool.errors import UsageError
    from drtool.ops.snapshot.auth import parse_expect_digest
    from drtool.ops.snapshot.destination import open_destination
    from drtool.ops.snapshot.restore import restore

    if no_objects and not target_db and not stores:
        raise UsageError("nothing to restore", hint="pass --target-db or --stores, and/or drop --no-objects")
    expect_digest = parse_expect_digest(expect_digest)
    settings = app.settings(dest_flags(dest_bucket, dest_prefix, dest_endpoint))
    dest = open_destination(settings)
    identities = load_identities(identity) if identity else None
    result = restore(settings, dest, snapshot_id, target_db=target_db, objects_to=objects_to, dry_run=dry_run,
                     yes=yes, verify_only=verify_only, identities=identities, no_owner=no_owner,
                     skip_objects=no_objects, emit=app.emit, break_stale_lock=break_stale_lock,
                     expect_digest=expect_digest, target_plugin_db=target_plugin_db, stores=stores)
    payload: dict[str, Any] = {"event": "result", **result.to_dict()}
    objects = result.objects or {}
    app.add_metrics([
        Metric("drtool_restore_copied_objects", "Object versions the last restore made current again (would, "
               "with --dry-run).", objects.get("to_copy" if dry_run else "copied", 0) or 0),
        Metric("drtool_restore_current_objects", "Pinned object versions that were already current.",
               objects.get("already_current", 0) or 0),
    ])

    def render() -> None:
        o, d = result.objects, result.database
        prefix = "would: " if dry_run else ""
        if o and verify_only:
            app.echo(f"objects in {o['bucket']}: {o['already_current']} at their pinned version, "
                     f"{o.get('differ', 0)} differ")
        elif o:
            verb = "to copy" if dry_run else "copied"
            app.echo(f"{prefix}objects in {o['bucket']}: {o.get('to_copy' if dry_run else 'copied', 0)} {verb}, "
                     f"{o['already_current']} already current, {o['skipped_dangling']} dangling skipped")
        if d:
            app.echo(f"{prefix}database {d['target']}: {d['action']}")
        for st in result.stores:
            if verify_only:
                app.echo(f"{st['name']} storage in {st['bucket']}: {st['already_current']} at their pinned version, "
                         f"{st['differ']} differ")
            else:
                app.echo(f"{prefix}{st['name']} storage in {st['bucket']}: "
                         f"{st['to_copy' if dry_run else 'copied']} {'to copy' if dry_run else 'copied'}, "
                         f"{st['already_current']} already current")
        if result.plugin_database:
            app.echo(f"{prefix}plugin database {result.plugin_database['target']}: "
                     f"{result.plugin_database['action']}")

    app.result(payload, render)
    return 0
