"""Which collection Dify queries for a dataset, and the names drtool gives the collections it builds beside it."""

from __future__ import annotations

import json
import re
from typing import Any

from drtool.errors import UsageError

_VALID = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DIFY_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
BUILD_SUFFIX = "_drtool_build"
PREVIOUS_SUFFIX = "_drtool_prev"


def dify_collection_name(dataset_id: str, prefix: str = "Vector_index") -> str:
    """Dify's rule (Dataset.gen_collection_name_by_id): `<prefix>_<id with - as _>_Node`."""
    name = f"{prefix}_{dataset_id.replace('-', '_')}_Node"
    if not _VALID.match(name):
        raise UsageError(f"dataset id {dataset_id!r} with prefix {prefix!r} gives an invalid collection name {name!r}",
                         hint="check --dataset and vector.index_prefix")
    return name


def is_dify_id(text: str) -> bool:
    """A dataset or app id as Dify writes it: a lowercase canonical UUID.

    Folder names read from a bucket listing are data, and whoever can write to the bucket chooses them: only a name
    of this shape is taken for a dataset or an app.
    """
    return bool(_DIFY_ID.fullmatch(text))


def from_index_struct(index_struct: str | dict[str, Any] | None) -> tuple[str | None, str | None]:
    """(backend type, class_prefix) from `datasets.index_struct`; (None, None) when it is empty or unusable."""
    if not index_struct:
        return None, None
    try:
        data = json.loads(index_struct) if isinstance(index_struct, str) else index_struct
    except json.JSONDecodeError:
        return None, None
    if not isinstance(data, dict):
        return None, None
    store = data.get("vector_store") or {}
    prefix = store.get("class_prefix") if isinstance(store, dict) else None
    kind = data.get("type")
    return (kind if isinstance(kind, str) else None), (prefix if isinstance(prefix, str) and prefix else None)


def multi_tenant(index_struct: str | dict[str, Any] | None) -> str | None:
    """The tenant of a dataset Dify keeps in a shared multi-tenant Weaviate collection (WEAVIATE_MULTI_TENANCY_ENABLED
    when it was created: `vector_store.multi_tenant` true, `tenant` = the dataset id by default), else None."""
    if not index_struct:
        return None
    try:
        data = json.loads(index_struct) if isinstance(index_struct, str) else index_struct
    except json.JSONDecodeError:
        return None
    store = data.get("vector_store") if isinstance(data, dict) else None
    if not isinstance(store, dict) or store.get("multi_tenant") is not True:
        return None
    tenant = store.get("tenant")
    return str(tenant) if tenant else ""


def build_name(collection: str) -> str:
    return collection + BUILD_SUFFIX


def previous_name(collection: str) -> str:
    return collection + PREVIOUS_SUFFIX
