"""A client of the test stack's Weaviate (tests.stack.weaviate_server), as the tests read what Dify would read.
What a test creates there is deleted after it by the stack plugin's isolation fixture."""

from __future__ import annotations

from typing import Any

import weaviate


def connect(server: Any) -> Any:
    """A v4 client of `server` (REST and gRPC on loopback, anonymous); close it when done."""
    return weaviate.connect_to_custom(http_host=server.host, http_port=server.http_port, http_secure=False,
                                      grpc_host=server.host, grpc_port=server.grpc_port, grpc_secure=False)
