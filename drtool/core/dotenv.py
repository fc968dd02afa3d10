"""A reader for docker-compose style `.env` files such as Dify's `docker/.env`.

Written here rather than depending on python-dotenv because drtool needs line numbers in its errors and must never
expand `${VAR}` from the operator's own environment into a configuration it then prints.
"""

from __future__ import annotations

import re

from drtool.errors import ConfigError

_LINE = re.compile(r"^(?:export\s+)?(?P<key>[A-Za-z_][A-Za-z0-9_.]*)\s*=\s*(?P<value>.*)$")


def decode_dotenv(data: bytes, source: str) -> str:
    """The file's text; bytes that are not UTF-8 are refused with the line they are on, not a codec traceback."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        lineno = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{source}:{lineno}: not valid UTF-8 (byte 0x{data[exc.start]:02x})",
                          hint="save the .env file as UTF-8") from None


def parse_dotenv(text: str, source: str) -> dict[str, str]:
    values: dict[str, str] = {}
    # Split on newlines only: str.splitlines() also breaks at form feeds and other separators, and the line
    # numbers in errors would then differ from the ones the operator's editor shows.
    for lineno, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "\x00" in line:
            raise ConfigError(f"{source}:{lineno}: contains a NUL byte", hint="the file is damaged; fix that line")
        match = _LINE.match(line)
        if not match:
            raise ConfigError(
                f"{source}:{lineno}: not a KEY=VALUE line",
                hint="fix or comment out that line of the .env file",
            )
        values[match["key"]] = _unquote(match["value"], source, lineno)
    return values


def _unquote(value: str, source: str, lineno: int) -> str:
    if value[:1] in ("'", '"'):
        quote = value[0]
        end = value.find(quote, 1)
        if end == -1:
            raise ConfigError(f"{source}:{lineno}: unterminated {quote} quote", hint="close the quote")
        inner = value[1:end]
        return inner.replace('\\"', '"').replace("\\n", "\n") if quote == '"' else inner
    # An unquoted value ends at an inline comment (" #"), as docker compose reads it.
    hash_at = value.find(" #")
    if hash_at != -1:
        value = value[:hash_at]
    return value.strip()
