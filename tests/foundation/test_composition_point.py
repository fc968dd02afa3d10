"""Adapters are built in one place, drtool/wiring.py (issue #17, docs/architecture.md).

Commands and operations take the adapters they talk to from a wiring function, so "where is X built?" has one
answer and a new adapter is wired once. This test reads every module of drtool/ops/ and drtool/cli/ (syntax tree,
so comments and docstrings do not count), resolves each call through the module's imports (aliases, function-body
imports and the defining module included) and fails on a call of an adapter constructor or factory of CONSTRUCTORS.
Using an adapter is not constructing one: `pga.connect(...)`, `s3a.put_bytes(client, ...)`, `store.at(bucket)` and
the stream wrappers (MultipartWriter, EncryptingWriter) stay where they are.
"""

from __future__ import annotations

import ast
import importlib
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from drtool import wiring

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "drtool"

# The adapter's own constructor or factory -> the wiring function to call instead.
CONSTRUCTORS = {
    "drtool.adapters.s3.BucketStore": "bucket_store / dify_bucket",
    "drtool.adapters.s3.BucketStore.over": "bucket_over",
    "drtool.adapters.s3.make_client": "s3_client",
    "drtool.adapters.s3.make_anonymous_client": "anonymous_s3_client",
    "drtool.adapters.minio_admin.MinioAdmin": "minio_admin",
    "drtool.adapters.dify_metadata.DifyReader": "dify_reader",
    "drtool.adapters.dify_embedding_cache.DifyMetadata": "dify_metadata",
    "drtool.adapters.dify_embedding_cache.DifyEmbeddingCache": "dify_metadata",  # then .cache(model, provider)
    "drtool.adapters.vector_stores.open_store": "vector_store",
    "drtool.adapters.milvus.MilvusTarget": "vector_store",
    "drtool.adapters.milvus.connect": "vector_store",
    "drtool.adapters.weaviate.WeaviateTarget": "vector_store",
    "drtool.adapters.pgvector.PgvectorTarget": "vector_store",
    "drtool.adapters.pgvector.connect": "vector_store",
    "drtool.adapters.embedders.make_embedder": "embedder",
    "drtool.adapters.embedders.OpenAIEmbedder": "embedder",
    "drtool.adapters.embedders.LocalEmbedder": "embedder",
    "drtool.adapters.redis_cache.connect": "redis_client",
}

# Modules (fnmatch patterns below drtool/) still building adapters themselves, each with its reason. Port one,
# delete its line; test_allowed_modules_still_need_it fails on a line that allows nothing any more.
ALLOWED: dict[str, str] = {}


def resolve(dotted: str) -> Any:
    """The object a dotted name stands for (module, then attributes), None when there is none."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr, None)
            if obj is None:
                return None
        return getattr(obj, "__func__", obj)  # a classmethod reached through its class: the function itself
    return None


TARGETS = {id(resolve(name)): name for name in CONSTRUCTORS}


def imported_names(tree: ast.AST) -> dict[str, str]:
    """Local name -> what it was imported as, from every import of the module (function bodies included)."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    names[alias.asname] = alias.name
                else:
                    names[alias.name.split(".")[0]] = alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.update({a.asname or a.name: f"{node.module}.{a.name}" for a in node.names})
    return names


def dotted(node: ast.expr) -> list[str] | None:
    """`a.b.c` as ["a", "b", "c"]; None for anything but names and attributes."""
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Attribute) and (base := dotted(node.value)) is not None:
        return [*base, node.attr]
    return None


def constructions(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    names = imported_names(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or (parts := dotted(node.func)) is None or parts[0] not in names:
            continue
        full = ".".join([names[parts[0]], *parts[1:]])
        if full.startswith("drtool.adapters.") and (name := TARGETS.get(id(resolve(full)))):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node.func)}(...) builds an adapter;"
                         f" call drtool.wiring.{CONSTRUCTORS[name]} instead")
    return found


def scan() -> dict[str, list[str]]:
    """Module (path below drtool/) -> its construction sites, for every module of ops/ and cli/."""
    files = sorted([*(PACKAGE / "ops").rglob("*.py"), *(PACKAGE / "cli").rglob("*.py")])
    return {p.relative_to(PACKAGE).as_posix(): constructions(p) for p in files}


def allowed(module: str) -> bool:
    return any(fnmatch(module, pattern) for pattern in ALLOWED)


def test_the_table_names_real_constructors_and_wiring_functions() -> None:
    assert all(resolve(name) is not None for name in CONSTRUCTORS), "an adapter name in CONSTRUCTORS moved"
    assert len(TARGETS) == len(CONSTRUCTORS)
    for replacement in CONSTRUCTORS.values():
        for function in replacement.split(" / "):
            assert callable(getattr(wiring, function, None)), f"drtool.wiring has no {function}"


def test_ops_and_cli_build_no_adapter() -> None:
    found = [site for module, sites in scan().items() if not allowed(module) for site in sites]
    assert not found, "\n".join(found)


def test_allowed_modules_still_need_it() -> None:
    found = scan()
    stale = [pattern for pattern in ALLOWED
             if not any(sites for module, sites in found.items() if fnmatch(module, pattern))]
    assert not stale, f"these allow nothing any more, delete them from ALLOWED: {stale}"


def test_wiring_imports_only_config_adapters_and_core() -> None:
    tree = ast.parse((PACKAGE / "wiring.py").read_text(encoding="utf-8"))
    modules = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    modules += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    wrong = [m for m in modules if m.split(".")[0] == "drtool"
             and not m.startswith(("drtool.config", "drtool.adapters", "drtool.core"))]
    assert not wrong, wrong
