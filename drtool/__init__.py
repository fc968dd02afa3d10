"""drtool: disaster recovery for self-hosted RAG platforms (Postgres + S3 + a vector index)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("drtool")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
