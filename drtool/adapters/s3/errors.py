"""How S3 failures become drtool errors: the one place botocore's exceptions are translated.

`translate_error` turns an SDK exception into the drtool error family (NotFound, AccessDenied, PreconditionFailed,
Unsupported, Unreachable, UnavailableError) with a hint; the helpers beside it read an answer's status and code.
ObjectTooLarge and DeleteRefused are the adapter's own errors.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import botocore.exceptions
import urllib3.exceptions

from drtool.adapters.s3.iam import IAM_ACTIONS
from drtool.errors import (
    AccessDenied,
    DrtoolError,
    NotFound,
    PreconditionFailed,
    UnavailableError,
    Unreachable,
    Unsupported,
    VerificationFailed,
)

AUTH_CODES = {
    "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
    "AllAccessDisabled", "AccountProblem", "403", "Forbidden", "XMinioAdminNoSuchUser",
}
NOT_FOUND_CODES = {"NoSuchBucket", "NoSuchKey", "NoSuchVersion", "404", "NotFound"}
_PRECONDITION_CODES = {"PreconditionFailed", "ConditionalRequestConflict", "412"}

# A body cut after the response headers arrived: botocore does not retry these (the call had returned).
CUT_ERRORS: tuple[type[Exception], ...] = (
    botocore.exceptions.ResponseStreamingError, botocore.exceptions.IncompleteReadError,
    urllib3.exceptions.ProtocolError, urllib3.exceptions.ReadTimeoutError, ConnectionError,
)


class ObjectTooLarge(ValueError):
    """An object read whole is bigger than anything drtool writes there: it was planted or is not drtool's."""


class DeleteRefused(AccessDenied):
    """The server refused to delete some versions (Object Lock retention, a legal hold, or a missing permission)."""

    family = None  # its own name in JSON events, as before it was an AccessDenied


TLS_HINT = ("if the endpoint uses a private or self-signed CA, pass that CA's certificate with --ca-bundle FILE "
            "(s3.ca_bundle, DRTOOL_S3_CA_BUNDLE); --no-verify-tls (s3.verify_tls=false) turns verification off, "
            "for tests only; an https URL on a plain-HTTP port fails like this too")


def tls_reason(exc: Exception) -> str:
    """Say plainly when the certificate was not trusted, keeping OpenSSL's own reason for the operator."""
    text = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text:
        detail = text.split("certificate verify failed:", 1)[-1].split("(_ssl", 1)[0].strip(" :)")
        return f"TLS certificate verification failed: {detail or 'untrusted certificate'} (CERTIFICATE_VERIFY_FAILED)"
    return text if len(text) < 240 else text[:237] + "..."


def is_sdk_error(exc: BaseException) -> bool:
    """Whether an exception came from the S3 client stack (translate_error's to judge), not from drtool itself."""
    return hasattr(exc, "response") or type(exc).__module__.startswith(("botocore", "boto3", "s3transfer",
                                                                         "urllib3"))


def translate_answer(exc: Exception, *, what: str, endpoint: str | None) -> Exception:
    """An S3 server's error answer (it carries a `response`) as a drtool error; any other exception unchanged."""
    if isinstance(exc, DrtoolError) or not hasattr(exc, "response"):
        return exc
    return translate_error(exc, what=what, endpoint=endpoint)


@contextmanager
def answers_translated(*, what: str, endpoint: str | None) -> Iterator[None]:
    """Raise an S3 error answer met in the block as a drtool error (`translate_answer`); let the rest through."""
    try:
        yield
    except Exception as exc:
        error = translate_answer(exc, what=what, endpoint=endpoint)
        if error is exc:
            raise
        raise error from None


def http_status(exc: Exception) -> int | None:
    """The HTTP status of an S3 error answer; None for errors without one (refused, timed out, cut).

    Test this, never ``"404" in str(exc)``: a connection error's text holds the endpoint URL, whose port may
    contain 404 (http://host:40412), and an unreachable bucket would be reported as a missing one.
    """
    if isinstance(exc, botocore.exceptions.ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return int(status) if status is not None else None
    return None


def error_code(exc: botocore.exceptions.ClientError) -> tuple[str, str]:
    """The S3 error code and message of an answer, also for HEAD requests.

    A HEAD answer has no body, so botocore reports every refusal as a bare "403" and a wrong secret looked like a
    missing permission. MinIO puts the real code in `x-minio-error-code` (and its text in `x-minio-error-desc`).
    """
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    message = str(error.get("Message") or code)
    if code in ("403", "Forbidden", "400", "404", "BadRequest", "NotFound", ""):
        headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        header_code = headers.get("x-minio-error-code")
        if header_code:
            return str(header_code), str(headers.get("x-minio-error-desc", header_code)).strip('"')
    return code, message


def translate_error(exc: Exception, *, what: str, endpoint: str | None, needed: str | None = None) -> DrtoolError:
    """`_translate`, with the S3 error code (or the transport error's class name) kept as the error's `code`."""
    error = _translate(exc, what=what, endpoint=endpoint, needed=needed)
    error.code = (error_code(exc)[0] or None) if isinstance(exc, botocore.exceptions.ClientError) \
        else type(exc).__name__
    return error


def _translate(exc: Exception, *, what: str, endpoint: str | None, needed: str | None = None) -> DrtoolError:
    """Turn a botocore exception into an error that names the system and what the operator should do.

    The one place S3 answers become drtool errors: the ObjectStore port (BucketStore) and every helper here raise what
    it returns (NotFound, AccessDenied, PreconditionFailed, UnavailableError, ...), so operations never see
    botocore.

    `needed` overrides the permission named for a refusal, for calls whose IAM action depends on their arguments
    (a PUT with Object Lock retention also needs s3:PutObjectRetention).
    """
    system = f"object store {endpoint or 'AWS S3'}"
    if isinstance(exc, botocore.exceptions.ClientError):
        code, message = error_code(exc)
        if code == "RequestTimeTooSkewed":
            return AccessDenied(f"{what}: the server refused the request because this machine's clock is off",
                                hint="synchronise the clock (NTP) and retry", system=system)
        if code == "SignatureDoesNotMatch":
            return AccessDenied(f"{what}: the secret key does not match the access key (SignatureDoesNotMatch)",
                                hint="check the secret key setting (s3.secret_key, or the command's own credentials); "
                                     "a policy change cannot cause this", system=system)
        if code == "InvalidAccessKeyId":
            return AccessDenied(f"{what}: this server does not know the access key (InvalidAccessKeyId)",
                                hint="check the access key setting and that the user exists on this server",
                                system=system)
        if code in AUTH_CODES:
            needed = needed or IAM_ACTIONS.get(exc.operation_name or "")
            if needed and code in ("403", "Forbidden"):  # a HEAD answer: no body, so no reason
                return AccessDenied(f"{what}: access refused (HTTP 403 without a reason: a HEAD answer has no body)",
                                    hint=f"check the access and secret key first; if they are right, grant {needed} "
                                         "to this user (docs/iam.md lists each command's policy)", system=system)
            if needed and code in ("AccessDenied", "AllAccessDisabled"):
                return AccessDenied(f"{what}: access refused ({code}: {message}): {exc.operation_name} needs {needed}",
                                    hint=f"grant {needed} to this user (docs/iam.md lists each command's policy)",
                                    system=system)
            return AccessDenied(f"{what}: access refused ({code}: {message})",
                                hint="check the access key, secret key and the policy of that user", system=system)
        if code in _PRECONDITION_CODES or http_status(exc) == 412:
            return PreconditionFailed(f"{what}: the conditional write lost ({code}): the object was created or "
                                      "changed by someone else first", system=system)
        if code in NOT_FOUND_CODES:
            return NotFound(f"{what}: not found ({code})",
                            hint="check the bucket name and key prefix", system=system)
        if code in ("NotImplemented", "MethodNotAllowed", "501") or http_status(exc) == 501:
            return Unsupported(f"{what}: {code}: {message}", system=system)
        return UnavailableError(f"{what}: {code}: {message}", system=system)
    if isinstance(exc, botocore.exceptions.SSLError):
        return UnavailableError(f"{what}: TLS handshake failed: {tls_reason(exc)}", hint=TLS_HINT, system=system)
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return AccessDenied(f"{what}: no credentials configured", hint="set s3.access_key and s3.secret_key",
                            system=system)
    if isinstance(exc, botocore.exceptions.ReadTimeoutError | botocore.exceptions.ConnectTimeoutError):
        return Unreachable(f"{what}: the endpoint did not answer in time, every try ({type(exc).__name__})",
                           hint="check that the server is running and the network; on a slow link raise "
                                "s3.read_timeout / s3.connect_timeout, on a flaky one s3.max_attempts; "
                                "then re-run", system=system)
    if isinstance(exc, botocore.exceptions.EndpointConnectionError | botocore.exceptions.ConnectionClosedError):
        return Unreachable(f"{what}: cannot reach the endpoint ({type(exc).__name__})",
                           hint="check s3.endpoint, the network and that the server is running; then re-run",
                           system=system)
    if isinstance(exc, ObjectTooLarge):
        return VerificationFailed(f"{what}: {exc}", hint="delete or restore that object; do not trust its folder",
                                  system=system)
    if isinstance(exc, CUT_ERRORS):
        return UnavailableError(f"{what}: the connection was cut mid-transfer ({type(exc).__name__})",
                                hint="check the network and the server's health, then re-run: nothing half-read "
                                     "or half-written was kept", system=system)
    return UnavailableError(f"{what}: {type(exc).__name__}: {exc}", system=system)


def is_server_answer(exc: BaseException) -> bool:
    """The server answered with an S3 error (as opposed to a transport failure: refused, timed out, cut)."""
    return isinstance(exc, botocore.exceptions.ClientError)
