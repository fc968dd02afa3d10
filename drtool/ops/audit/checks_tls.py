"""`drtool audit`: the TLS certificate of every https S3 endpoint drtool uses (Dify's bucket, the snapshot bucket).

An expired certificate stops uploads, snapshots and restores on the day it expires, and nothing else warns
before: the S3 calls keep working until that day. One TLS handshake per endpoint (standard library `ssl`, no
SDK), verified the way drtool's own clients verify (s3.ca_bundle or the system store, s3.verify_tls); the dates
and the verdict are pure (drtool.core.audit.tls_verdict).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from urllib.parse import urlsplit

from drtool.config import S3Settings
from drtool.core.audit import cert_facts, tls_verdict
from drtool.errors import DrtoolError
from drtool.ops.audit.context import AuditRun
from drtool.ops.snapshot.destination import destination_settings


def _endpoints(audit: AuditRun) -> dict[str, S3Settings]:
    """Distinct https endpoints of the Dify and the snapshot bucket (one finding per certificate, not per bucket)."""
    out: dict[str, S3Settings] = {}
    candidates = [audit.settings.s3]
    with contextlib.suppress(DrtoolError):  # no snapshot bucket configured: only Dify's endpoint
        candidates.append(destination_settings(audit.settings))
    for s3 in candidates:
        endpoint = (s3.endpoint or "").rstrip("/")
        if endpoint.lower().startswith("https://"):
            out.setdefault(endpoint, s3)
    return out


def _handshake(host: str, port: int, s3: S3Settings) -> tuple[bytes, str | None]:
    """The server's leaf certificate (DER), and why verification refused it (None: accepted or not verified).

    Two handshakes when the first is refused: the verified one gives the reason, an unverified one the
    certificate itself, so the evidence can say what is wrong with it (expired, unknown issuer, other name).
    """
    timeout = float(s3.connect_timeout)
    error: str | None = None
    if s3.verify_tls:
        context = ssl.create_default_context(cafile=s3.ca_bundle or None)
        try:
            with socket.create_connection((host, port), timeout=timeout) as raw, \
                    context.wrap_socket(raw, server_hostname=host) as tls:
                der = tls.getpeercert(binary_form=True)
            if der:
                return der, None
        except ssl.SSLCertVerificationError as exc:
            error = str(exc.verify_message or exc.reason or exc)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # only to read the certificate refused above (or with verify_tls off)
    with socket.create_connection((host, port), timeout=timeout) as raw, \
            context.wrap_socket(raw, server_hostname=host) as tls:
        der = tls.getpeercert(binary_form=True)
    if not der:
        raise ssl.SSLError(f"{host}:{port} sent no certificate")
    return der, error


def certificates(audit: AuditRun) -> None:
    """Each https endpoint's certificate: expired or invalid is critical, expiring soon a warning."""
    endpoints = _endpoints(audit)
    if not endpoints:
        audit.result.skipped.append("s3: TLS certificate (no https endpoint)")
        return
    for endpoint, s3 in endpoints.items():
        parts = urlsplit(endpoint)
        host, port = parts.hostname or "", parts.port or 443
        try:
            der, error = _handshake(host, port, s3)
        except OSError as exc:  # a server that does not answer is s3.unreachable's finding
            if isinstance(exc, ssl.SSLError):  # it answers, but no TLS handshake works: audit.check_failed
                raise
            audit.result.skipped.append(f"s3: TLS certificate of {endpoint} (no connection: {exc})")
            continue
        verdict = tls_verdict(cert_facts(der), audit.now, error)
        audit.result.checked.append(f"s3: TLS certificate of {endpoint}")
        if verdict is None:
            continue
        fid, evidence = verdict
        if not s3.verify_tls:
            evidence += " (s3.verify_tls is off: drtool does not verify, Dify's clients do)"
        fix = ("renew the certificate (certbot renew / your CA) and install it where the endpoint reads it (MinIO: "
               "~/.minio/certs/public.crt and private.key, reloaded without a restart; a proxy: its cert file)")
        if error and fid == "s3.tls_invalid" and "expired" not in evidence:
            fix += ("; a private CA: give drtool its bundle (s3.ca_bundle / DRTOOL_S3_CA_BUNDLE) and Dify the same "
                    "(REQUESTS_CA_BUNDLE); a wrong name: a certificate for the endpoint's host")
        audit.add(fid, f"{endpoint}: {evidence}", fix, endpoint)
