"""Waiting for a MinIO pair to be whole again: tests elsewhere stop and start site B of the session's pair, and
MinIO marks the peer online only some seconds after it answers."""

from __future__ import annotations

import time
from typing import Any

from drtool.adapters.minio_admin import MinioAdmin
from drtool.core.replication_verdict.site_answers import offline_peers
from drtool.errors import DrtoolError


def peers_online(pair: Any) -> bool:
    """Both sites answer site-replication status and name no peer offline (drtool's own reading of it)."""
    for site in (pair.a, pair.b):
        admin = MinioAdmin(site.alias, site.endpoint, site.access_key, site.secret_key)
        try:
            if offline_peers(admin.status()):
                return False
        except DrtoolError:
            return False
        finally:
            admin.close()
    return True


def wait_peers_online(pair: Any, timeout: float = 180.0) -> None:
    """Return once both sites see their peer online; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not peers_online(pair):
        if time.monotonic() > deadline:
            raise AssertionError(f"the MinIO pair still names a peer offline after {timeout:g} s")
        time.sleep(2)
