"""Milvus through pymilvus: a server URI or a Milvus Lite file, one code path for both."""

from __future__ import annotations

from typing import Any

from drtool.config import MilvusSettings
from drtool.errors import AuthError, DrtoolError, UnavailableError


def connect(milvus: MilvusSettings) -> Any:
    from pymilvus import MilvusClient

    if not milvus.uri:
        raise UnavailableError("milvus.uri is not set", system="milvus")
    kwargs: dict[str, Any] = {"uri": milvus.uri}
    if milvus.token:
        kwargs["token"] = milvus.token
    elif milvus.user:
        kwargs["user"], kwargs["password"] = milvus.user, milvus.password or ""
    if milvus.database and milvus.database != "default" and "://" in milvus.uri:
        kwargs["db_name"] = milvus.database
    try:
        return MilvusClient(**kwargs)
    except Exception as exc:
        raise translate_error(exc, milvus) from None


def translate_error(exc: Exception, milvus: MilvusSettings) -> DrtoolError:
    text = str(exc)
    system = f"milvus {milvus.uri}"
    if any(s in text.lower() for s in ("auth", "credential", "permission", "unauthenticated", "privilege")):
        return AuthError(f"refused: {text}", hint="check milvus.token or milvus.user/password", system=system)
    return UnavailableError(f"{type(exc).__name__}: {text}", hint="check milvus.uri and that Milvus is running",
                            system=system)


def check(milvus: MilvusSettings) -> dict[str, Any]:
    client = connect(milvus)
    try:
        collections = client.list_collections()
        try:
            version = client.get_server_version()
        except Exception:  # Milvus Lite does not report a version on every release
            version = "lite" if "://" not in (milvus.uri or "") else "unknown"
    except Exception as exc:
        raise translate_error(exc, milvus) from None
    finally:
        client.close()
    return {"version": version, "collections": len(collections)}
