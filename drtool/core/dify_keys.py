"""Account for every key of a Dify `docker/.env` that names a database, storage, vector store or embedding model.

Why: an operator who points drtool at Dify's .env must be able to see what is protected and what is not. A key
drtool silently ignores (the plugin database, plugin storage, archive storage, a storage backend drtool cannot
read) is a hole in the disaster-recovery plan that nobody notices until the restore. So each key of those families
ends up in exactly one of three states, shown by `drtool config show` and `drtool config check`:

- ``mapped``: it feeds a drtool setting (taken from what `dify_env.map_dify_env` really mapped, so this table
  cannot claim a mapping the code does not do);
- ``read``: drtool reads it to decide what to map (STORAGE_TYPE, OPENDAL_SCHEME, DB_TYPE, ...);
- ``not used``: with the reason (another backend is selected, not covered yet, container-only tuning, ...).

A key that matches a family but none of the specific rules gets ``known=False`` and a generic reason: a key newer
than this table is still listed, never dropped. Pure logic: no I/O, values are never copied into the output
(they may be secrets), only the selector values (storage type, scheme, store, DB type) appear in reasons.

The table itself (families, patterns, reasons) is drtool/core/dify_key_rules.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from drtool.core.dify_key_rules import COMPILED_RULES, KeyContext

FAMILIES: tuple[str, ...] = ("database", "storage", "vector store", "embedding model", "redis")

MAPPED, READ, NOT_USED = "mapped", "read", "not used"


@dataclass(frozen=True)
class KeyAccount:
    """What drtool does with one Dify variable."""

    key: str
    family: str
    status: str  # MAPPED | READ | NOT_USED
    settings: tuple[str, ...]
    reason: str
    known: bool = True  # False: only a family's catch-all matched (a key newer than this table)

    def describe(self) -> str:
        """One line for `config show`: 'mapped to s3.bucket' or 'not used by drtool: <why>'."""
        if self.status == MAPPED:
            text = "mapped to " + ", ".join(self.settings)
            return f"{text} ({self.reason})" if self.reason else text
        if self.status == READ:
            return f"read by drtool: {self.reason}"
        return f"not used by drtool: {self.reason}"


# Variables that dify_env folds into one composite setting rather than mapping one to one.
_COMPOSITE = {"redis.url": ("REDIS_HOST", ("REDIS_PORT", "REDIS_USERNAME", "REDIS_PASSWORD", "REDIS_DB",
                                           "REDIS_USE_SSL"))}


def family_of(key: str) -> str | None:
    """The family a Dify variable belongs to, None when it names no database, storage, vector store or model."""
    for pattern, family, _ in COMPILED_RULES:
        if pattern.fullmatch(key):
            return family
    return None


def account_keys(env: Mapping[str, str], mapped: Mapping[str, tuple[str, str]],
                 consulted: Mapping[str, str] | None = None) -> list[KeyAccount]:
    """Classify every key of `env` that belongs to a family, in file order.

    `mapped` is `DifyMapping.values` (setting -> (value, Dify variable)): what the mapping really did;
    `consulted` is `DifyMapping.consulted` (Dify variable -> the setting it feeds when not empty).
    """
    consulted = consulted or {}
    ctx = KeyContext(
        storage=(env.get("STORAGE_TYPE") or "opendal").strip().lower(),
        scheme=(env.get("OPENDAL_SCHEME") or "fs").strip().lower(),
        store=(env.get("VECTOR_STORE") or "").strip().lower(),
        db_type=(env.get("DB_TYPE") or "postgresql").strip().lower(),
        archive_enabled=(env.get("ARCHIVE_STORAGE_ENABLED") or "").strip().lower() == "true",
        plugin_storage=(env.get("PLUGIN_STORAGE_TYPE") or "local").strip().lower(),
        plugin_in_dify_bucket=_plugin_in_dify_bucket(mapped),
    )
    by_var: dict[str, list[str]] = {}
    for setting, (_, var) in mapped.items():
        by_var.setdefault(var, []).append(setting)
    for setting, (head, parts) in _COMPOSITE.items():
        if setting in mapped and mapped[setting][1] == head:
            for var in parts:
                if var in env:
                    by_var.setdefault(var, []).append(setting)
    out: list[KeyAccount] = []
    for key in env:
        rule = next(((family, reason) for pattern, family, reason in COMPILED_RULES if pattern.fullmatch(key)), None)
        if rule is None:
            continue
        family, reason = rule
        text = reason(ctx, key) if callable(reason) else reason
        known = bool(text)
        if key in by_var:
            # A selector that also feeds a setting (VECTOR_STORE, OPENDAL_SCHEME -> s3.address_style) is mapped.
            out.append(KeyAccount(key, family, MAPPED, tuple(sorted(by_var[key])), "", known))
            continue
        if key in consulted and not (env.get(key) or "").strip():
            text = f"empty here: {consulted[key]} keeps its default or takes another source"
            known = True
        if not text:
            text = "no drtool setting corresponds to it (a Dify variable newer than drtool's table)"
        status = READ if key in ("STORAGE_TYPE", "OPENDAL_SCHEME", "DB_TYPE", "VECTOR_STORE",
                                 "ARCHIVE_STORAGE_ENABLED") else NOT_USED
        out.append(KeyAccount(key, family, status, (), text, known))
    return out


def _plugin_in_dify_bucket(mapped: Mapping[str, tuple[str, str]]) -> bool:
    """What `snapshot create` checks at run time (ops.snapshot.databases.plugin_storage_plan), from the .env."""
    bucket = mapped.get("snapshot.plugin_storage_bucket", ("", ""))[0]
    endpoint = mapped.get("snapshot.plugin_storage_endpoint", ("", ""))[0]
    dify_endpoint = mapped.get("s3.endpoint", ("", ""))[0]
    return bool(bucket) and bucket == mapped.get("s3.bucket", ("", ""))[0] \
        and (not endpoint or endpoint.rstrip("/") == dify_endpoint.rstrip("/")) and "s3.key_prefix" not in mapped


def not_protected(accounts: list[KeyAccount]) -> list[KeyAccount]:
    """The keys whose reason says Dify data is not protected at all (storage or store drtool cannot read)."""
    return [a for a in accounts if a.status != MAPPED and "NOT PROTECTED" in a.reason]
