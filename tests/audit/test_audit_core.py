"""The pure part of the audit: the exit code and score follow the worst finding, the renderings group by system
and escape what came from the servers, and the metrics name every catalog id (so an alert can clear)."""

from __future__ import annotations

from drtool.core import audit as ca


def _findings(*ids: str) -> ca.AuditResult:
    return ca.AuditResult(findings=[ca.Finding(i, f"seen {i}\x1b[31m", f"fix {i}", target="t|x") for i in ids],
                          checked=["s3: x"])


def test_exit_code_and_score_follow_the_worst_finding() -> None:
    assert (_findings().exit_code, _findings().score) == (0, 100)
    assert (_findings("postgres.no_pitr").exit_code, _findings("postgres.no_pitr").score) == (0, 100)
    assert (_findings("s3.object_lock_off").exit_code, _findings("s3.object_lock_off").score) == (3, 90)
    both = _findings("s3.object_lock_off", "s3.versioning_off")
    assert (both.exit_code, both.score) == (4, 65)
    assert ca.score([ca.Finding("s3.versioning_off", "", "")] * 5) == 0
    overridden = ca.Finding("s3.plain_http", "loopback", "", severity=ca.Severity.INFO)
    assert ca.AuditResult(findings=[overridden]).exit_code == 0


def test_table_groups_by_system_and_escapes_evidence() -> None:
    lines = ca.render_table(_findings("postgres.no_pitr", "s3.versioning_off", "drtool.no_snapshot"), fix_hints=True)
    headers = [ln for ln in lines if not ln.startswith(" ") and not ln.startswith("score")]
    assert headers == ["s3", "drtool", "postgres"]
    assert "\x1b" not in "\n".join(lines)
    assert any(ln.strip() == "fix:  fix s3.versioning_off" for ln in lines)
    assert lines[-1].startswith("score 50/100: 2 critical, 0 warning, 1 info")


def test_markdown_escapes_table_cells() -> None:
    text = ca.render_markdown(_findings("s3.anonymous_access"), when="2026-12-07T00:00:00+00:00")
    assert text.splitlines()[0] == "# drtool audit 2026-12-07T00:00:00+00:00: CRITICAL"
    assert "| critical | `s3.anonymous_access` | t\\|x |" in text and "\x1b" not in text


def test_metrics_cover_every_id() -> None:
    metrics = ca.metrics(_findings("s3.versioning_off", "s3.versioning_off"))
    per_id = {m.labels["id"]: m.value for m in metrics if m.name == "drtool_audit_finding"}
    assert set(per_id) == set(ca.CATALOG) and per_id["s3.versioning_off"] == 2 and per_id["s3.unreachable"] == 0
    counts = {m.labels["severity"]: m.value for m in metrics if m.name == "drtool_audit_findings"}
    assert counts == {"info": 0, "warning": 0, "critical": 2}
