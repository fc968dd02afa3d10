"""The replication sites: which they are, and an S3 client, a store or the admin API for each one.

Every replication command talks to each site on its own endpoint with the replication credentials (falling back
to the s3 section's), and names the site, not the s3 section, when one fails.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from drtool import wiring
from drtool.adapters import s3 as s3_adapter
from drtool.adapters.minio_admin import MinioAdmin
from drtool.config import Settings
from drtool.core.ports import ObjectStore
from drtool.core.replication_verdict.site_answers import SiteAnswer
from drtool.errors import ConfigError, DrtoolError

__all__ = [
    "Site",
    "admin_for",
    "configured_sites",
    "credentials",
    "parse_sites",
    "self_and_peers",
    "site_client",
    "site_error",
    "site_store",
    "tls_verify",
]


@dataclass(frozen=True)
class Site:
    alias: str
    endpoint: str


def parse_sites(items: Iterable[str]) -> list[Site]:
    """`ALIAS=URL` items (each whole: the list setting replication.sites or --site flags) -> sites, aliases
    unique."""
    sites: list[Site] = []
    for item in filter(None, (str(raw).strip() for raw in items)):
        alias, sep, url = item.partition("=")
        if not sep or not alias.strip() or not url.strip().startswith(("http://", "https://")):
            raise ConfigError(f"invalid site '{item}': expected ALIAS=URL, e.g. dr=https://minio-dr:9000")
        if any(s.alias == alias.strip() for s in sites):
            raise ConfigError(f"site alias '{alias.strip()}' is given twice")
        sites.append(Site(alias.strip(), url.strip().rstrip("/")))
    return sites


def configured_sites(settings: Settings, flags: Sequence[str] = ()) -> list[Site]:
    """Sites from --site flags, else replication.sites; at least one is needed."""
    sites = parse_sites(flags) if flags else parse_sites(settings.replication.sites)
    if not sites:
        raise ConfigError("no replication site is configured",
                          hint="pass --site ALIAS=URL (repeatable) or set replication.sites / "
                               "DRTOOL_REPLICATION_SITES='a=http://minio-a:9000,b=http://minio-b:9000'")
    return sites


def credentials(settings: Settings) -> tuple[str | None, str | None]:
    rep = settings.replication
    if rep.access_key:
        return rep.access_key, rep.secret_key
    return settings.s3.access_key, settings.s3.secret_key


def tls_verify(settings: Settings) -> bool | str:
    s3 = settings.s3
    return s3.ca_bundle if (s3.ca_bundle and s3.verify_tls) else s3.verify_tls


def site_client(settings: Settings, site: Site, *, max_attempts: int = 3) -> Any:
    """An S3 client for one site: the s3 section's TLS settings, the replication credentials, path-style."""
    access, secret = credentials(settings)
    s3 = dataclasses.replace(settings.s3, endpoint=site.endpoint, access_key=access, secret_key=secret,
                             address_style="path" if settings.s3.address_style == "auto" else settings.s3.address_style)
    timeout = settings.replication.timeout
    return wiring.s3_client(s3, max_attempts=max_attempts, connect_timeout=min(timeout, 10), read_timeout=timeout)


def site_store(settings: Settings, site: Site, bucket: str, *, max_attempts: int = 3) -> ObjectStore:
    """One bucket of one site as the ObjectStore port (keys whole), on a site_client."""
    return wiring.bucket_over(site_client(settings, site, max_attempts=max_attempts), bucket)


def site_error(exc: BaseException, site: Site, what: str) -> DrtoolError:
    """An S3 failure as a drtool error that names the site (alias and URL), not the s3 section's endpoint."""
    err = exc if isinstance(exc, DrtoolError) else s3_adapter.translate_error(exc,  # type: ignore[arg-type]
                                                                                what=what, endpoint=site.endpoint)
    err.system = f"site {site.alias} ({site.endpoint})"
    if err.hint and "s3.endpoint" in err.hint:
        err.hint = err.hint.replace("s3.endpoint", f"site {site.alias}'s URL (--site / replication.sites)")
    return err


def admin_for(settings: Settings, site: Site) -> MinioAdmin:
    access, secret = credentials(settings)
    return wiring.minio_admin(site.alias, site.endpoint, access, secret, region=settings.s3.region,
                              verify=tls_verify(settings), timeout=settings.replication.timeout)


def self_and_peers(answer: SiteAnswer) -> tuple[str | None, dict[str, str]]:
    """This site's deploymentID and its peers (deploymentID -> name), from the site's own info."""
    info = answer.info or {}
    me = info.get("name")
    self_id = None
    peers: dict[str, str] = {}
    for peer in info.get("sites") or []:
        dep = peer.get("deploymentID") or ""
        if peer.get("name") == me:
            self_id = dep
        else:  # a peer with no name, endpoint nor id still counts, and its name must sort with the others
            peers[dep] = peer.get("name") or peer.get("endpoint") or dep or "(unnamed site)"
    return self_id, peers
