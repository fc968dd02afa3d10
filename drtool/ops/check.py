"""`drtool config check`: can drtool reach, and is it allowed to use, every system it is configured for?"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from drtool.config import Settings
from drtool.errors import DrtoolError, ExitCode


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
    from drtool.adapters import embedders, milvus, postgres, redis_cache, s3, weaviate

    def given(prefix: str) -> bool:
        return any(k.startswith(prefix) and settings.is_set(k) for k in settings.sources)

    systems: list[tuple[str, str, Callable[[], dict[str, Any]]]] = []
    if given("postgres."):
        pg = settings.postgres
        systems.append(("postgres", f"{pg.host}:{pg.port}/{pg.database}", lambda: postgres.check(pg)))
    if given("s3.") or settings.storage_problem:
        if settings.storage_problem and not settings.s3.bucket:
            def unreadable() -> dict[str, Any]:
                raise DrtoolError(settings.storage_problem or "")
            systems.append(("object store", "-", unreadable))
        else:
            systems.append(("object store", f"{settings.s3.endpoint or 'AWS S3'}/{settings.s3.bucket}",
                            lambda: s3.check(settings.s3)))
    store = settings.vector.store
    if store == "milvus" or (store is None and settings.milvus.uri):
        systems.append(("milvus", settings.milvus.uri or "-", lambda: milvus.check(settings.milvus)))
    if store == "weaviate" or (store is None and settings.weaviate.endpoint):
        systems.append(("weaviate", settings.weaviate.endpoint or "-", lambda: weaviate.check(settings.weaviate)))
    if given("embedding."):
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
    return results


def overall_exit_code(results: list[SystemCheck]) -> ExitCode:
    """0 when every system answered; otherwise authentication (12) outranks not found (10) and errors (1)."""
    failed = {r.exit_code for r in results if not r.ok}
    for code in (ExitCode.AUTH, ExitCode.NOT_FOUND, ExitCode.USAGE, ExitCode.ERROR):
        if int(code) in failed:
            return code
    return ExitCode.ERROR if failed else ExitCode.OK
