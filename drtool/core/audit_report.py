"""`drtool audit --report FILE`: the findings as a page for a ticket, HTML or Markdown by the file's name.

Pure, like drtool/core/drill_report.py whose look it shares (drtool/core/html_page.py): evidence quotes what the
audit read from buckets, rows and servers (a bucket or dataset name, an error message, a policy), so every value
goes through `escape`; the page carries no script and loads nothing.
"""

from __future__ import annotations

from pathlib import Path

from drtool.core.audit import SYSTEMS, AuditResult, Severity, render_markdown
from drtool.core.html_page import escape as _e
from drtool.core.html_page import page

HTML_SUFFIXES = (".html", ".htm")

_VERDICTS = {4: ("CRITICAL", "failed"), 3: ("WARNING", "breached"), 0: ("OK", "passed")}  # text, badge class
_LEVEL_CLASS = {Severity.CRITICAL: "bad", Severity.WARNING: "warn", Severity.INFO: ""}


def is_html(path: Path) -> bool:
    """HTML for a name ending in .html or .htm (any case), Markdown otherwise: the name says what the reader
    opens it with, so no extra flag is needed."""
    return path.suffix.lower() in HTML_SUFFIXES


def render_report(result: AuditResult, *, when: str, path: Path) -> str:
    return render_html(result, when=when) if is_html(path) else render_markdown(result, when=when)


def render_html(result: AuditResult, *, when: str) -> str:
    """Verdict and score first, then one table row per finding (grouped by system, worst first), each finding's
    why and fix, and the checks that ran or were skipped: the same content as the Markdown report."""
    counts = result.counts()
    verdict, badge = _VERDICTS[result.exit_code]
    body = [f'<h1>drtool audit {_e(when)} <span class="badge {badge}">{_e(verdict)}</span></h1>',
            '<div class="kpi">', f"<div>score<b>{_e(result.score)}/100</b></div>",
            f'<div>critical<b class="{"bad" if counts["critical"] else "ok"}">{_e(counts["critical"])}</b></div>',
            f'<div>warning<b class="{"warn" if counts["warning"] else "ok"}">{_e(counts["warning"])}</b></div>',
            f"<div>info<b>{_e(counts['info'])}</b></div>",
            f"<div>exit code<b>{_e(result.exit_code)}</b></div>", "</div>", "<h2>Findings</h2>"]
    ordered = result.ordered()
    if not ordered:
        body.append("<p>None.</p>")
    else:
        body.append('<table class="findings"><tr><th>system</th><th>severity</th><th>id</th><th>target</th>'
                    "<th>seen</th><th>fix</th></tr>")
        for f in ordered:
            body.append(f'<tr class="finding"><td>{_e(f.check.system)}</td>'
                        f'<td class="{_LEVEL_CLASS[f.level]}">{_e(f.level.label)}</td><td><code>{_e(f.id)}</code></td>'
                        f"<td>{_e(f.target)}</td><td>{_e(f.evidence)}</td><td><code>{_e(f.fix)}</code></td></tr>")
        body.append("</table>")
        body.append("<h2>Why each finding matters</h2><ul>")
        seen: set[str] = set()
        for f in ordered:
            if f.id not in seen:
                seen.add(f.id)
                body.append(f"<li><code>{_e(f.id)}</code> ({_e(f.check.title)}): {_e(f.check.why)}</li>")
        body.append("</ul>")
    body.append("<h2>Checks run</h2><ul>" + "".join(f"<li>{_e(c)}</li>" for c in result.checked) + "</ul>")
    if result.skipped:
        body.append("<h2>Skipped</h2><ul>" + "".join(f"<li>{_e(s)}</li>" for s in result.skipped) + "</ul>")
    body.append(f"<p>Systems: {_e(', '.join(SYSTEMS))}; finding ids and fixes: docs/audit.md.</p>")
    return page(f"drtool audit {when}: {verdict}", body)
