"""A reader for docker-compose style `.env` files such as Dify's `docker/.env`.

Written here rather than depending on python-dotenv because drtool needs line numbers in its errors and must never
expand `${VAR}` from the operator's own environment into a configuration it then prints.
"""

from __future__ import annotations

import re

from drtool.errors import ConfigError

_LINE = re.compile(r"^(?:export\s+)?(?P<key>[A-Za-z_][A-Za-z0-9_.]*)\s*=\s*(?P<value>.*)$")


def parse_dotenv(text: str, source: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
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
