"""Free TCP ports on the loopback interface.

Every service of the test stack listens on 127.0.0.1 only, on a port the kernel hands out, so several sessions
(other engineers, CI) can run on one machine at once. A port is free when we can bind it; the kernel may hand
the same number out again before the server binds it, so this module also remembers every port it gave out in
this process and never returns one twice (two servers of one session cannot collide with each other).
"""

from __future__ import annotations

import random
import socket
import threading

__all__ = ["free_port", "free_port_containing", "free_port_pair", "free_ports"]

# SeaweedFS opens a gRPC listener at port + 10000 for each of its services: the pair must fit below 65536.
GRPC_OFFSET = 10_000
MAX_PORT_WITH_TWIN = 65_535 - GRPC_OFFSET  # 55535

_handed_out: set[int] = set()
_lock = threading.Lock()


def _bindable(port: int) -> bool:
    """True when a TCP socket can bind 127.0.0.1:port right now (SO_REUSEADDR, as servers do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _kernel_port() -> int:
    """Ask the kernel for an ephemeral port on loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port() -> int:
    """Return a loopback TCP port that is free now and was not handed out before in this process."""
    with _lock:
        for _ in range(1000):
            port = _kernel_port()
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise RuntimeError("could not find a free TCP port on 127.0.0.1 after 1000 tries")


def free_ports(count: int) -> list[int]:
    """Return `count` distinct free ports (see free_port)."""
    return [free_port() for _ in range(count)]


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (what a connect() or bind(0) may take at any moment)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def free_port_pair(offset: int = GRPC_OFFSET) -> int:
    """Return a free port P whose twin P + offset is free too (SeaweedFS's gRPC convention).

    Both are taken below the kernel's ephemeral range when it leaves room (P in 12000..22767 with the default
    32768): a twin chosen inside that range was taken by some process's outgoing connection between this check and
    the server's bind (CI: "bind: address already in use" on a filer's gRPC port). The search starts at a
    pseudo-random point so parallel sessions spread out.
    """
    rng = random.Random()
    low, high = 12_000, min(_ephemeral_low(), 65_536) - offset - 1
    if high - low < 1_000:  # an unusual ephemeral range: search above it as before
        low, high = 20_000, 65_535 - offset
    with _lock:
        for _ in range(2000):
            port = rng.randint(low, high)
            twin = port + offset
            if port in _handed_out or twin in _handed_out:
                continue
            if _bindable(port) and _bindable(twin):
                _handed_out.update((port, twin))
                return port
    raise RuntimeError(f"could not find a free port P with P+{offset} also free on 127.0.0.1")


def free_port_containing(digits: str) -> int:
    """A free port whose number contains `digits` (a proxy on port 10401 catches a "401" matched inside a URL).

    The search starts at a random point of 10000..32767 (below the kernel's ephemeral range, where free_port's
    ports come from) so two sessions on one machine do not both take the first match.
    """
    low, high = 10_000, 32_767
    candidates = [p for p in range(low, high + 1) if digits in str(p)]
    start = random.Random().randrange(len(candidates)) if candidates else 0  # not the seeded global one
    with _lock:
        for port in candidates[start:] + candidates[:start]:
            if port not in _handed_out and _bindable(port):
                _handed_out.add(port)
                return port
    raise RuntimeError(f"no free port containing {digits} on 127.0.0.1")
