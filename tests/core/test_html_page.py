"""drtool.core.html_page: the one escaping function and the page shell every HTML report goes through.

Why direct: report values (bucket names, error messages, evidence read from a bucket) may be hostile, and the
drill and audit reports both trust `escape` and `page` to keep them inert.
"""

from __future__ import annotations

import re

from drtool.core.html_page import CSS, escape, page


def test_escape_neutralises_markup_and_both_quote_kinds() -> None:
    hostile = """<script>alert(1)</script>" onload='x' &amp;"""
    out = escape(hostile)
    assert "<" not in out and ">" not in out and '"' not in out and "'" not in out
    assert out == ("&lt;script&gt;alert(1)&lt;/script&gt;&quot; onload=&#x27;x&#x27; &amp;amp;")


def test_escape_takes_any_value_as_its_text() -> None:
    assert escape(None) == "None"
    assert escape(42) == "42"
    assert escape(["<a>"]) == "[&#x27;&lt;a&gt;&#x27;]"


def test_page_escapes_the_title_and_keeps_the_body_as_given() -> None:
    body = ["<h1>ok</h1>", "<p>second</p>"]
    doc = page('drill </title><script>x</script> "q"', body)
    assert doc.startswith("<!DOCTYPE html>\n")
    title = re.search(r"<title>(.*?)</title>", doc, re.S)
    assert title is not None
    assert title.group(1) == "drill &lt;/title&gt;&lt;script&gt;x&lt;/script&gt; &quot;q&quot;"
    assert "<body>\n<h1>ok</h1>\n<p>second</p>\n</body>" in doc
    assert f"<style>{CSS}</style>" in doc


def test_page_is_self_contained() -> None:
    doc = page("t", ["<p>x</p>"])
    assert "<script" not in doc
    assert not re.search(r"""(src|href)\s*=|@import|url\(""", doc)
