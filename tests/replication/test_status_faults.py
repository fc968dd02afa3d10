"""Faults of `drtool replication status`, each against a real server: refused credentials, an endpoint that is
not MinIO, TLS to a plain-HTTP port and to a self-signed server, a skewed clock, a site that is not there."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from drtool.adapters.minio_admin import MinioAdmin
from drtool.errors import AuthError
from tests.replication.conftest import CliRun


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_wrong_credentials_exit_12_and_name_the_site(drtool: Callable[..., CliRun], minio_replication_env: Any,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRTOOL_REPLICATION_SECRET_KEY", "not-the-secret-key")
    res = drtool("replication", "status", "--site", f"B={minio_replication_env.b.endpoint}")
    assert res.code == 12
    assert "site B (http://127.0.0.1:" in res.err
    assert "access refused (SignatureDoesNotMatch" in res.err and "replication.access_key" in res.err
    assert "Traceback" not in res.err and "not-the-secret-key" not in res.err + res.out


def test_unknown_access_key_in_json_mode(drtool: Callable[..., CliRun], minio_replication_env: Any,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRTOOL_REPLICATION_ACCESS_KEY", "nobody")
    res = drtool("replication", "status", "--json")
    assert res.code == 12
    event = res.event("result")
    assert event["error"] == "AuthError" and event["system"].startswith("site A (")
    assert "InvalidAccessKeyId" in event["message"]


def test_not_minio_is_stated_plainly(drtool: Callable[..., CliRun], seaweed_pair: Any,
                                     minio_replication_env: Any) -> None:
    res = drtool("replication", "status", "--site", f"S={seaweed_pair.a.endpoint}")
    assert res.code == 2
    assert f"{seaweed_pair.a.endpoint} is not a MinIO server with the admin API" in res.err
    assert "site replication is a MinIO feature" in res.err and "replication verify" in res.err
    assert "Traceback" not in res.err


def test_https_to_a_plain_http_port_is_a_tls_error(drtool: Callable[..., CliRun], minio_replication_env: Any) -> None:
    url = minio_replication_env.a.endpoint.replace("http://", "https://")
    res = drtool("replication", "status", "--site", f"A={url}")
    assert res.code == 1
    assert f"site A ({url})" in res.err and "TLS handshake failed" in res.err
    assert "https on a plain-HTTP port" in res.err and "Traceback" not in res.err


@pytest.fixture
def self_signed_server(tmp_path: Path) -> Iterator[str]:
    """A real HTTPS server (Python's ssl module) with a self-signed certificate made by openssl."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1"], check=True, capture_output=True)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_self_signed_certificate_is_refused_with_a_hint(drtool: Callable[..., CliRun], minio_replication_env: Any,
                                                        self_signed_server: str) -> None:
    res = drtool("replication", "status", "--site", f"X={self_signed_server}")
    assert res.code == 1
    assert "TLS handshake failed" in res.err and "CERTIFICATE_VERIFY_FAILED" in res.err
    assert "s3.ca_bundle" in res.err


def test_clock_skew_is_diagnosed(minio_pair: Any) -> None:
    """A request signed an hour in the past, sent to the real server, is refused with RequestTimeTooSkewed."""
    site = minio_pair.a
    admin = MinioAdmin("A", site.endpoint, site.access_key, site.secret_key, clock_offset=dt.timedelta(hours=-1))
    with pytest.raises(AuthError) as caught:
        admin.info()
    assert caught.value.exit_code == 12
    assert "clocks differ by more than 15 minutes" in caught.value.message
    assert "NTP" in (caught.value.hint or "") and caught.value.system == f"site A ({site.endpoint})"
    # The same client without the offset is accepted: the signature itself was right.
    assert MinioAdmin("A", site.endpoint, site.access_key, site.secret_key).info()["enabled"] is True


def test_a_site_that_is_not_there_is_critical_not_a_crash(drtool: Callable[..., CliRun],
                                                          minio_replication_env: Any) -> None:
    port = _free_port()
    res = drtool("replication", "status", "--json", "--site", f"A={minio_replication_env.a.endpoint}",
                 "--site", f"GONE=http://127.0.0.1:{port}", "--max-failed-last-hour", "1000000")
    assert res.code == 4
    result = res.event("result")
    codes = {(r["code"], r["site"]) for r in result["reasons"]}
    assert ("site_unreachable", "GONE") in codes


def test_expected_sites_threshold(drtool: Callable[..., CliRun], minio_replication_env: Any) -> None:
    res = drtool("replication", "status", "--json", "--expected-sites", "3", "--max-failed-last-hour", "1000000",
                 "--no-bucket-check")
    assert res.code == 4
    reasons = res.event("result")["reasons"]
    assert {r["code"] for r in reasons if r["level"] == "CRITICAL"} == {"too_few_sites"}
    assert any("expected 3" in r["message"] for r in reasons)


def test_bad_site_syntax_is_a_usage_error(drtool: Callable[..., CliRun], minio_replication_env: Any) -> None:
    res = drtool("replication", "status", "--site", "no-equals-sign")
    assert res.code == 2 and "expected ALIAS=URL" in res.err


def test_no_site_configured(drtool: Callable[..., CliRun], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DRTOOL_REPLICATION_SITES", raising=False)
    res = drtool("replication", "status")
    assert res.code == 2 and "no replication site is configured" in res.err
