"""The output sanitizer: every character a terminal acts on is escaped in human output, and JSON keeps values exact.

Pure logic plus drtool's own log formatters and App output, in this process (the real CLI against real servers is
in tests/security/test_terminal_output.py).
"""

from __future__ import annotations

import json
import logging
import sys
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drtool.cli.app import App
from drtool.core.terminal import for_terminal, is_safe, one_line
from drtool.log import _HumanFormatter, _JsonFormatter

# A key a Dify user can upload: clear screen, green "no break", OSC-8 hyperlink, right-to-left override, CR.
HOSTILE = ("upload_files/t/\x1b[2J\x1b[H\x1b[32mverify: no break\x1b[0m"
           "\x1b]8;;http://evil.example/\x1b\\click\x1b]8;;\x1b\\\u202egpj.exe\r\nerror: fake")

DANGEROUS_CATEGORIES = ("Cc", "Cf", "Cs", "Zl", "Zp")


@pytest.mark.parametrize("char, escaped", [
    ("\x00", "\\x00"), ("\x07", "\\x07"), ("\x08", "\\x08"), ("\t", "\\x09"), ("\n", "\\x0a"), ("\x0b", "\\x0b"),
    ("\x0c", "\\x0c"), ("\r", "\\x0d"), ("\x1b", "\\x1b"), ("\x7f", "\\x7f"),  # C0 (BEL, BS, CR, ESC...) and DEL
    ("\x80", "\\x80"), ("\x9b", "\\x9b"), ("\x9d", "\\x9d"), ("\x9f", "\\x9f"),  # C1: 8-bit CSI, OSC
    ("\u202a", "\\u202a"), ("\u202b", "\\u202b"), ("\u202c", "\\u202c"), ("\u202d", "\\u202d"),
    ("\u202e", "\\u202e"),  # bidi embeddings and overrides
    ("\u2066", "\\u2066"), ("\u2067", "\\u2067"), ("\u2068", "\\u2068"), ("\u2069", "\\u2069"),  # bidi isolates
    ("\u200e", "\\u200e"), ("\u200f", "\\u200f"), ("\u061c", "\\u061c"),  # LRM, RLM, Arabic letter mark
    ("\u200b", "\\u200b"), ("\ufeff", "\\ufeff"), ("\u00ad", "\\xad"),  # invisible: zero width, BOM, soft hyphen
    ("\u2028", "\\u2028"), ("\u2029", "\\u2029"),  # line and paragraph separators
    ("\U000e0041", "\\U000e0041"),  # tag characters (hidden ASCII)
    ("\udc80", "\\udc80"),  # a lone surrogate (from surrogateescape): could not even be encoded
])
def test_one_line_escapes_every_class_of_dangerous_character(char: str, escaped: str) -> None:
    assert one_line(f"a{char}b") == f"a{escaped}b"
    assert is_safe(one_line(f"a{char}b"))


def test_for_terminal_keeps_the_renderers_own_line_breaks_and_tabs_only() -> None:
    assert for_terminal("a\tb\nc") == "a\tb\nc"
    assert for_terminal("a\r\nb\x1b[2Jc\u202e") == "a\\x0d\nb\\x1b[2Jc\\u202e"


def test_a_hostile_key_becomes_inert_readable_text() -> None:
    shown = one_line(HOSTILE)
    assert shown == ("upload_files/t/\\x1b[2J\\x1b[H\\x1b[32mverify: no break\\x1b[0m"
                     "\\x1b]8;;http://evil.example/\\x1b\\click\\x1b]8;;\\x1b\\\\u202egpj.exe\\x0d\\x0aerror: fake")
    assert shown.isascii() and shown.isprintable()


@pytest.mark.parametrize("text", [
    "upload_files/3f2a/9b1c.pdf", "Ünïcödé файл 文件 ملف 🙂", "C:\\dir\\x1b (literal)", "",
])
def test_ordinary_text_is_unchanged(text: str) -> None:
    assert one_line(text) == text
    assert for_terminal(text) == text


def test_every_control_and_format_character_of_this_pythons_unicode_is_escaped() -> None:
    """The hand-written class in drtool.core.terminal covers all of Cc, Cf, Cs, Zl and Zp (unicodedata here)."""
    missed = [f"U+{c:04X}" for c in range(sys.maxunicode + 1)
              if unicodedata.category(chr(c)) in DANGEROUS_CATEGORIES and one_line(chr(c)) == chr(c)]
    assert missed == []


@settings(max_examples=500, deadline=None)
@given(st.text())
def test_any_text_comes_out_printable(text: str) -> None:
    line = one_line(text)
    assert "\n" not in line and "\t" not in line
    assert all(unicodedata.category(ch) not in DANGEROUS_CATEGORIES for ch in line)
    block = for_terminal(text)
    assert all(ch in "\n\t" or unicodedata.category(ch) not in DANGEROUS_CATEGORIES for ch in block)


def _log_record(message: str, *args: object, exc_info: object = None) -> logging.LogRecord:
    return logging.LogRecord("drtool.test", logging.ERROR, __file__, 1, message, args, exc_info)  # type: ignore[arg-type]


def test_human_log_lines_escape_data_and_never_start_a_fake_record() -> None:
    text = _HumanFormatter().format(_log_record("another run holds the lock: %s", HOSTILE))
    assert is_safe(text)
    assert "\\x1b[32mverify: no break" in text and "\\u202e" in text
    lines = text.split("\n")
    assert lines[0].startswith("error: another run holds the lock: ")
    assert all(line.startswith("  ") for line in lines[1:])  # a line break from data is indented under its record


def test_human_log_tracebacks_are_escaped_too() -> None:
    try:
        raise RuntimeError(HOSTILE)
    except RuntimeError:
        text = _HumanFormatter().format(_log_record("failed", exc_info=sys.exc_info()))
    assert is_safe(text) and "\\x1b[2J" in text


def test_json_log_lines_are_ascii_and_give_the_exact_value_back() -> None:
    record = _log_record("%s", HOSTILE)
    record.fields = {"key": HOSTILE}
    line = _JsonFormatter().format(record)
    assert line.isascii() and "\n" not in line and "\x1b" not in line
    payload = json.loads(line)
    assert payload["message"] == HOSTILE and payload["key"] == HOSTILE


def test_app_echo_escapes_a_rendered_line_but_keeps_its_layout(capsys: pytest.CaptureFixture[str]) -> None:
    App().echo(f"\n  missing_object (1):\n    key={HOSTILE}")
    out = capsys.readouterr().out
    assert is_safe(out)
    assert out.startswith("\n  missing_object (1):\n    key=upload_files/t/\\x1b[2J")


def test_app_emit_json_is_ascii_and_exact(capsys: pytest.CaptureFixture[str]) -> None:
    App(json_mode=True).emit({"event": "verify.files", "key": HOSTILE, "name": "naïve 文件"})
    out = capsys.readouterr().out
    assert out.isascii() and out.count("\n") == 1 and "\x1b" not in out and "\u202e" not in out
    event = json.loads(out)
    assert {k: event[k] for k in ("event", "key", "name")} == {"event": "verify.files", "key": HOSTILE,
                                                              "name": "naïve 文件"}


def test_rebuild_progress_label_is_neither_markup_nor_raw_controls() -> None:
    """rich parses "[red]" as markup: a dataset id from a bucket listing reaches the bar as plain, escaped text."""
    from drtool.cli.rebuild_cmd import _RichProgress

    progress = _RichProgress()
    progress.plan(1)
    progress.start("[red]\x1b[2J\u202e", None)
    try:
        task = progress._progress.tasks[0]
        rendered = progress._progress.columns[0].render(task)  # type: ignore[union-attr]
    finally:
        progress.stop()
    assert rendered.plain == "[1/1] [red]\\x1b[2J\\u202e"
    assert is_safe(rendered.plain)
