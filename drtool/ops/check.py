"""`drtool config check`: can drtool reach, and is it allowed to use, every system it is configured for?"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from drtool.adapters import embedders, postgres, redis_cache, s3, vector_stores
from drtool.config import Settings
from drtool.core.dify_keys import NOT_USED, not_protected
from drtool.errors import DrtoolError, ExitCode
from drtool.ops.check_destination import check_snapshot_destination, destination_target, extra_store_targets


@dataclass(frozen=True)
class SystemCheck:
    system: str
    target: str
    ok: bool
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None
    exit_code: int = 0


def configured_systems(settings: Settings) -> list[tuple[str, str, Callable[[], dict[str, Any]]]]:
    """The systems whose settings the operator gave (any source but the defaults)."""

    def given(prefix: str) -> bool:
        return any(k.startswith(prefix) and settings.is_set(k) for k in settings.sources)

    systems: list[tuple[str, str, Callable[[], dict[str, Any]]]] = []
    if given("postgres."):
        pg = settings.postgres
        systems.append(("postgres", f"{pg.host}:{pg.port}/{pg.database}", lambda: postgres.check(pg)))
    # Dify storage drtool cannot read is reported by unprotected_findings (exit 3), never probed as if it were S3.
    if given("s3."):
        systems.append(("object store", f"{settings.s3.endpoint or 'AWS S3'}/{settings.s3.bucket}",
                        lambda: s3.check(settings.s3)))
    if given("s3.") or given("snapshot."):
        # Where `snapshot create` writes: a missing or read-only destination fails here, not at 2 a.m.
        systems.append(("snapshot bucket", destination_target(settings),
                        lambda: check_snapshot_destination(settings)))
        systems.extend(extra_store_targets(settings))  # plugin storage elsewhere, archive storage (issue 13)
    # The chosen vector store (vector.store), or with none chosen every one whose connection is configured.
    for backend in vector_stores.to_check(settings):
        systems.append((backend.name, backend.location(settings) or "-", functools.partial(backend.check, settings)))
    # The embedding model rebuilds would use, the default included, whenever a rebuild could run (a vector store).
    if given("embedding.") or vector_stores.to_check(settings):
        emb = settings.embedding
        target = emb.base_url if emb.provider == "openai" else (emb.model or "bundled model")
        systems.append((f"embedding ({emb.provider})", target or "-", lambda: embedders.check(emb)))
    if settings.redis.url:
        url = settings.redis.url
        systems.append(("redis", url, lambda: redis_cache.check(url)))
    return systems


def check_systems(settings: Settings) -> list[SystemCheck]:
    results = []
    for system, target, probe in configured_systems(settings):
        started = time.monotonic()
        try:
            details = probe()
        except DrtoolError as exc:
            results.append(SystemCheck(system, target, False, time.monotonic() - started,
                                       problem=str(exc), exit_code=int(exc.exit_code)))
        except Exception as exc:  # an SDK error the adapter did not classify: still a per-system finding
            results.append(SystemCheck(system, target, False, time.monotonic() - started,
                                       problem=f"{type(exc).__name__}: {exc}", exit_code=int(ExitCode.ERROR)))
        else:
            results.append(SystemCheck(system, target, True, time.monotonic() - started, details=details))
    return results + unprotected_findings(settings)


# What a family of Dify data is called in the check's table when drtool cannot protect it.
_UNPROTECTED_SYSTEM = {"storage": "dify files", "database": "dify database", "vector store": "dify vector index"}


def _unprotected_system(key: str, family: str) -> str | None:
    """The row a not-protected key is reported under: the plugin daemon's data apart from Dify's own."""
    if key == "DB_PLUGIN_DATABASE":
        return "dify plugin database"
    if key.startswith("PLUGIN_"):
        return "dify plugin storage"
    return _UNPROTECTED_SYSTEM.get(family)


def unprotected_findings(settings: Settings) -> list[SystemCheck]:
    """One WARNING (exit 3) per kind of Dify data the .env puts where drtool cannot read it.

    Why: a Dify on local disk or Azure Blob, or a vector store drtool cannot rebuild, used to be skipped in
    silence or fail as an unreachable "object store"; the operator must read "not protected" instead.
    """
    findings: list[SystemCheck] = []
    seen: set[str] = set()
    for account in not_protected(list(settings.dify_keys)):
        system = _unprotected_system(account.key, account.family)
        if system is None or system in seen:
            continue
        seen.add(system)
        keys = [a.key for a in not_protected(list(settings.dify_keys))
                if _unprotected_system(a.key, a.family) == system]
        findings.append(SystemCheck(system, f"dify-env:{account.key}", False, 0.0,
                                    details={"keys": keys, "status": NOT_USED},
                                    problem=f"not protected: {account.reason}", exit_code=int(ExitCode.DEGRADED)))
    if settings.storage_problem and "dify files" not in seen:  # a mapping problem dify_keys did not classify
        findings.append(SystemCheck("dify files", "dify-env", False, 0.0, problem=f"not protected: "
                                    f"{settings.storage_problem}", exit_code=int(ExitCode.DEGRADED)))
    return findings


def overall_exit_code(results: list[SystemCheck]) -> ExitCode:
    """0 when every system answered; otherwise authentication (12) outranks not found (10), usage (2) and errors
    (1); data drtool cannot protect, with everything else fine, is a warning (3)."""
    failed = {r.exit_code for r in results if not r.ok}
    for code in (ExitCode.AUTH, ExitCode.NOT_FOUND, ExitCode.USAGE, ExitCode.ERROR, ExitCode.DEGRADED):
        if int(code) in failed:
            return code
    return ExitCode.ERROR if failed else ExitCode.OK
