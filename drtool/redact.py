"""Keep secrets out of everything drtool prints or writes.

Secret values are registered once, when settings load, and every log record, JSON event, report and error
message goes through `redact()`. Patterns catch secrets drtool never saw as settings, such as a password inside
a DSN that a driver echoes back in an exception.
"""

from __future__ import annotations

import re
import threading

MASK = "***"
_MIN_SECRET_LEN = 4  # shorter values would mask ordinary words

_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]+)@")
_KEYVALUE = re.compile(
    r"(?i)\b(?P<key>password|passwd|pwd|secret|secret_key|secret_access_key|token|api_key|apikey)"
    r"(?P<sep>\s*[=:]\s*)(?P<q>['\"]?)(?P<val>[^\s'\",;&]+)"
)
_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]+")

_lock = threading.Lock()
_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    if value and len(value) >= _MIN_SECRET_LEN:
        with _lock:
            _secrets.add(value)


def clear_secrets() -> None:
    with _lock:
        _secrets.clear()


def redact(text: str) -> str:
    """Mask every registered secret and every credential-looking pattern in `text`."""
    if not text:
        return text
    with _lock:
        known = sorted(_secrets, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, MASK)
    text = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    text = _KEYVALUE.sub(lambda m: f"{m['key']}{m['sep']}{m['q']}{MASK}", text)
    return _BEARER.sub(lambda m: f"{m.group(1)}{MASK}", text)


def redact_obj(value: object) -> object:
    """Redact strings anywhere inside a JSON-like structure."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_obj(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_obj(v) for v in value]
    return value
