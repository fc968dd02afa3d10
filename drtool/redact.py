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

_URL_SCHEME = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://")
_QUERY_VALUE = re.compile(r"(?P<name>[^?&;#=\"'<>\s]+)=(?P<val>[^&;#\"'<>\s]*)")
_KEYVALUE = re.compile(
    r"(?i)\b(?P<key>password|passwd|pwd|secret|secret_key|secret_access_key|token|api[_-]?key|x-api-key"
    r"|access[_-]?token|refresh[_-]?token|id[_-]?token|client[_-]?secret|sig|signature"
    r"|x-amz-signature|x-amz-credential|x-amz-security-token)"
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
    text = _redact_urls(text)
    text = _KEYVALUE.sub(lambda m: f"{m['key']}{m['sep']}{m['q']}{MASK}", text)
    return _BEARER.sub(lambda m: f"{m.group(1)}{MASK}", text)


def _redact_urls(text: str) -> str:
    """Mask the userinfo and every query value of each `scheme://...` in `text`.

    A URL runs to the next whitespace or the next `scheme://` (a list of sites is one token). The userinfo ends at
    the token's last '@', because a password pasted unencoded may hold '/', '@', ':', '#' or '?'; when that
    over-reaches (an '@' in a query), more is masked, never less.
    """
    if "://" not in text:
        return text
    out: list[str] = []
    pos = 0
    starts = list(_URL_SCHEME.finditer(text))
    for i, match in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(text)
        space = next((j for j in range(match.end(), end) if text[j].isspace()), end)
        out.append(text[pos:match.end()])
        out.append(_redact_url_rest(text[match.end():space]))
        pos = space
    out.append(text[pos:])
    return "".join(out)


def _redact_url_rest(rest: str) -> str:
    """The part of a URL after `scheme://`, with its userinfo password (or bare user) and query values masked."""
    at = rest.rfind("@")
    host = 0  # where the host starts: after the userinfo, if there is one
    if at >= 0:
        userinfo = rest[:at]
        user, colon, _ = userinfo.partition(":")
        if colon and not any(c in user for c in "/?#"):
            rest = f"{user}:{MASK}{rest[at:]}"
            host = len(user) + 1 + len(MASK) + 1
        elif not colon and userinfo and not any(c in userinfo for c in "/?#"):  # a token as the user name
            rest = f"{MASK}{rest[at:]}"
            host = len(MASK) + 1
    query = rest.find("?", host)
    if query < 0:
        return rest
    return rest[:query] + _QUERY_VALUE.sub(
        lambda m: f"{m['name']}={MASK}" if m["val"] else m[0], rest[query:])


def redact_obj(value: object) -> object:
    """Redact strings anywhere inside a JSON-like structure."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_obj(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_obj(v) for v in value]
    return value
