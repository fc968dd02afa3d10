"""Shopify's toxiproxy between drtool and a real server, to inject network faults (tests/network).

toxiproxy is a TCP proxy with an HTTP control API: each proxy listens on a port of its own and forwards to one
upstream ``host:port``; "toxics" added to a proxy alter the traffic (latency, a reset, a stall, a bandwidth cap,
a connection cut after N bytes). The server is built from its Go module like MinIO and Weaviate (build.py) and is
driven with plain httpx calls against its documented REST API, so no client package is needed.

Two ways to make a server "stop answering", because drtool must survive both:
- ``proxy.disable()``: the listener closes and open connections drop; new connections are REFUSED at once.
- ``proxy.blackhole()``: a ``timeout`` toxic with timeout 0: connections are accepted but no byte ever comes back
  (a hung server, a firewall that drops packets). Only client-side timeouts get a caller out of this one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.stack.build import ensure_go_binary
from tests.stack.ports import free_port
from tests.stack.process import ManagedProcess, StackStartError
from tests.stack.versions import TOXIPROXY

__all__ = ["Proxy", "Toxiproxy", "external_toxiproxy", "local_toxiproxy"]

READY_TIMEOUT_S = 30.0


@dataclass
class Proxy:
    """One toxiproxy proxy: clients connect to ``listen_host:listen_port``, traffic goes on to `upstream`."""

    api: Toxiproxy
    name: str
    upstream: str
    listen_host: str
    listen_port: int
    _timers: list[threading.Timer] = field(default_factory=list, repr=False)

    @property
    def listen(self) -> str:
        """``host:port`` that clients use instead of the upstream's."""
        return f"{self.listen_host}:{self.listen_port}"

    def url(self, scheme: str = "http", path: str = "") -> str:
        """A URL through the proxy, e.g. ``proxy.url(path="/v1")``."""
        return f"{scheme}://{self.listen}{path}"

    def add_toxic(self, kind: str, *, stream: str = "downstream", toxicity: float = 1.0, name: str | None = None,
                  **attributes: Any) -> str:
        """Add a toxic (latency, reset_peer, timeout, bandwidth, limit_data, slow_close, slicer); returns its name.

        `stream` is the direction it affects: downstream = server -> client (answers), upstream = client -> server.
        """
        toxic = name or f"{kind}_{stream}"
        self.api.request("POST", f"/proxies/{self.name}/toxics", json={
            "name": toxic, "type": kind, "stream": stream, "toxicity": toxicity, "attributes": attributes,
        })
        return toxic

    def remove_toxic(self, name: str) -> None:
        self.api.request("DELETE", f"/proxies/{self.name}/toxics/{name}", ok=(204, 404))

    def toxics(self) -> list[dict[str, Any]]:
        return list(self.api.request("GET", f"/proxies/{self.name}/toxics").json())

    def clear(self) -> None:
        """Remove every toxic and enable the proxy again."""
        for toxic in self.toxics():
            self.remove_toxic(str(toxic["name"]))
        self.enable()

    # --- the faults the network tests use, by name -----------------------------------------------------------

    def latency(self, ms: int, jitter_ms: int = 0, stream: str = "downstream") -> str:
        return self.add_toxic("latency", stream=stream, latency=ms, jitter=jitter_ms)

    def reset_peer(self, after_ms: int = 0, stream: str = "downstream", toxicity: float = 1.0) -> str:
        """Every connection is reset (TCP RST) `after_ms` after data starts flowing."""
        return self.add_toxic("reset_peer", stream=stream, toxicity=toxicity, timeout=after_ms)

    def timeout(self, after_ms: int, stream: str = "downstream") -> str:
        """Data stops; the connection closes after `after_ms` (0 = never: see blackhole)."""
        return self.add_toxic("timeout", stream=stream, timeout=after_ms)

    def blackhole(self) -> str:
        """Accept connections, never answer, never close: a hung server."""
        return self.add_toxic("timeout", stream="upstream", name="blackhole", timeout=0)

    def bandwidth(self, kb_per_s: int, stream: str = "downstream") -> str:
        return self.add_toxic("bandwidth", stream=stream, rate=kb_per_s)

    def limit_data(self, nbytes: int, stream: str = "downstream") -> str:
        """Close each connection once `nbytes` have gone through it: a cut mid-transfer."""
        return self.add_toxic("limit_data", stream=stream, bytes=nbytes)

    def slow_close(self, delay_ms: int, stream: str = "downstream") -> str:
        return self.add_toxic("slow_close", stream=stream, delay=delay_ms)

    def disable(self) -> None:
        """Close the listener and every open connection: new connections are refused."""
        self.api.request("POST", f"/proxies/{self.name}", json={"enabled": False})

    def enable(self) -> None:
        self.api.request("POST", f"/proxies/{self.name}", json={"enabled": True})

    def later(self, seconds: float, action: Any, *args: Any) -> threading.Timer:
        """Run ``action(*args)`` (e.g. ``proxy.remove_toxic``, ``proxy.enable``) from a timer thread: the fault
        clears while the command under test is still running."""
        timer = threading.Timer(seconds, action, args)
        timer.daemon = True
        self._timers.append(timer)
        timer.start()
        return timer

    def cancel_timers(self) -> None:
        for timer in self._timers:
            timer.cancel()
            timer.join(timeout=10)
        self._timers.clear()


@dataclass
class Toxiproxy:
    """A running toxiproxy server (API at `api_url`) and the proxies created through this object."""

    api_url: str
    listen_host: str = "127.0.0.1"
    proxies: dict[str, Proxy] = field(default_factory=dict)

    def request(self, method: str, path: str, *, json: Any = None, ok: tuple[int, ...] = (200, 201, 204)
                ) -> httpx.Response:
        response = httpx.request(method, self.api_url + path, json=json, timeout=10)
        if response.status_code not in ok:
            raise RuntimeError(f"toxiproxy {method} {path}: HTTP {response.status_code}: {response.text[:300]}")
        return response

    def version(self) -> str:
        return self.request("GET", "/version").text.strip()

    def proxy(self, name: str, upstream: str, *, port: int | None = None) -> Proxy:
        """A proxy to `upstream` (``host:port``) on `port` or a free loopback port; an existing one of that name
        is replaced."""
        self.request("DELETE", f"/proxies/{name}", ok=(204, 404))
        port = port or free_port()
        self.request("POST", "/proxies", json={
            "name": name, "listen": f"{self.listen_host}:{port}", "upstream": upstream, "enabled": True,
        })
        proxy = Proxy(api=self, name=name, upstream=upstream, listen_host=self.listen_host, listen_port=port)
        self.proxies[name] = proxy
        return proxy

    def reset(self) -> None:
        """Between tests: stop pending timers, remove every toxic, enable every proxy (POST /reset).

        A proxy whose port another process took while the proxy was disabled cannot be enabled again; it is
        deleted (the next `proxy(name, ...)` makes it afresh) so that one lost port fails at most the tests that use
        that proxy, not every test after it.
        """
        for proxy in self.proxies.values():
            proxy.cancel_timers()
        try:
            self.request("POST", "/reset")
        except RuntimeError:
            for name, proxy in list(self.proxies.items()):
                try:
                    proxy.clear()
                except RuntimeError:
                    self.request("DELETE", f"/proxies/{name}", ok=(204, 404))
                    self.proxies.pop(name)

    def delete_all(self) -> None:
        for name in list(self.proxies):
            self.request("DELETE", f"/proxies/{name}", ok=(204, 404))
            self.proxies.pop(name)


def _ready(api_url: str) -> bool:
    return httpx.get(api_url + "/version", timeout=2).status_code == 200


@contextmanager
def local_toxiproxy(workdir: Path, *, ready_timeout: float = READY_TIMEOUT_S) -> Iterator[Toxiproxy]:
    """Run toxiproxy's server on loopback for the duration of the block."""
    binary = ensure_go_binary(TOXIPROXY)
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    proc = ManagedProcess(
        name=f"toxiproxy {TOXIPROXY.version} on 127.0.0.1:{port}",
        argv=[str(binary), "-host", "127.0.0.1", "-port", str(port)],
        log_path=workdir / "toxiproxy.log",
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(workdir), "LOG_LEVEL": "warn"},
        cwd=workdir,
        stop_timeout=10.0,
    )
    api_url = f"http://127.0.0.1:{port}"
    try:
        proc.start()
        proc.wait_ready(lambda: _ready(api_url), ready_timeout, what="ready (GET /version = 200)")
        yield Toxiproxy(api_url=api_url)
    finally:
        proc.stop()


def external_toxiproxy(api_url: str) -> Toxiproxy:
    """An existing toxiproxy (DRTOOL_TEST_TOXIPROXY_URL); its proxies must be able to listen on 127.0.0.1."""
    api_url = api_url.rstrip("/")
    try:
        ok = _ready(api_url)
    except httpx.HTTPError as exc:
        raise StackStartError(f"DRTOOL_TEST_TOXIPROXY_URL={api_url} does not answer GET /version: {exc}") from exc
    if not ok:
        raise StackStartError(f"DRTOOL_TEST_TOXIPROXY_URL={api_url}: GET /version did not answer 200")
    return Toxiproxy(api_url=api_url)
