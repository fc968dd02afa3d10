"""`drtool audit`: read the live systems and report the configuration that would make a recovery fail."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from drtool.cli.app import App, Outcome, conclude, global_options, metrics_option, pass_app
from drtool.core import audit as ca
from drtool.core.audit_report import render_report
from drtool.errors import UsageError

RPO_ENV = "DRTOOL_AUDIT_RPO_HOURS"  # = SPECS["audit.rpo_hours"].env_var: read by load_settings, not by click
DRILL_ENV = "DRTOOL_AUDIT_DRILL_MAX_AGE_DAYS"
FREE_ENV = "DRTOOL_AUDIT_MIN_FREE_PERCENT"
_POSITIVE = click.FloatRange(min=0, min_open=True)


@click.command("audit")
@global_options
@click.option("--rpo-hours", type=_POSITIVE, default=None,
              help=f"The newest committed snapshot must be younger than this [setting audit.rpo_hours, env {RPO_ENV}; "
                   "default 26].")
@click.option("--drill-max-age-days", type=_POSITIVE, default=None,
              help=f"A drill must have passed within this many days [setting audit.drill_max_age_days, env "
                   f"{DRILL_ENV}; default 14].")
@click.option("--min-free-percent", type=click.FloatRange(min=0, max=100), default=None,
              help=f"A MinIO drive with less free space is a warning [setting audit.min_free_percent, env {FREE_ENV}; "
                   "default 10].")
@click.option("--no-probe", is_flag=True, help="Skip the write/delete probe of <snapshot.prefix>/audit/probe and the "
                                              "multipart-upload probe of <snapshot.prefix>/audit/multipart-probe.")
@click.option("--fix-hints", is_flag=True, help="Print the command or setting that fixes each finding.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the findings as a report to this file: HTML (one self-contained page, like the drill "
                   "report) when the name ends in .html or .htm, else Markdown.")
@metrics_option
@pass_app
def audit_cmd(app: App, rpo_hours: float | None, drill_max_age_days: float | None, min_free_percent: float | None,
              no_probe: bool, fix_hints: bool, report_path: Path | None) -> int | Outcome:
    """Audit object storage, MinIO, snapshots and drills, Postgres and the vector store for recovery risks.

    Changes nothing except two probe keys it writes (one as a multipart upload) and deletes. Each finding has a
    stable id (docs/audit.md), a severity, what was seen, why it matters and the fix. Exit codes: 0 no warning or
    critical finding, 3 warnings, 4 a critical finding.
    """
    from drtool.ops.audit.context import AuditOptions
    from drtool.ops.audit.runner import run_audit

    if report_path is not None and not report_path.parent.is_dir():
        raise UsageError(f"--report {report_path}: the directory {str(report_path.parent)!r} does not exist")
    settings = app.settings({"audit.rpo_hours": rpo_hours, "audit.drill_max_age_days": drill_max_age_days,
                             "audit.min_free_percent": min_free_percent})
    settings.require_s3()  # nothing to audit without Dify's bucket: exit 2 naming the setting, not a guess
    for key in ("audit.rpo_hours", "audit.drill_max_age_days"):
        if not settings.get(key) > 0:  # a zero target makes every snapshot and drill "too old": a typo, not policy
            raise UsageError(f"{key} must be > 0 (from {settings.sources.get(key)})")
    a = settings.audit
    result = run_audit(settings, AuditOptions(rpo_hours=a.rpo_hours, drill_max_age_days=a.drill_max_age_days,
                                              probe=not no_probe, min_free_percent=a.min_free_percent))
    for finding in result.ordered():
        app.emit(ca.finding_event(finding))
    when = datetime.now(UTC).isoformat(timespec="seconds")
    if report_path is not None:
        report_path.write_text(render_report(result, when=when, path=report_path), encoding="utf-8")
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
