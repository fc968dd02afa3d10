"""The restore drill's reports: the JSON, Markdown and self-contained HTML renderings of a drill record, and the
history table.

Pure on purpose: the record (drtool/core/drill_record.py) is a plain dict kept as the drill's history object, so a
report can be rendered again from history and these functions are tested without any server.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from drtool.core.drill_record import PHASES, annotation_rows, format_duration
from drtool.core.html_page import escape, page
from drtool.core.terminal import one_line


def render_json(record: Mapping[str, Any]) -> str:
    return json.dumps(record, indent=2, sort_keys=False, default=str) + "\n"


def _rpo_text(rpo: Mapping[str, Any]) -> str:
    text = format_duration(rpo.get("seconds"))
    if rpo.get("replication_lag_seconds") is None:
        return f"{text} + unknown replication lag"
    return f"{text} (incl. {format_duration(rpo['replication_lag_seconds'])} replication lag)"


def _slo_text(part: Mapping[str, Any]) -> str:
    slo = part.get("slo_seconds")
    return "no SLO" if slo is None else f"{part.get('verdict')} (SLO {format_duration(slo)})"


def history_rows(records: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Table rows, in the given order: date, drill, snapshot, outcome, RTO, RPO, SLO verdicts."""
    rows = []
    for r in records:
        rto, rpo = r.get("rto", {}), r.get("rpo", {})
        rows.append({
            "date": str(r.get("started_at", ""))[:19].replace("T", " "),
            "drill": str(r.get("drill_id", "")),
            "snapshot": str(r.get("snapshot", {}).get("id", "")),
            "outcome": str(r.get("outcome", "")),
            "rto": format_duration(rto.get("seconds")),
            "rpo": format_duration(rpo.get("seconds")) + ("" if rpo.get("replication_lag_seconds") is not None
                                                          else "+?"),
            "rto_slo": "-" if rto.get("slo_seconds") is None else str(rto.get("verdict")),
            "rpo_slo": "-" if rpo.get("slo_seconds") is None else str(rpo.get("verdict")),
        })
    return rows


def render_history_table(records: Sequence[Mapping[str, Any]]) -> str:
    """A plain-text table for the terminal (the records in the order given, newest first by convention)."""
    rows = history_rows(records)
    cols = [("date", "date (UTC)"), ("snapshot", "snapshot"), ("outcome", "outcome"), ("rto", "RTO"),
            ("rpo", "RPO"), ("rto_slo", "RTO SLO"), ("rpo_slo", "RPO SLO")]
    widths = {k: max([len(t)] + [len(r[k]) for r in rows]) for k, t in cols}
    lines = ["  ".join(t.ljust(widths[k]) for k, t in cols).rstrip()]
    lines += ["  ".join(r[k].ljust(widths[k]) for k, _ in cols).rstrip() for r in rows]
    return "\n".join(lines)


def _or_dash(value: Any) -> str:
    return "-" if value is None else str(value)


def _md_cell(value: Any) -> str:
    """A table cell or list item: one line, and no control character for whoever `cat`s the report."""
    return one_line(str(value).replace("\n", " ")).replace("|", "\\|")


def render_markdown(record: Mapping[str, Any], history: Sequence[Mapping[str, Any]] = ()) -> str:
    """The report a person reads in a ticket or a chat: verdicts first, then phases, problems, cleanup, trend."""
    rto, rpo, snap = record.get("rto", {}), record.get("rpo", {}), record.get("snapshot", {})
    out = [f"# Restore drill {record.get('drill_id')}: {str(record.get('outcome', '')).upper()}", ""]
    out += ["| | |", "|---|---|",
            f"| started | {record.get('started_at')} |",
            f"| snapshot | `{_md_cell(snap.get('id'))}` (fence {snap.get('fence')}) |",
            f"| RTO | {format_duration(rto.get('seconds'))}: {_slo_text(rto)} |",
            f"| RPO | {_md_cell(_rpo_text(rpo))}: {_slo_text(rpo)} |",
            f"| replication lag source | {_md_cell(rpo.get('lag_source'))} |",
            f"| exit code | {record.get('exit_code')} |", ""]
    out += ["## Phases", "", "| phase | status | time | what |", "|---|---|---:|---|"]
    about = dict(PHASES)
    for p in record.get("phases", []):
        out.append(f"| {p.get('name')} | {p.get('status')} | {format_duration(p.get('seconds'))} | "
                   f"{_md_cell(p.get('error') or about.get(str(p.get('name')), ''))} |")
    out.append("")
    apps = annotation_rows(record.get("phases", []))
    if apps:
        out += ["## Annotation replies", "", "| app | scratch collection | annotations | rebuild | Dify's query | "
                "vectors | verify |", "|---|---|---:|---|---:|---:|---|"]
        for a in apps:
            out.append(f"| `{_md_cell(a['app_id'])}` | `{_md_cell(a['collection'] or '-')}` | "
                       f"{_md_cell(_or_dash(a['annotations']))} | {_md_cell(a['rebuild'] or 'not run')} | "
                       f"{_md_cell(_or_dash(a['dify_query']))} | {_md_cell(_or_dash(a['vectors']))} | "
                       f"{_md_cell(a['verify'] or 'not run')} |")
        out += [f"- app `{_md_cell(a['app_id'])}`: {_md_cell(a['error'])}" for a in apps if a["error"]]
        out.append("")
    problems = record.get("problems") or []
    if problems:
        out += ["## Problems", ""] + [f"- {_md_cell(p)}" for p in problems[:50]] + [""]
    scratch = record.get("scratch", {})
    out += ["## Scratch targets", ""]
    out += [f"- {k}: `{_md_cell(v)}`" for k, v in scratch.items()]
    kept = "kept (--keep)" if record.get("kept") else "removed"
    cleanup = record.get("cleanup", {})
    out += [f"- after the drill: {kept}" + (f"; {_md_cell(json.dumps(cleanup, default=str))}" if cleanup else ""),
            ""]
    if history:
        out += ["## Earlier drills", "", "| date (UTC) | snapshot | outcome | RTO | RPO | RTO SLO | RPO SLO |",
                "|---|---|---|---:|---:|---|---|"]
        for row in history_rows(history):
            out.append(f"| {row['date']} | `{row['snapshot']}` | {row['outcome']} | {row['rto']} | {row['rpo']} | "
                       f"{row['rto_slo']} | {row['rpo_slo']} |")
        out.append("")
    return "\n".join(out)



_COLORS = {"ok": "#2e86de", "failed": "#c0392b", "skipped": "#b8c2cc", "pending": "#b8c2cc"}
_OUTCOME_COLORS = {"passed": "#1f8a4c", "failed": "#c0392b", "slo breached": "#d98200"}


_e = escape  # every value from a record enters the page through drtool.core.html_page.escape


def timeline_svg(phases: Sequence[Mapping[str, Any]], rto_slo: float | None, width: int = 900) -> str:
    """Phases as consecutive bars on one time axis (they run one after another), the RTO SLO as a dashed line."""
    label_w, row_h, top = 150, 26, 10
    total = sum(float(p.get("seconds") or 0.0) for p in phases)
    span = max(total, rto_slo or 0.0, 1e-3) * 1.05
    plot_w = width - label_w - 20
    height = top + row_h * max(1, len(phases)) + 30

    def x(t: float) -> float:
        return label_w + plot_w * t / span

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="phase timeline">']
    start = 0.0
    for i, p in enumerate(phases):
        secs = float(p.get("seconds") or 0.0)
        y = top + i * row_h
        color = _COLORS.get(str(p.get("status")), "#b8c2cc")
        w = max(plot_w * secs / span, 2.0)
        parts.append(f'<text x="4" y="{y + 17}">{_e(p.get("name"))}</text>')
        parts.append(f'<rect x="{x(start):.1f}" y="{y + 4}" width="{w:.1f}" height="{row_h - 8}" rx="3" '
                     f'fill="{color}"><title>{_e(p.get("name"))}: {_e(p.get("status"))}, '
                     f'{_e(format_duration(secs))}</title></rect>')
        parts.append(f'<text x="{x(start) + w + 4:.1f}" y="{y + 17}">{_e(format_duration(secs))}'
                     f'{"" if p.get("status") == "ok" else " " + _e(p.get("status"))}</text>')
        start += secs
    axis_y = top + row_h * max(1, len(phases)) + 6
    parts.append(f'<line x1="{label_w}" y1="{axis_y}" x2="{label_w + plot_w}" y2="{axis_y}" stroke="#8a94a3"/>')
    for k in range(6):
        t = span * k / 5
        parts.append(f'<text x="{x(t):.1f}" y="{axis_y + 16}" text-anchor="middle">{_e(format_duration(t))}</text>')
    if rto_slo is not None:
        parts.append(f'<line x1="{x(rto_slo):.1f}" y1="{top}" x2="{x(rto_slo):.1f}" y2="{axis_y}" '
                     f'stroke="#d98200" stroke-width="2" stroke-dasharray="5,4"/>'
                     f'<text x="{x(rto_slo) + 4:.1f}" y="{top + 10}" fill="#d98200">RTO SLO</text>')
    parts.append("</svg>")
    return "".join(parts)


def trend_svg(records: Sequence[Mapping[str, Any]], width: int = 900, height: int = 220) -> str:
    """RTO of each drill, oldest to newest, as bars coloured by outcome, with the RTO SLO of each drill as a mark;
    a failed drill (no RTO) is a short red stub."""
    left, bottom, top = 60, 40, 12
    plot_w, plot_h = width - left - 12, height - bottom - top
    values = [r.get("rto", {}).get("seconds") for r in records]
    slos = [r.get("rto", {}).get("slo_seconds") for r in records]
    peak = max([float(v) for v in values if v is not None] + [float(s) for s in slos if s is not None] + [1e-3])
    peak *= 1.1
    n = max(1, len(records))
    slot = plot_w / n
    bar = max(3.0, min(40.0, slot * 0.6))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="RTO trend">']
    base = top + plot_h
    parts.append(f'<line x1="{left}" y1="{base}" x2="{left + plot_w}" y2="{base}" stroke="#8a94a3"/>')
    for k in range(5):
        v = peak * k / 4
        y = base - plot_h * k / 4
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_e(format_duration(v))}</text>'
                     f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#eef1f5"/>')
    for i, r in enumerate(records):
        cx = left + slot * i + slot / 2
        v = values[i]
        color = _OUTCOME_COLORS.get(str(r.get("outcome")), "#8a94a3")
        h = 4.0 if v is None else max(1.0, plot_h * float(v) / peak)
        tip = (f"{r.get('started_at', '')[:19]} {r.get('outcome')}: RTO {format_duration(v)}, "
               f"RPO {format_duration(r.get('rpo', {}).get('seconds'))}")
        parts.append(f'<rect x="{cx - bar / 2:.1f}" y="{base - h:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                     f'fill="{color}"><title>{_e(tip)}</title></rect>')
        if slos[i] is not None:
            y = base - plot_h * float(slos[i]) / peak
            parts.append(f'<line x1="{cx - bar / 2 - 3:.1f}" y1="{y:.1f}" x2="{cx + bar / 2 + 3:.1f}" y2="{y:.1f}" '
                         f'stroke="#d98200" stroke-width="2"/>')
        if n <= 12 or i in (0, n - 1):
            parts.append(f'<text x="{cx:.1f}" y="{base + 16}" text-anchor="middle">'
                         f'{_e(str(r.get("started_at", ""))[5:10])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def render_html(record: Mapping[str, Any], history: Sequence[Mapping[str, Any]] = ()) -> str:
    """One self-contained page: inline CSS and SVG, no script, no external font, image or stylesheet."""
    rto, rpo, snap = record.get("rto", {}), record.get("rpo", {}), record.get("snapshot", {})
    outcome = str(record.get("outcome", ""))
    badge = {"passed": "passed", "failed": "failed"}.get(outcome, "breached")

    def cls(v: str) -> str:
        return {"met": "ok", "breached": "bad", "unknown": "warn"}.get(v, "")

    body = [f"<h1>Restore drill <code>{_e(record.get('drill_id'))}</code> "
            f'<span class="badge {badge}">{_e(outcome.upper())}</span></h1>',
            f"<p>Started {_e(record.get('started_at'))}, finished {_e(record.get('finished_at'))}; "
            f"snapshot <code>{_e(snap.get('id'))}</code> (fence {_e(snap.get('fence'))}).</p>",
            '<div class="kpi">',
            f"<div>RTO<b>{_e(format_duration(rto.get('seconds')))}</b>"
            f'<span class="{cls(str(rto.get("verdict")))}">{_e(_slo_text(rto))}</span></div>',
            f"<div>RPO<b>{_e(format_duration(rpo.get('seconds')))}</b>"
            f'<span class="{cls(str(rpo.get("verdict")))}">{_e(_slo_text(rpo))}</span><br>'
            f"replication lag: {_e(format_duration(rpo.get('replication_lag_seconds')))} "
            f"({_e(rpo.get('lag_source'))})</div>",
            f"<div>exit code<b>{_e(record.get('exit_code'))}</b></div>", "</div>",
            "<h2>Phases</h2>", timeline_svg(record.get("phases", []), rto.get("slo_seconds")),
            "<table><tr><th>phase</th><th>status</th><th class=num>time</th><th>details</th></tr>"]
    about = dict(PHASES)
    for p in record.get("phases", []):
        status = str(p.get("status"))
        detail = p.get("error") or about.get(str(p.get("name")), "")
        body.append(f"<tr><td>{_e(p.get('name'))}</td><td class=\"{'ok' if status == 'ok' else 'bad'}\">"
                    f"{_e(status)}</td><td class=num>{_e(format_duration(p.get('seconds')))}</td>"
                    f"<td>{_e(detail)}</td></tr>")
    body.append("</table>")
    apps = annotation_rows(record.get("phases", []))
    if apps:
        body.append("<h2>Annotation replies</h2><p>Each app with annotation reply enabled in the restored database: "
                    "its scratch collection, the rebuild's status, how many sampled questions Dify's annotation "
                    "query answered with their own annotation, and verify's verdict.</p>"
                    "<table><tr><th>app</th><th>scratch collection</th><th class=num>annotations</th>"
                    "<th>rebuild</th><th class=num>Dify's query</th><th class=num>vectors</th><th>verify</th>"
                    "<th>note</th></tr>")
        for a in apps:
            body.append(f"<tr><td><code>{_e(a['app_id'])}</code></td><td><code>{_e(a['collection'] or '-')}</code>"
                        f"</td><td class=num>{_e(_or_dash(a['annotations']))}</td>"
                        f"<td class=\"{'ok' if a['rebuild'] == 'rebuilt' else 'bad'}\">"
                        f"{_e(a['rebuild'] or 'not run')}</td>"
                        f"<td class=num>{_e(_or_dash(a['dify_query']))}</td>"
                        f"<td class=num>{_e(_or_dash(a['vectors']))}</td>"
                        f"<td class=\"{'ok' if a['verify'] == 'ok' else 'bad'}\">{_e(a['verify'] or 'not run')}</td>"
                        f"<td>{_e(a['error'] or '')}</td></tr>")
        body.append("</table>")
    problems = record.get("problems") or []
    if problems:
        body.append("<h2>Problems</h2><ul>" + "".join(f"<li>{_e(p)}</li>" for p in problems[:50]) + "</ul>")
    body.append("<h2>Scratch targets</h2><ul>")
    body += [f"<li>{_e(k)}: <code>{_e(v)}</code></li>" for k, v in record.get("scratch", {}).items()]
    body.append(f"<li>after the drill: {'kept (--keep)' if record.get('kept') else 'removed'}</li></ul>")
    trend = [*history[::-1], record] if history else [record]  # history is newest first; the chart reads left->right
    body += ["<h2>Trend</h2>", "<p>RTO of each drill, oldest left; bar colour is the outcome (green passed, "
             "amber SLO breached, red failed); the amber tick is that drill's RTO SLO.</p>", trend_svg(trend)]
    if history:
        body.append("<table><tr><th>date (UTC)</th><th>snapshot</th><th>outcome</th><th class=num>RTO</th>"
                    "<th class=num>RPO</th><th>RTO SLO</th><th>RPO SLO</th></tr>")
        for row in history_rows(history):
            body.append(f"<tr><td>{_e(row['date'])}</td><td><code>{_e(row['snapshot'])}</code></td>"
                        f"<td>{_e(row['outcome'])}</td><td class=num>{_e(row['rto'])}</td>"
                        f"<td class=num>{_e(row['rpo'])}</td><td>{_e(row['rto_slo'])}</td>"
                        f"<td>{_e(row['rpo_slo'])}</td></tr>")
        body.append("</table>")
    return page(f"drtool drill {record.get('drill_id')}: {outcome}", body)
