"""`drtool drill` and `drtool drill history`: a timed restore into scratch targets, and the record of past drills."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from drtool.cli.app import App, Outcome, conclude, global_options, metrics_option, pass_app
from drtool.core import drill_report as dr
from drtool.core.drill_record import format_duration, parse_duration
from drtool.core.metrics import Metric
from drtool.core.terminal import one_line
from drtool.errors import UsageError


def _duration(flag: str, text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"{flag}: {exc}", hint="e.g. 90s, 15m, 2h, 1d or 1h30m") from None


@click.group("drill", invoke_without_command=True)
@global_options
@click.option("--snapshot", "snapshot_ref", metavar="ID|latest", default="latest", show_default=True,
              help="Snapshot to restore (latest: the newest committed one in the snapshot destination).")
@click.option("--rto-slo", metavar="DURATION", help="Recovery time objective (90s, 15m, 2h, 1d): exit 4 above it.")
@click.option("--rpo-slo", metavar="DURATION", help="Recovery point objective (90s, 15m, 2h, 1d): exit 4 above it.")
@click.option("--report-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("drill-reports"),
              show_default=True, help="Folder for drill-<id>.json, .md and .html.")
@click.option("--keep", is_flag=True, help="Leave the scratch database and collections for inspection.")
@click.option("--scratch-db", metavar="NAME",
              help="Scratch database on the configured server [default: drtool_drill_<drill id suffix>]; must not "
                   "exist and must not be postgres.database.")
@click.option("--identity", type=click.Path(dir_okay=False, exists=True),
              help="age identity file, for an encrypted snapshot.")
@click.option("--expect-digest", metavar="HEX",
              help="Refuse (exit 4) unless the snapshot's digest (sha256 of its SHA256SUMS, printed by `snapshot "
                   "create`) is exactly this.")
@metrics_option
@click.pass_context
def drill_group(ctx: click.Context, snapshot_ref: str, rto_slo: str | None, rpo_slo: str | None,
                report_dir: Path, keep: bool, scratch_db: str | None, identity: str | None,
                expect_digest: str | None) -> int | Outcome | None:
    """Restore a snapshot into scratch targets and measure RTO and RPO.

    Phases, each timed: snapshot_check (checksums, pinned object versions, dump readable), restore_database
    (pg_restore into a scratch database), rebuild_index (re-embed every high-quality dataset into scratch
    collections Drill_<id>_<name>, from the chunk files at the snapshot's versions, with rebuild's verification
    gate), verify (drtool verify --snapshot against the scratch database and collections). RTO is the sum of
    the phases; RPO is the drill's start minus the snapshot's fence, plus the replication lag when
    replication.sites lets a probe measure it (otherwise reported as unknown). The scratch targets are removed
    afterwards, also on failure, Ctrl-C or SIGTERM, unless --keep. Reports go to --report-dir; the record is
    appended to <snapshot prefix>/drills/ in the snapshot bucket (`drtool drill history`).

    A snapshot no trusted key signed (snapshot.trusted_keys set), or not matching --expect-digest, is refused before
    any scratch target exists.

    Exit codes: 0 passed, 4 a phase failed, cleanup failed or an SLO was breached (or the snapshot is not
    authenticated), 2 usage (also: the scratch database exists or is the live one), 10 no such snapshot,
    12 credentials refused, 1 other errors.
    """
    if ctx.invoked_subcommand is not None:
        return None
    app = ctx.find_object(App)
    assert app is not None
    from drtool.ops.drill.options import DrillOptions
    from drtool.ops.drill.run import run_drill
    from drtool.ops.snapshot.auth import parse_expect_digest

    options = DrillOptions(snapshot=snapshot_ref, rto_slo=_duration("--rto-slo", rto_slo),
                           rpo_slo=_duration("--rpo-slo", rpo_slo), report_dir=report_dir, keep=keep,
                           scratch_db=scratch_db, identity=identity,
                           expect_digest=parse_expect_digest(expect_digest))
    settings = app.settings()
    outcome = run_drill(settings, options, emit=app.emit)
    record = outcome.record
    payload: dict[str, Any] = {"event": "result", **record, "reports": outcome.reports,
                               "history": outcome.history_key, "history_error": outcome.history_error}
    app.result(payload, lambda: _render(app, record, outcome.reports, outcome.history_key, outcome.history_error))
    app.add_metrics(_metrics(record))
    problems = "; ".join(record["problems"][:3]) or "see the report"
    return conclude(int(record["exit_code"]), f"drill {record['drill_id']} {record['outcome']}: {problems}")


def _render(app: App, record: dict[str, Any], reports: dict[str, str], history_key: str | None,
            history_error: str | None) -> None:
    rto, rpo = record["rto"], record["rpo"]
    app.echo(f"drill {record['drill_id']} of snapshot {record['snapshot']['id']}: {record['outcome'].upper()}")
    for p in record["phases"]:
        line = f"  {p['name']:<17} {p['status']:<8} {format_duration(p['seconds']):>9}"
        app.echo(line + (f"  {one_line(p['error'])}" if p.get("error") else ""))
    slo = "" if rto["slo_seconds"] is None else f"  ({rto['verdict']}, SLO {format_duration(rto['slo_seconds'])})"
    app.echo(f"  RTO {format_duration(rto['seconds'])}{slo}")
    lag = ("replication lag unknown" if rpo["replication_lag_seconds"] is None
           else f"incl. {format_duration(rpo['replication_lag_seconds'])} replication lag")
    slo = "" if rpo["slo_seconds"] is None else f"  ({rpo['verdict']}, SLO {format_duration(rpo['slo_seconds'])})"
    app.echo(f"  RPO {format_duration(rpo['seconds'])} ({lag}){slo}")
    for problem in record["problems"][:10]:
        app.echo(f"  problem: {one_line(problem)}")
    if record["kept"]:
        app.echo(f"  kept: database {record['scratch']['database']}, collections {record['scratch']['collections']}")
    for ext in ("html", "md", "json"):
        if ext in reports:
            app.echo(f"  report: {reports[ext]}")
    if history_key:
        app.echo(f"  history: {history_key}")
    if history_error:
        app.echo(f"  warning: {one_line(history_error)}")


def _metrics(record: dict[str, Any]) -> list[Metric]:
    rto, rpo = record["rto"], record["rpo"]
    nan = float("nan")
    return [
        Metric("drtool_drill_rto_seconds", "RTO measured by the last drill (NaN when a phase failed).",
               nan if rto["seconds"] is None else rto["seconds"]),
        Metric("drtool_drill_rpo_seconds", "RPO of the last drill (snapshot age plus replication lag when known).",
               rpo["seconds"]),
        *(Metric("drtool_drill_phase_duration_seconds", "Wall time of each phase of the last drill.", p["seconds"],
                 {"phase": p["name"], "status": p["status"]}) for p in record["phases"]),
        *(Metric("drtool_drill_slo_breached", "1 when the last drill breached this SLO.",
                 1 if part["verdict"] == "breached" else 0, {"slo": name})
          for name, part in (("rto", rto), ("rpo", rpo))),
    ]


@drill_group.command("history")
@global_options
@click.option("--limit", type=click.IntRange(1), default=20, show_default=True, help="Newest drills to show.")
@pass_app
def drill_history_cmd(app: App, limit: int) -> int:
    """Past drills, newest first: date, snapshot, outcome, RTO, RPO and the SLO verdicts.

    Read from <snapshot prefix>/drills/ in the snapshot bucket. Exit codes: 0 (also with no drill yet),
    10 snapshot bucket not found, 12 credentials refused, 1 other errors.
    """
    from drtool.ops.drill.history import drill_history

    records = drill_history(app.settings(), limit)
    payload = {"event": "result", "count": len(records),
               "drills": [{**row, "exit_code": r.get("exit_code"), "rto_seconds": r.get("rto", {}).get("seconds"),
                           "rpo_seconds": r.get("rpo", {}).get("seconds")}
                          for row, r in zip(dr.history_rows(records), records, strict=True)]}

    def render() -> None:
        if not records:
            app.echo("no drill recorded yet: run `drtool drill`")
            return
        app.echo(dr.render_history_table(records))

    app.result(payload, render)
    return 0
