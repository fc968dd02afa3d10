"""drtool.core.audit_report: `drtool audit --report FILE` as a page for a ticket.

Direct tests of the pure renderer: the file name picks the format, the verdict badge follows the exit code, every
value read from a bucket or row is escaped, and the content matches the Markdown report (sections, order).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from drtool.core.audit import AuditResult, Finding, render_markdown
from drtool.core.audit_report import is_html, render_html, render_report

HOSTILE = '<img src=x onerror="alert(1)">'


@pytest.mark.parametrize(("name", "html"), [
    ("audit.html", True), ("AUDIT.HTM", True), ("a.b.Html", True),
    ("audit.md", False), ("audit.html.md", False), ("audit", False), ("html", False),
])
def test_the_file_name_picks_html_or_markdown(name: str, html: bool) -> None:
    assert is_html(Path(name)) is html


def test_render_report_writes_markdown_for_any_other_name() -> None:
    result = AuditResult(findings=[Finding("s3.plain_http", "endpoint http://x", "use https")])
    assert render_report(result, when="t", path=Path("a.md")) == render_markdown(result, when="t")
    assert render_report(result, when="t", path=Path("a.html")) == render_html(result, when="t")


@pytest.mark.parametrize(("findings", "verdict", "badge"), [
    ([Finding("s3.versioning_off", "Suspended", "mc version enable x")], "CRITICAL", "failed"),
    ([Finding("s3.object_lock_off", "none", "new bucket")], "WARNING", "breached"),
    ([Finding("postgres.no_pitr", "no WAL archive", "set archive_mode")], "OK", "passed"),
    ([], "OK", "passed"),
])
def test_the_badge_follows_the_exit_code(findings: list[Finding], verdict: str, badge: str) -> None:
    page = render_html(AuditResult(findings=findings), when="2026-01-01")
    assert f'<span class="badge {badge}">{verdict}</span>' in page
    assert f"<title>drtool audit 2026-01-01: {verdict}</title>" in page


def test_every_value_from_the_audit_is_escaped() -> None:
    result = AuditResult(findings=[Finding("s3.versioning_off", HOSTILE, HOSTILE, target=HOSTILE)],
                         checked=[HOSTILE], skipped=[HOSTILE])
    page = render_html(result, when=HOSTILE)
    assert "<img" not in page and "onerror=\"" not in page
    # title, heading, target, evidence, fix, checked, skipped: every one inert
    assert page.count("&lt;img src=x onerror=&quot;alert(1)&quot;&gt;") == 7
    assert "<script" not in page


def test_findings_are_ordered_by_system_and_each_why_is_given_once() -> None:
    result = AuditResult(findings=[
        Finding("postgres.plugin_db_not_covered", "dify_plugin", "add it", target="pg"),
        Finding("s3.object_lock_off", "none", "new bucket", target="b2"),
        Finding("s3.object_lock_off", "none", "new bucket", target="b1"),
        Finding("s3.versioning_off", "Suspended", "enable", target="b3"),
    ], checked=["s3: versioning"])
    page = render_html(result, when="t")
    assert page.count('<tr class="finding">') == 4
    order = [page.index(f"<td>{t}</td>") for t in ("b3", "b1", "b2", "pg")]
    assert order == sorted(order)  # s3 critical, s3 warnings by target, then postgres
    assert page.count("<li><code>s3.object_lock_off</code>") == 1
    assert "<h2>Skipped</h2>" not in page and "<li>s3: versioning</li>" in page
