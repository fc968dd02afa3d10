"""MinIO's admin API (site replication info and status) and health endpoints, without the `mc` binary.

Requests are signed like madmin does: SigV4 for service "s3" with `X-Amz-Content-Sha256`. botocore's
`S3SigV4Auth` adds that header; plain `SigV4Auth` does not, and MinIO then answers 403 AccessDenied, which would
send an operator chasing a credentials problem that does not exist. Errors become drtool errors that name the
site: refused credentials exit 12, a clock off by more than 15 minutes says so, and an endpoint that is not
MinIO (SeaweedFS, AWS S3) gets a plain statement instead of a JSON parse error.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import botocore.exceptions
from botocore.auth import SIGV4_TIMESTAMP, S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.httpsession import URLLib3Session

from drtool.adapters.minio_answers import info_problem, status_problem
from drtool.adapters.s3 import tls_reason
from drtool.errors import AuthError, DrtoolError, UnavailableError, UsageError

log = logging.getLogger("drtool.replication")

ADMIN_PREFIX = "/minio/admin/v3"
STATUS_QUERY: dict[str, str] = {
    # Every flag explicitly: with all false MinIO turns on every section but metrics, with only metrics=true
    # the others stay off.
    "api-version": "1", "buckets": "true", "policies": "true", "users": "true", "groups": "true",
    "metrics": "true", "ilm-expiry-rules": "true", "peer-state": "false", "showDeleted": "false",
}
HEALTH_PATHS = ("/minio/health/live", "/minio/health/cluster")

_AUTH_CODES = {"AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId", "XMinioAdminNoSuchUser",
               "XMinioAccessDenied", "ExpiredToken", "InvalidToken"}
_NOT_MINIO_HINT = ("site replication is a MinIO feature; `drtool replication verify` and `drtool replication probe`"
                   " work on any S3 endpoint")


class NotMinioError(UsageError):
    """The endpoint answers S3 but has no MinIO admin API (SeaweedFS, AWS S3, ...)."""


class SiteUnreachable(UnavailableError):
    """The site could not be reached at all: a CRITICAL finding for status, not a crash."""


class MalformedAnswer(UnavailableError):
    """The site answered JSON whose shape drtool cannot read (a proxy, a future MinIO, a damaged answer)."""


class _SkewedS3SigV4Auth(S3SigV4Auth):
    """S3SigV4Auth whose signing time can be offset, to prove the clock-skew diagnosis against a real server."""

    def __init__(self, credentials: Credentials, region: str, offset: dt.timedelta) -> None:
        super().__init__(credentials, "s3", region)
        self._offset = offset

    def add_auth(self, request: AWSRequest) -> None:
        if not self._offset:
            super().add_auth(request)
            return
        # Same steps as SigV4Auth.add_auth, with the timestamp moved by the offset.
        request.context["timestamp"] = (dt.datetime.now(dt.UTC).replace(tzinfo=None) + self._offset
                                        ).strftime(SIGV4_TIMESTAMP)
        self._modify_request_before_signing(request)
        canonical = self.canonical_request(request)
        signature = self.signature(self.string_to_sign(request, canonical), request)
        self._inject_signature_to_request(request, signature)


@dataclass
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))


class MinioAdmin:
    """One site's admin endpoint. `alias` is how every message names the site."""

    def __init__(self, alias: str, endpoint: str, access_key: str | None, secret_key: str | None, *,
                 region: str = "us-east-1", verify: bool | str = True, timeout: float = 15,
                 clock_offset: dt.timedelta = dt.timedelta(0)) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise UsageError(f"site {alias}: invalid endpoint {endpoint!r}",
                             hint="give the site as ALIAS=http(s)://host:port")
        self.alias = alias
        self.endpoint = f"{parts.scheme}://{parts.netloc}"
        self._credentials = Credentials(access_key or "", secret_key or "") if access_key else None
        self._auth_region = region
        self._offset = clock_offset
        if verify is False and parts.scheme == "https":
            log.warning("TLS certificate verification is OFF for site %s (%s) (s3.verify_tls=false)", alias,
                        self.endpoint)
        self._http = URLLib3Session(verify=verify, timeout=timeout, max_pool_connections=4)

    @property
    def system(self) -> str:
        return f"site {self.alias} ({self.endpoint})"

    def close(self) -> None:
        self._http.close()

    # -- transport ---------------------------------------------------------------------------------------
    def request(self, method: str, path: str, query: Mapping[str, str] | None = None, *, sign: bool = True,
                what: str = "request") -> Response:
        """Send one request; transport failures become SiteUnreachable or, for TLS, an UnavailableError."""
        url = self.endpoint + path
        if query:
            # Sorted keys and RFC 3986 escaping, so the URL sent is exactly the one signed.
            url += "?" + "&".join(f"{quote(k, safe='-_.~')}={quote(str(v), safe='-_.~')}"
                                  for k, v in sorted(query.items()))
        req = AWSRequest(method=method, url=url, data=b"")
        if sign:
            if self._credentials is None:
                raise AuthError(f"{what}: no admin credentials configured", system=self.system,
                                hint="set replication.access_key/secret_key or s3.access_key/secret_key")
            _SkewedS3SigV4Auth(self._credentials, self._auth_region, self._offset).add_auth(req)
        try:
            raw = self._http.send(req.prepare())
            body = raw.content
        except botocore.exceptions.SSLError as exc:
            raise UnavailableError(
                f"{what}: TLS handshake failed ({tls_reason(exc)})", system=self.system,
                hint="check the URL scheme (https on a plain-HTTP port fails like this), or pass the CA that signed "
                     "the site's certificate with --ca-bundle FILE (s3.ca_bundle, DRTOOL_S3_CA_BUNDLE); "
                     "--no-verify-tls turns verification off, for tests only") from None
        except (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectTimeoutError,
                botocore.exceptions.ReadTimeoutError, botocore.exceptions.ConnectionClosedError,
                botocore.exceptions.HTTPClientError) as exc:
            raise SiteUnreachable(f"{what}: cannot reach the site ({type(exc).__name__})", system=self.system,
                                  hint="check that the server runs and the URL is right") from None
        return Response(raw.status_code, dict(raw.headers), body)

    def _admin_json(self, path: str, query: Mapping[str, str], what: str) -> dict[str, Any]:
        resp = self.request("GET", ADMIN_PREFIX + path, query, what=what)
        if resp.status != 200:
            raise self._error(resp, what)
        try:
            data = resp.json()
        except (ValueError, RecursionError):  # ValueError covers UnicodeDecodeError
            raise self._not_minio(resp, what) from None
        if not isinstance(data, dict):
            raise self._not_minio(resp, what)
        return data

    # -- API -----------------------------------------------------------------------------------------------
    def server_info(self) -> dict[str, Any]:
        """GET info (`mc admin info`): servers, and under `services` the audit and logger targets with their state.
        Unlike `admin config get`, whose answer madmin encrypts, it is plain JSON."""
        return self._admin_json("/info", {}, "server info")

    def account_info(self) -> dict[str, Any]:
        """GET accountinfo (`mc admin accountinfo`): the caller's own account name, effective policy (`Policy`, the
        combined policy of the user and its groups) and the buckets it may use. Any authenticated user may ask."""
        return self._admin_json("/accountinfo", {}, "account info")

    def info(self) -> dict[str, Any]:
        """GET site-replication/info: `{"enabled": false}` when site replication is off."""
        data = self._admin_json("/site-replication/info", {"api-version": "1"}, "site replication info")
        self._check(info_problem(data), "site replication info")
        return data

    def status(self) -> dict[str, Any]:
        """GET site-replication/status with every section and metrics."""
        data = self._admin_json("/site-replication/status", STATUS_QUERY, "site replication status")
        self._check(status_problem(data), "site replication status")
        return data

    def replication_backlog(self, bucket: str, *, max_line: int = 1 << 20) -> Iterator[dict[str, Any]]:
        """POST replication/diff: every version of `bucket` this site has not replicated yet (PENDING, FAILED).

        The endpoint `mc replicate backlog --full` reads. It walks the bucket on the server and streams one JSON object
        per line (keep-alive spaces between them), so it is read line by line: memory stays one line whatever
        the backlog. The MRF endpoint (replication/mrf) is not used: its entries carry no age, and MinIO keeps
        a failure there only until its 5-minute retry, so an empty MRF does not mean nothing is missing.
        """
        what = f"replication backlog of bucket {bucket}"
        query = {"bucket": bucket}
        url = self.endpoint + ADMIN_PREFIX + "/replication/diff?" + "&".join(
            f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(query.items()))
        if self._credentials is None:
            raise AuthError(f"{what}: no admin credentials configured", system=self.system)
        req = AWSRequest(method="POST", url=url, data=b"")
        _SkewedS3SigV4Auth(self._credentials, self._auth_region, self._offset).add_auth(req)
        prepared = req.prepare()
        prepared.stream_output = True
        try:
            raw = self._http.send(prepared)
        except (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectTimeoutError,
                botocore.exceptions.ReadTimeoutError, botocore.exceptions.ConnectionClosedError,
                botocore.exceptions.HTTPClientError) as exc:
            raise SiteUnreachable(f"{what}: cannot reach the site ({type(exc).__name__})",
                                  system=self.system) from None
        try:
            if raw.status_code != 200:
                body = raw.raw.read(64 * 1024)
                raise self._error(Response(raw.status_code, dict(raw.headers), body), what)
            pending = b""
            try:
                for chunk in raw.raw.stream(64 * 1024):
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    if len(pending) > max_line:
                        raise MalformedAnswer(f"{what}: a line longer than {max_line} bytes", system=self.system)
                    for line in lines:
                        item = _backlog_line(line)
                        if item is not None:
                            yield item
            except Exception as exc:  # urllib3's read errors: the site went away mid-answer
                if isinstance(exc, DrtoolError):
                    raise
                raise SiteUnreachable(f"{what}: the answer was cut ({type(exc).__name__})",
                                      system=self.system) from None
            item = _backlog_line(pending)
            if item is not None:
                yield item
        finally:
            raw.raw.release_conn()

    def _check(self, problem: str | None, what: str) -> None:
        if problem:
            raise MalformedAnswer(f"{what}: unexpected answer: {problem}", system=self.system,
                                  hint="check that the endpoint is the MinIO server itself (not a proxy that "
                                       "rewrites answers) and that its version is supported")

    def health(self) -> dict[str, int | None]:
        """Unauthenticated health probes: path -> HTTP status, None when the site did not answer."""
        result: dict[str, int | None] = {}
        for path in HEALTH_PATHS:
            try:
                result[path] = self.request("GET", path, sign=False, what=f"health {path}").status
            except SiteUnreachable:
                result[path] = None
        return result

    # -- errors --------------------------------------------------------------------------------------------
    def _error(self, resp: Response, what: str) -> DrtoolError:
        code, message = _error_code(resp)
        if code == "RequestTimeTooSkewed":
            return AuthError(f"{what}: the site refused the request because the clocks differ by more than 15 "
                             f"minutes ({message})", system=self.system,
                             hint="synchronise the clock of this machine and of the site (NTP) and retry")
        if code in _AUTH_CODES or (resp.status == 403 and code is not None):
            return AuthError(f"{what}: access refused ({code}: {message})", system=self.system,
                             hint="check replication.access_key/secret_key (or s3.*) for this site; the user needs "
                                  "the admin:SiteReplicationInfo permission")
        if code is None or code in ("NoSuchBucket", "NotImplemented", "MethodNotAllowed", "InvalidBucketName",
                                    "NoSuchKey", "AllAccessDisabled") or resp.status in (404, 405, 501):
            return self._not_minio(resp, what)
        if code == "XMinioServerNotInitialized":
            return SiteUnreachable(f"{what}: the server is still starting ({code})", system=self.system,
                                   hint="retry in a minute")
        return UnavailableError(f"{what}: HTTP {resp.status} {code}: {message}", system=self.system,
                                hint="look at the site's server log; retry if it is a transient backend issue")

    def _not_minio(self, resp: Response, what: str) -> NotMinioError:
        server = resp.headers.get("Server") or resp.headers.get("server") or "unknown"
        return NotMinioError(
            f"{what}: {self.endpoint} is not a MinIO server with the admin API (HTTP {resp.status}, "
            f"Server: {server})", system=f"site {self.alias}", hint=_NOT_MINIO_HINT)


def _error_code(resp: Response) -> tuple[str | None, str]:
    """MinIO admin errors are JSON {"Code","Message"}; S3 errors are XML <Code>; others have neither."""
    text = resp.body.decode("utf-8", errors="replace")
    try:
        data = json.loads(text)
        if isinstance(data, dict) and data.get("Code"):
            return str(data["Code"])[:200], str(data.get("Message") or "")[:500]
    except (ValueError, RecursionError):
        pass
    if "<Code>" in text:
        code = text.split("<Code>", 1)[1].split("</Code>", 1)[0]
        message = text.split("<Message>", 1)[1].split("</Message>", 1)[0] if "<Message>" in text else ""
        return code, message
    return None, text[:200]


def _backlog_line(line: bytes) -> dict[str, Any] | None:
    """One NDJSON line of replication/diff, None for keep-alive blanks; a foreign shape is an error."""
    line = line.strip()
    if not line:
        return None
    try:
        item = json.loads(line)
    except (ValueError, RecursionError):
        raise MalformedAnswer("replication backlog: a line is not JSON") from None
    if not isinstance(item, dict) or not isinstance(item.get("object", ""), str):
        raise MalformedAnswer("replication backlog: a line is not an object with an 'object' name")
    return item


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) < 240 else text[:237] + "..."
