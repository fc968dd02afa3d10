"""drtool.core.dify_key_rules: the table that says, per Dify .env key, which family it is in and why drtool does
not use it.

Direct tests of the table itself (dify_keys.account_keys is tested in tests/foundation/test_dify_env_accounting.py):
first match wins, so a specific rule must never be shadowed by an earlier pattern; catch-alls list a key newer than
the table with an empty reason; reasons follow the selectors and say NOT PROTECTED exactly when data is lost.
"""

from __future__ import annotations

import re

import pytest

from drtool.core.dify_key_rules import (
    COMPILED_RULES,
    REBUILDABLE_STORES,
    UNREADABLE_STORAGE,
    KeyContext,
)
from drtool.core.ports import VECTOR_STORES

S3 = KeyContext(storage="s3", scheme="fs", store="weaviate", db_type="postgresql", archive_enabled=False)


def reason_for(key: str, ctx: KeyContext = S3) -> tuple[str, str] | None:
    """(family, reason text) of the first rule matching `key`, as dify_keys.account_keys applies it."""
    for pattern, family, reason in COMPILED_RULES:
        if pattern.fullmatch(key):
            return family, reason(ctx, key) if callable(reason) else reason
    return None


def text_of(key: str, ctx: KeyContext = S3) -> str:
    rule = reason_for(key, ctx)
    assert rule is not None, key
    return rule[1]


def test_no_rule_for_a_single_key_is_shadowed_by_an_earlier_pattern() -> None:
    literal = [(i, p.pattern) for i, (p, _, _) in enumerate(COMPILED_RULES) if re.fullmatch(r"[A-Z0-9_]+", p.pattern)]
    assert len(literal) > 10
    for index, key in literal:
        first = next(i for i, (p, _, _) in enumerate(COMPILED_RULES) if p.fullmatch(key))
        assert first == index, f"{key} is taken by {COMPILED_RULES[first][0].pattern!r} first"


@pytest.mark.parametrize(("key", "family"), [
    ("DB_SOMETHING_NEW", "database"), ("REDIS_NEW_OPTION", "redis"), ("FOO_VECTOR_BAR", "vector store"),
    ("NEW_STORAGE_THING", "storage"), ("X_BUCKET_NAME", "storage"), ("MY_EMBEDDING_MODEL", "embedding model"),
])
def test_a_key_newer_than_the_table_falls_to_its_familys_catch_all(key: str, family: str) -> None:
    assert reason_for(key) == (family, "")


@pytest.mark.parametrize("key", ["LOG_LEVEL", "SECRET_KEY", "CONSOLE_WEB_URL", "db_host"])
def test_a_key_of_no_family_matches_no_rule(key: str) -> None:
    assert reason_for(key) is None


def test_the_storage_selector_says_not_protected_only_for_storage_drtool_cannot_read() -> None:
    assert "NOT PROTECTED" not in text_of("STORAGE_TYPE", S3)
    for storage in sorted(UNREADABLE_STORAGE):
        ctx = KeyContext(storage=storage, scheme="fs", store="", db_type="postgresql", archive_enabled=False)
        assert "NOT PROTECTED" in text_of("STORAGE_TYPE", ctx), storage
    local = KeyContext(storage="local", scheme="fs", store="", db_type="postgresql", archive_enabled=False)
    assert text_of("STORAGE_TYPE", local) == (
        "STORAGE_TYPE=local: drtool cannot read this storage: Dify's files are NOT PROTECTED")


def test_a_providers_keys_are_a_hole_only_when_that_provider_is_selected() -> None:
    azure = KeyContext(storage="azure-blob", scheme="fs", store="", db_type="postgresql", archive_enabled=False)
    assert reason_for("AZURE_BLOB_ACCOUNT_NAME", S3) == (
        "storage", "read by Dify only when STORAGE_TYPE=azure-blob (STORAGE_TYPE=s3 here)")
    assert reason_for("AZURE_BLOB_ACCOUNT_NAME", azure) == (
        "storage", "Dify stores its files in azure-blob, which drtool cannot read: NOT PROTECTED")


def test_an_opendal_s3_root_left_empty_keeps_the_bucket_root() -> None:
    opendal_s3 = KeyContext(storage="opendal", scheme="s3", store="", db_type="postgresql", archive_enabled=False)
    assert reason_for("OPENDAL_S3_ROOT", opendal_s3) == (
        "storage", "empty here: s3.key_prefix stays empty (Dify's objects are at the bucket root)")
    assert "OPENDAL_SCHEME=s3" in reason_for("OPENDAL_S3_ROOT", S3)[1]


def test_the_vector_selector_names_what_drtool_rebuilds() -> None:
    assert frozenset(VECTOR_STORES) == REBUILDABLE_STORES
    qdrant = KeyContext(storage="s3", scheme="fs", store="qdrant", db_type="postgresql", archive_enabled=False)
    text = text_of("VECTOR_STORE", qdrant)
    assert "NOT PROTECTED" in text
    assert all(store in text for store in VECTOR_STORES)
    assert "NOT PROTECTED" not in text_of("VECTOR_STORE", S3)
    assert "NOT PROTECTED" in text_of("QDRANT_URL", qdrant)
    assert "NOT PROTECTED" not in text_of("QDRANT_URL", S3)
