"""The last step of a rebuild: switch the gated build in under the name Dify queries (or roll back to the previous
collection), drop the checkpoint, and clear Dify's `vector_indexing_*` Redis key so Dify reads the new index."""

from __future__ import annotations

from drtool.core.events import Emit
from drtool.core.ports import VectorStore
from drtool.ops.rebuild.ledger import Ledger
from drtool.ops.rebuild.options import DatasetReport
from drtool.ops.rebuild.plan import Plan


def finish_switch(target: VectorStore, plan: Plan, report: DatasetReport, ledger: Ledger, build: str, *,
                  drop_old: bool, redis_url: str | None, emit: Emit) -> None:
    """Switch `build` in (or notice that an interrupted run already did), then delete the checkpoint."""
    collection = plan.collection
    if build == collection:  # a checkpoint of a version that built in place when nothing was there
        report.switch = f"built in place as {collection} (no previous collection)"
        target.load(collection)
    elif target.switch_is_rename and not target.exists(build) and target.exists(collection):
        # Killed after the rename and before the checkpoint was deleted: renaming again would move the new
        # collection aside and leave the name empty.
        report.switch = f"{build} -> {collection} (done before the interruption)"
        target.load(collection)
    else:
        ledger.save(phase="switching")
        report.switch = target.switch(collection, build, drop_old=drop_old)
    ledger.delete()
    report.redis_keys_deleted = clear_redis(redis_url, collection)
    report.status = "rebuilt"
    emit({"event": "rebuild.switched", "dataset": plan.dataset_id, "switch": report.switch,
          "redis_keys_deleted": report.redis_keys_deleted})


def clear_redis(redis_url: str | None, collection: str) -> list[str]:
    """Dify's indexing keys of `collection`; none when no Redis is configured."""
    if not redis_url:
        return []
    from drtool.adapters.redis_cache import delete_indexing_keys  # why: the redis SDK only when Redis is configured

    return delete_indexing_keys(redis_url, [collection])


def roll_back(target: VectorStore, plan: Plan, report: DatasetReport, *, redis_url: str | None, emit: Emit) -> None:
    """`--rollback`: the previous collection back under the name Dify queries."""
    collection = plan.collection
    report.switch = target.rollback(collection)
    report.mode = "rollback"
    report.redis_keys_deleted = clear_redis(redis_url, collection)
    report.status = "rolled back"
    emit({"event": "rebuild.rolled_back", "dataset": plan.dataset_id, "switch": report.switch})
