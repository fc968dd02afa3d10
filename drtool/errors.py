"""One error family with fixed exit codes, so scripts and cron can rely on them.

The table is part of drtool's public contract (docs/exit-codes.md); never renumber.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    DEGRADED = 3
    CRITICAL = 4
    NOT_FOUND = 10
    LOCKED = 11
    AUTH = 12


class DrtoolError(Exception):
    """An error the operator can act on: `message` says what happened, `hint` what to do next."""

    exit_code: ExitCode = ExitCode.ERROR
    # The name the JSON `error` field carries; None: the class's own. A refinement that only adds precision for
    # callers (AccessDenied of AuthError) keeps its family's name, which docs and scripts match on.
    family: str | None = None
    # The outside system's own name for the failure when it gave one (S3's NoSuchKey, InternalError; a transport
    # error's class name), for reports; decisions test the class, never this text.
    code: str | None = None

    def __init__(self, message: str, *, hint: str | None = None, system: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.system = system

    def __str__(self) -> str:
        text = f"{self.system}: {self.message}" if self.system else self.message
        return f"{text} ({self.hint})" if self.hint else text

    def to_event(self) -> dict[str, object]:
        return {
            "event": "error",
            "error": self.family or type(self).__name__,
            "exit_code": int(self.exit_code),
            "system": self.system,
            "message": self.message,
            "hint": self.hint,
        }


class UsageError(DrtoolError):
    exit_code = ExitCode.USAGE


class ConfigError(UsageError):
    """A setting is missing or invalid; the message names the setting and where it came from."""


class UnavailableError(DrtoolError):
    """A system could not be reached or answered with a server-side error after retries."""


class KeyRefusedError(UnavailableError):
    """The object store (or its client) refused a request for one key as malformed (HTTP 400, an empty key): a fact
    about that key, which a checker such as `drtool verify` reports as a finding instead of stopping on it."""

    def __init__(self, url: str, reason: str, *, system: str | None = None) -> None:
        super().__init__(f"{url}: the object store refused the key ({reason})", system=system)
        self.url = url
        self.reason = reason


class VerificationFailed(DrtoolError):
    exit_code = ExitCode.CRITICAL


class NotFoundError(DrtoolError):
    exit_code = ExitCode.NOT_FOUND


class LockedError(DrtoolError):
    exit_code = ExitCode.LOCKED


class AuthError(DrtoolError):
    """Credentials were refused or lack a permission; never retried."""

    exit_code = ExitCode.AUTH


# --- the object-store port's errors (drtool/core/ports.py ObjectStore) -----------------------------------------------
# Refinements of the families above, so every existing `except AuthError` / `except NotFoundError` and exit code
# stays as it was, while an operation can ask precisely "was that key missing?" without parsing an SDK's codes.

class NotFound(NotFoundError):
    """The object store has no such bucket, key or version (exit 10)."""

    family = "NotFoundError"


class AccessDenied(AuthError):
    """The object store refused the credentials or a permission (exit 12); the message names the IAM action."""

    family = "AuthError"


class PreconditionFailed(DrtoolError):
    """A conditional write lost: If-None-Match found the key already there, or If-Match found another ETag (or
    no object). Expected in a race (two runs taking one lock), so callers catch it; exit 1 if one does not."""


class Unreachable(UnavailableError):
    """The endpoint could not be reached or did not answer in time, every try; `code` names the transport error
    (EndpointConnectionError, ReadTimeoutError, ...). A lag probe polls on through it."""

    family = "UnavailableError"


class Unsupported(UnavailableError):
    """The server does not implement the request (NotImplemented, MethodNotAllowed): a conditional write falls back
    to check-then-write, a version listing to the plain object."""

    family = "UnavailableError"
