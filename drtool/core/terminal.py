"""Make values that came from data safe to show on a terminal or in a plain-text log.

Object keys, ids, lock holders, chunk texts and servers' error strings are untrusted. Printed as they are, an ESC
sequence in an `upload_files.key` can clear the screen and paint a fake green "no break" over `drtool verify`'s real
result, an OSC-8 sequence can hide a link, and a bidi override (U+202E) can make a key read backwards. Every
human-readable output path runs its text through this module; JSON output does not need it (json.dumps with
ensure_ascii escapes all of these, and a consumer gets the exact original string back).

The escape format is Python's: `\\xNN` below U+0100, `\\uNNNN` up to U+FFFF, `\\UNNNNNNNN` above. What is escaped:

- C0 controls U+0000-U+001F (ESC, CR, BEL, backspace, ...), DEL U+007F and C1 controls U+0080-U+009F (an 8-bit
  CSI U+009B starts a sequence on some terminals just like ESC [);
- every format character (Unicode category Cf): the bidi embeddings, overrides and isolates U+202A-U+202E and
  U+2066-U+2069, the marks U+200E, U+200F and U+061C, zero-width characters, soft hyphen and the tag characters
  U+E0000-U+E007F, all invisible and able to make text read differently from what it is;
- the line and paragraph separators U+2028 and U+2029, and lone surrogates (which cannot even be encoded).

LF and TAB are escaped too in a value meant to be one line (`one_line`); `for_terminal` keeps them, for whole
rendered lines whose layout is the program's own. A backslash is left as it is: the output is for reading, and a
value that must be exact is in `--json`.
"""

from __future__ import annotations

import re

# Unicode category Cf (format), written out rather than built from unicodedata at import, which would cost a scan of
# all 1.1 million code points on every CLI start. tests/foundation/test_terminal.py checks it against unicodedata.
_FORMAT = (
    "\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064"
    "\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3"
    "\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f"
)
_CONTROLS = "\x00-\x08\x0b-\x1f\x7f-\x9f"  # C0 but TAB and LF, DEL, C1
_SEPARATORS = "\u2028\u2029"
_SURROGATES = "\ud800-\udfff"

_UNSAFE_TEXT = re.compile(f"[{_CONTROLS}{_FORMAT}{_SEPARATORS}{_SURROGATES}]")
_UNSAFE_LINE = re.compile(f"[\t\n{_CONTROLS}{_FORMAT}{_SEPARATORS}{_SURROGATES}]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def one_line(value: object) -> str:
    """`value` as one line of inert text: every control, format character and line break escaped."""
    text = value if isinstance(value, str) else str(value)
    if _UNSAFE_LINE.search(text) is None:
        return text
    return _UNSAFE_LINE.sub(_escape, text)


def for_terminal(text: str) -> str:
    """A rendered block of text with its own LF and TAB kept and everything else that a terminal acts on escaped."""
    if _UNSAFE_TEXT.search(text) is None:
        return text
    return _UNSAFE_TEXT.sub(_escape, text)


def is_safe(text: str) -> bool:
    """True when `text` holds nothing `for_terminal` would escape (for tests and assertions)."""
    return _UNSAFE_TEXT.search(text) is None
