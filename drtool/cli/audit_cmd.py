"""`drtool audit`: read the live systems and report the configuration that would make a recovery fail."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from drtool.cli.app import App, Outcome, conclude, global_options, metrics_option, pass_app
from drtool.core import audit as ca
from drtool.errors import UsageError

RPO_ENV = "DRTOOL_AUDIT_RPO_HOURS"
DRILL_ENV = "DRTOOL_AUDIT_DRILL_MAX_AGE_DAYS"


@click.command("audit")
@global_options
@click.option("--rpo-hours", type=click.FloatRange(min=0, min_open=True), default=26.0, show_default=True,
              envvar=RPO_ENV, help=f"The newest committed snapshot must be younger than this (env {RPO_ENV}).")
@click.option("--drill-max-age-days", type=click.FloatRange(min=0, min_open=True), default=14.0, show_default=True,
              envvar=DRILL_ENV, help=f"A drill must have passed within this many days (env {DRILL_ENV}).")
@click.option("--no-probe", is_flag=True, help="Skip the write/delete probe of <snapshot.prefix>/audit/probe.")
@click.option("--fix-hints", is_flag=True, help="Print the command or setting that fixes each finding.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the findings as a Markdown report to this file.")
@metrics_option
@pass_app
def audit_cmd(app: App, rpo_hours: float, drill_max_age_days: float, no_probe: bool, fix_hints: bool,
              report_path: Path | None) -> int | Outcome:
    """Audit object storage, MinIO, snapshots and drills, Postgres and the vector store for recovery risks.

    Changes nothing except one probe key it writes and deletes. Each finding has a stable id (docs/audit.md),
    a severity, what was seen, why it matters and the fix. Exit codes: 0 no warning or critical finding,
    3 warnings, 4 a critical finding.
    """
    from drtool.ops.audit import AuditOptions, run_audit

    if report_path is not None and not report_path.parent.is_dir():
        raise UsageError(f"--report {report_path}: the directory {str(report_path.parent)!r} does not exist")
    settings = app.settings()
    settings.require_s3()  # nothing to audit without Dify's bucket: exit 2 naming the setting, not a guess
    result = run_audit(settings, AuditOptions(rpo_hours=rpo_hours, drill_max_age_days=drill_max_age_days,
                                              probe=not no_probe))
    for finding in result.ordered():
        app.emit(ca.finding_event(finding))
    when = datetime.now(UTC).isoformat(timespec="seconds")
    if report_path is not None:
        report_path.write_text(ca.render_markdown(result, when=when), encoding="utf-8")
    app.add_metrics(ca.metrics(result))
    payload = {"event": "result", **result.to_dict(), "report": str(report_path) if report_path else None}

    def render() -> None:
        for line in ca.render_table(result, fix_hints=fix_hints):
            app.echo(line)
        if report_path is not None:
            app.echo(f"report: {report_path}")

    app.result(payload, render)
    worst = [f"{f.id}" + (f" [{f.target}]" if f.target else "") for f in result.ordered()
             if f.level >= ca.Severity.WARNING]
    more = f" (+{len(worst) - 3} more)" if len(worst) > 3 else ""
    return conclude(result.exit_code, f"score {result.score}/100: " + "; ".join(worst[:3]) + more)
