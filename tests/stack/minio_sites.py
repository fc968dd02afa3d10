"""Two MinIO servers joined by site replication, as a self-hosted Dify with a DR site runs them.

drtool's ``replication status`` reads MinIO's admin API and compares both sites' listings, and its drills stop
a site; so the fixture gives two real single-drive servers on loopback with the same root credentials (site
replication requires that), site replication set up with ``mc admin replicate add A B`` (the add request body
is encrypted by madmin, so we use mc instead of sending it by hand), and checked with the signed admin API
that drtool itself uses. Each site can be stopped and started again (same ports, same data folder) to simulate
an outage.

The credentials are not MinIO's well-known defaults, so a test that passes cannot be relying on them.
"""

from __future__ import annotations

import json
import os
import secrets
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.stack.build import ensure_go_binary
from tests.stack.ports import free_ports
from tests.stack.process import ManagedProcess, StackStartError, stop_all, wait_ready
from tests.stack.s3_client import REGION, path_style_client
from tests.stack.versions import MC, MINIO

__all__ = [
    "MinioSite",
    "MinioSites",
    "admin_request",
    "external_minio_pair",
    "local_minio_pair",
    "local_minio_site",
    "replication_info",
]

READY_TIMEOUT_S = 120.0
ROOT_USER = "drtooladmin"


@dataclass(eq=False)
class _SiteControl:
    """How to stop and start one local site again; None for external sites."""

    process: ManagedProcess
    is_ready: Callable[[], bool]
    ready_timeout: float


@dataclass(frozen=True)
class MinioSite:
    """One MinIO deployment: S3 and admin API at `endpoint`, known to mc as `alias`."""

    name: str
    endpoint: str
    access_key: str
    secret_key: str
    data_dir: Path | None  # None for an external site
    alias: str
    _control: _SiteControl | None = field(default=None, repr=False, compare=False)

    @property
    def local(self) -> bool:
        """True when the test suite runs this server (and can stop and start it)."""
        return self._control is not None

    def running(self) -> bool:
        """True while the local server process is alive (external sites: always True)."""
        return self._control is None or self._control.process.running()

    @property
    def pid(self) -> int | None:
        """The local server's pid (None for an external site): a new one means the site was restarted."""
        return self._control.process.pid if self._control is not None else None

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server (SIGTERM, or SIGKILL with kill=True to simulate a crash); data stays on disk."""
        self._require_local("stop").process.stop(kill=kill)

    def start(self) -> None:
        """Start the server again on the same address and data folder, and wait until it is ready."""
        control = self._require_local("start")
        control.process.start()
        control.process.wait_ready(control.is_ready, control.ready_timeout, what="ready again after start()")

    def s3_client(self, **kwargs: Any) -> Any:
        """A boto3 S3 client for this site (path-style, as MinIO needs)."""
        return path_style_client(self.endpoint, self.access_key, self.secret_key, **kwargs)

    def _require_local(self, action: str) -> _SiteControl:
        if self._control is None:
            raise RuntimeError(f"cannot {action} MinIO site {self.name}: it is an external server")
        return self._control


@dataclass(frozen=True)
class MinioSites:
    """Two replicated sites, and the mc binary plus config folder in which both are aliased (A and B)."""

    a: MinioSite
    b: MinioSite
    mc_path: Path
    mc_config_dir: Path

    def mc(self, *args: str, check: bool = True, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run ``mc --config-dir DIR <args>`` and return the completed process (text output)."""
        return _run_mc(self.mc_path, self.mc_config_dir, list(args), check=check, timeout=timeout)


def admin_request(
    site: MinioSite,
    path: str,
    query: Mapping[str, str] | None = None,
    *,
    method: str = "GET",
    timeout: float = 15.0,
) -> tuple[int, Any]:
    """Send a SigV4-signed request to MinIO's admin API and return (status, parsed JSON or raw text).

    botocore's S3SigV4Auth is used because it adds X-Amz-Content-Sha256, which MinIO requires (plain SigV4Auth
    gets 403 AccessDenied).
    """
    pairs = sorted((query or {}).items())
    url = f"{site.endpoint}{path}" + (f"?{urlencode(pairs, quote_via=quote)}" if pairs else "")
    request = AWSRequest(method=method, url=url, data=b"")
    S3SigV4Auth(Credentials(site.access_key, site.secret_key), "s3", REGION).add_auth(request)
    http_request = urllib.request.Request(url, method=method, headers=dict(request.headers.items()))
    try:
        with urllib.request.urlopen(http_request, timeout=timeout) as response:  # loopback URL
            status, body = int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    text = body.decode("utf-8", errors="replace")
    try:
        return status, json.loads(text) if text else None
    except json.JSONDecodeError:
        return status, text


def replication_info(site: MinioSite) -> dict[str, Any]:
    """GET /minio/admin/v3/site-replication/info; raises unless it answers 200 with JSON."""
    status, body = admin_request(site, "/minio/admin/v3/site-replication/info", {"api-version": "1"})
    if status != 200 or not isinstance(body, dict):
        raise RuntimeError(f"site-replication/info on {site.endpoint} answered {status}: {body}")
    return body


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=5) as response:  # loopback URL
        return int(response.status) == 200


def _run_mc(
    mc_path: Path, config_dir: Path, args: list[str], *, check: bool = True, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    argv = [str(mc_path), "--config-dir", str(config_dir), "--no-color", *args]
    env = dict(os.environ, MC_NO_COLOR="1")
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    if check and result.returncode != 0:
        shown = [*argv[:-1], "***"] if args[:2] == ["alias", "set"] else argv  # never print the secret key
        raise StackStartError(
            f"`{' '.join(shown)}` failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


def _start_site(
    name: str,
    alias: str,
    workdir: Path,
    binary: Path,
    user: str,
    password: str,
    ready_timeout: float,
    procs: list[ManagedProcess],
    extra_env: Mapping[str, str] | None = None,
) -> MinioSite:
    api_port, console_port = free_ports(2)
    data_dir = workdir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    endpoint = f"http://127.0.0.1:{api_port}"
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(workdir),
        "MINIO_ROOT_USER": user,
        "MINIO_ROOT_PASSWORD": password,
        "MINIO_BROWSER": "off",
        "MINIO_UPDATE": "off",
        "MINIO_CI_CD": "1",  # single drive on the root filesystem is fine for tests
        "MINIO_PROMETHEUS_AUTH_TYPE": "public",
        **(extra_env or {}),
    }
    proc = ManagedProcess(
        name=f"minio site {alias} on {endpoint}",
        argv=[
            str(binary),
            "server",
            str(data_dir),
            "--address",
            f"127.0.0.1:{api_port}",
            "--console-address",
            f"127.0.0.1:{console_port}",
            "--certs-dir",
            str(workdir / "certs"),
            "--quiet",
        ],
        log_path=workdir / "minio.log",
        env=env,
        cwd=workdir,
        stop_timeout=20.0,
    )
    site_ref: list[MinioSite] = []

    def is_ready() -> bool:
        # Liveness first (cheap), then a signed admin call: right after boot the admin API answers 503
        # XMinioServerNotInitialized for a moment even though /minio/health/ready is already 200.
        if not _http_ok(f"{endpoint}/minio/health/ready"):
            return False
        status, _ = admin_request(site_ref[0], "/minio/admin/v3/site-replication/info", {"api-version": "1"})
        return status == 200

    site = MinioSite(
        name=name,
        endpoint=endpoint,
        access_key=user,
        secret_key=password,
        data_dir=data_dir,
        alias=alias,
        _control=_SiteControl(process=proc, is_ready=is_ready, ready_timeout=ready_timeout),
    )
    site_ref.append(site)
    procs.append(proc)
    proc.start()
    proc.wait_ready(is_ready, ready_timeout, what="ready (health and admin API)")
    return site


def _both_enabled(sites: MinioSites) -> bool:
    for site in (sites.a, sites.b):
        info = replication_info(site)
        listed = {s.get("endpoint", "").rstrip("/") for s in info.get("sites", [])}
        if not info.get("enabled") or not {sites.a.endpoint, sites.b.endpoint} <= listed:
            return False
    return True


@contextmanager
def local_minio_pair(workdir: Path, *, ready_timeout: float = READY_TIMEOUT_S) -> Iterator[MinioSites]:
    """Run two MinIO servers with site replication between them for the duration of the block."""
    minio_bin = ensure_go_binary(MINIO)
    mc_bin = ensure_go_binary(MC)
    password = "drtool-" + secrets.token_urlsafe(24)
    mc_config = workdir / "mc-config"
    mc_config.mkdir(parents=True, exist_ok=True)
    procs: list[ManagedProcess] = []
    try:
        started: list[MinioSite] = []
        for name, alias in (("site-a", "A"), ("site-b", "B")):
            started.append(
                _start_site(name, alias, workdir / name, minio_bin, ROOT_USER, password, ready_timeout, procs)
            )
        sites = MinioSites(a=started[0], b=started[1], mc_path=mc_bin, mc_config_dir=mc_config)
        for site in started:
            sites.mc("alias", "set", site.alias, site.endpoint, site.access_key, site.secret_key)
        sites.mc("admin", "replicate", "add", sites.a.alias, sites.b.alias, timeout=120.0)
        wait_ready(lambda: _both_enabled(sites), 60.0, what="site replication enabled on both sites")
        yield sites
    finally:
        stop_all(procs)


@contextmanager
def local_minio_site(
    workdir: Path, *, alias: str = "A", ready_timeout: float = READY_TIMEOUT_S,
    extra_env: Mapping[str, str] | None = None,
) -> Iterator[MinioSite]:
    """Run ONE MinIO server (no replication, no mc) for the duration of the block: what `make demo` needs.

    Same binary, credentials scheme and readiness check as a site of local_minio_pair; the data folder is
    `workdir`/site-a and is left for the caller to delete. `extra_env` adds server settings (e.g. a static KMS key,
    MINIO_KMS_SECRET_KEY).
    """
    minio_bin = ensure_go_binary(MINIO)
    password = "drtool-" + secrets.token_urlsafe(24)
    procs: list[ManagedProcess] = []
    try:
        yield _start_site("site-a", alias, workdir / "site-a", minio_bin, ROOT_USER, password, ready_timeout, procs,
                          extra_env)
    finally:
        stop_all(procs)


def external_minio_pair(
    url_a: str, url_b: str, access_key: str, secret_key: str, *, workdir: Path
) -> MinioSites:
    """Describe two existing, already replicated sites; check that the admin API says so; alias them in mc."""
    mc_config = workdir / "mc-config"
    mc_config.mkdir(parents=True, exist_ok=True)
    sites = MinioSites(
        a=MinioSite("site-a", url_a.rstrip("/"), access_key, secret_key, None, "A"),
        b=MinioSite("site-b", url_b.rstrip("/"), access_key, secret_key, None, "B"),
        mc_path=ensure_go_binary(MC),
        mc_config_dir=mc_config,
    )
    try:
        ok = _both_enabled(sites)
    except Exception as exc:  # reported with the URLs
        raise StackStartError(
            f"external MinIO sites {url_a} / {url_b} do not answer the admin API: {exc}"
        ) from exc
    if not ok:
        raise StackStartError(
            f"external MinIO sites {url_a} and {url_b} are not site-replicated with each other"
        )
    for site in (sites.a, sites.b):
        sites.mc("alias", "set", site.alias, site.endpoint, site.access_key, site.secret_key)
    return sites


def start_tls_minio(folder: Path, port: int, root_user: str, root_password: str) -> ManagedProcess:
    """One MinIO serving TLS with the certificates already in `folder`/certs (public.crt, private.key, and SNI
    sub-folders), ready when its health answers over TLS verified by `folder`/ca.pem. The caller stops it."""
    from tests.stack.versions import MINIO

    endpoint = f"https://127.0.0.1:{port}"
    [console] = free_ports(1)
    proc = ManagedProcess(
        name=f"minio with TLS on {endpoint}",
        argv=[str(ensure_go_binary(MINIO)), "server", str(folder / "data"), "--address", f"127.0.0.1:{port}",
              "--console-address", f"127.0.0.1:{console}", "--certs-dir", str(folder / "certs"), "--quiet"],
        log_path=folder / "minio.log",
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(folder), "MINIO_ROOT_USER": root_user,
             "MINIO_ROOT_PASSWORD": root_password, "MINIO_BROWSER": "off", "MINIO_UPDATE": "off",
             "MINIO_CI_CD": "1"},
        cwd=folder, stop_timeout=20.0)
    context = ssl.create_default_context(cafile=str(folder / "ca.pem"))

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"{endpoint}/minio/health/ready", timeout=3, context=context) as resp:
                return int(resp.status) == 200
        except OSError:
            return False

    proc.start()
    try:
        proc.wait_ready(ready, 60, what="ready over TLS")
    except BaseException:
        proc.stop()
        raise
    return proc
