"""The look and the escaping of drtool's HTML reports (the drill report, the audit report), in one place.

Why shared: a report is opened in a browser by whoever handles the ticket, and every value in it (a bucket or
dataset name, an error message, evidence read from a bucket or a row) may be hostile. One escaping function that
every renderer calls, and one stylesheet, keep the pages alike and leave no renderer with its own idea of "safe".
Pages are self-contained: inline CSS, no script, no external font, image or stylesheet.
"""

from __future__ import annotations

import html
from typing import Any

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem auto;max-width:960px;color:#1d2430;
padding:0 1rem}h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #dde2ea}
table{border-collapse:collapse;width:100%;font-size:.92rem}td,th{border:1px solid #dde2ea;padding:.3rem .5rem;
text-align:left;vertical-align:top}th{background:#f3f5f8}.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:.1rem .6rem;border-radius:.8rem;color:#fff;font-weight:600}
.passed{background:#1f8a4c}.failed{background:#c0392b}.breached{background:#d98200}.ok{color:#1f8a4c}
.bad{color:#c0392b;font-weight:600}.warn{color:#b06a00;font-weight:600}code{background:#f3f5f8;padding:0 .2rem}
.kpi{display:flex;gap:1rem;flex-wrap:wrap}.kpi div{border:1px solid #dde2ea;border-radius:.4rem;padding:.6rem 1rem;
min-width:12rem}.kpi b{display:block;font-size:1.4rem}svg text{font-family:inherit;font-size:11px}
"""


def escape(value: Any) -> str:
    """Text and attribute values alike (quotes too): the only way a value from data enters a page."""
    return html.escape(str(value), quote=True)


def page(title: str, body: list[str]) -> str:
    """A whole document around `body` (already escaped HTML); `title` is plain text and is escaped here."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(title)}</title>"
            f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
