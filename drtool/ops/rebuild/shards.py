"""A sharded `rebuild-index`: N workers (`--shard I/N`, or a Kubernetes Indexed Job) each embed and insert their
part of every dataset into one shared build collection, and `--finalize` gates and switches it once.

Objects, next to the single-worker ledger `<ledger_prefix>/<backend>/<collection>.json`:

    <collection>.shards/plan.json       the shared plan: build name, mode, N, chunk file ETag, model, dimension;
                                        written once with a conditional PUT (If-None-Match) by the first worker,
                                        read by every other one, so all write into the same build collection
    <collection>.shards/shard-<I>.json  shard I's checkpoint ledger (the single-worker ledger's format)
    <collection>.shards/shard-<I>.lock  shard I's run lock: two workers with one index never both write

A chunk belongs to shard sha256(id) mod N (drtool/core/shards.py). A resumed shard deletes the batch after its
checkpoint by doc_id before inserting it again, as a single-worker resume does; the other shards never touch
those ids. N is fixed by the plan: a worker started with another N is refused (exit 2), since its part would
overlap parts already stored by the old N's workers. Finalize refuses (exit 2, naming them) while a shard has not
finished, then reuses the single-worker gate and switch: count against every valid chunk, self-retrieval, Dify's
query, blue/green switch, Redis keys; the plan and shard ledgers are removed just before the switch.
"""

from __future__ import annotations

import inspect
import json
import logging
import time
from dataclasses import replace
from typing import Any

from drtool.adapters import s3
from drtool.core.chunks import Chunk
from drtool.core.events import Emit
from drtool.core.ports import VectorStore
from drtool.core.shards import MIN_PLAN_KEY_CHARS, PLAN_MAC, Shard, live_build, plan_authentication_problem, plan_mac
from drtool.errors import ConfigError, DrtoolError, NotFoundError, PreconditionFailed, UsageError
from drtool.ops.lock import store_lock
from drtool.ops.rebuild.ledger import Ledger
from drtool.ops.rebuild.options import ChunkFileRefused, DatasetReport
from drtool.ops.rebuild.plan import Plan
from drtool.ops.rebuild.rebuilder import Rebuilder

log = logging.getLogger("drtool.rebuild")

PLAN_VERSION = 1
MAX_PLAN_BYTES = 64 * 1024  # a plan is a few hundred bytes; anything bigger under its key is not ours
CREATE_WAIT_S = 60.0  # how long a worker waits for the plan's author to create the build collection


class ShardsUnfinished(UsageError):
    """--finalize while a shard has not finished: like a run facing an unfinished checkpoint, exit 2."""


def shards_folder(ledger_prefix: str, backend: str, collection: str) -> str:
    return f"{ledger_prefix.rstrip('/')}/{backend}/{collection}.shards/"


def put_if_absent(store: Any, key: str, body: bytes) -> bool:
    """Create `key` only if nothing is there (If-None-Match: *); False when another worker was first. Through the
    object-store port's conditional put where the store has it, else the S3 adapter's (the port is being adopted:
    drtool/core/ports.py ObjectStore)."""
    if "if_none_match" in inspect.signature(store.put).parameters:
        try:
            store.put(key, body, content_type="application/json", if_none_match=True)
            return True
        except PreconditionFailed:
            return False
    return s3.put_if_absent(store.client, store.bucket, store.prefix + key, body)


class ShardPlan:
    """The plan every worker of one collection's sharded rebuild shares. With `mac_key` (rebuild.shard_plan_key) the
    author adds an HMAC and the other workers and --finalize refuse a plan it does not verify."""

    def __init__(self, store: Any, ledger_prefix: str, backend: str, collection: str, *,
                 mac_key: str | None) -> None:
        if mac_key is not None and len(mac_key) < MIN_PLAN_KEY_CHARS:
            raise ConfigError(f"rebuild.shard_plan_key is {len(mac_key)} characters; at least "
                              f"{MIN_PLAN_KEY_CHARS} are needed", hint="make one with `openssl rand -base64 32`")
        self.store, self.collection, self.mac_key = store, collection, mac_key
        self.folder = shards_folder(ledger_prefix, backend, collection)
        self.key = self.folder + "plan.json"
        self.ledger_prefix, self.backend = ledger_prefix, backend

    def load(self) -> dict[str, Any] | None:
        raw = self.store.get(self.key, byte_range=(0, MAX_PLAN_BYTES))
        if raw is None:
            return None
        try:
            data = json.loads(raw) if len(raw) <= MAX_PLAN_BYTES else None
        except (ValueError, RecursionError):
            data = None
        build = data.get("build") if isinstance(data, dict) else None
        # The build name decides where vectors go: a plan naming anything but this collection or a build of it
        # (drtool's `_drtool_` names) is not ours, whoever wrote it.
        if (not isinstance(data, dict) or data.get("version") != PLAN_VERSION or not isinstance(build, str)
                or not (build == self.collection or build.startswith(self.collection + "_drtool_"))
                or not isinstance(data.get("shards"), int)):
            raise UsageError(f"shard plan {self.store.url(self.key)} is not a plan drtool wrote",
                             hint=f"remove the objects under {self.store.url(self.folder)} and the build "
                                  "collection, then start the shards again")
        return data

    def refuse_untrusted(self, target: VectorStore, data: dict[str, Any], dataset_id: str, emit: Emit) -> None:
        """Exit 2 before anything is stored when a plan this process did not write is not authenticated by
        rebuild.shard_plan_key, or would build into the collection Dify queries (drtool.core.shards.live_build):
        the bucket's writers are not trusted with the live index."""
        build = data["build"]
        unauthenticated = plan_authentication_problem(self.mac_key, data)
        if unauthenticated is not None:
            why, what = unauthenticated, f"it {unauthenticated}"
        else:
            why = live_build(self.collection, build, by_alias=target.switches_by_alias,
                             rename_build=target.build_name(self.collection) if target.switch_is_rename else None,
                             live_target=target.alias_target(self.collection))
            if why is None:
                return
            what = f"its build collection {build} {why}. drtool never writes such a plan"
        emit({"event": "rebuild.shard_plan_refused", "dataset": dataset_id, "collection": self.collection,
              "build": build, "plan": self.store.url(self.key), "reason": why})
        raise UsageError(f"refusing the shard plan {self.store.url(self.key)}: {what}, so this worker stores "
                         "nothing from it",
                         hint=f"if every worker has the same rebuild.shard_plan_key, someone who can write to "
                              f"{self.store.url('')} made or changed the plan: find out who, then remove the objects "
                              f"under {self.store.url(self.folder)} and start the shards again (this run stored "
                              f"nothing in {target.describe()})")

    def create(self, data: dict[str, Any]) -> bool:
        plan = {**data, "version": PLAN_VERSION, "created_at": time.time()}
        if self.mac_key is not None:
            plan[PLAN_MAC] = plan_mac(self.mac_key, plan)
        return put_if_absent(self.store, self.key, json.dumps(plan, sort_keys=True).encode())

    def ledger(self, index: int) -> Ledger:
        return Ledger(self.store, self.ledger_prefix, self.backend, f"{self.collection}.shards/shard-{index}")

    def remove(self, shards: int) -> None:
        for i in range(shards):
            self.ledger(i).delete()
        self.store.delete(self.key)


def shard_plan(rebuilder: Rebuilder, collection: str) -> ShardPlan:
    """The shard plan of `collection` in the rebuilder's ledger folder, with its settings' plan key."""
    assert rebuilder.target is not None
    return ShardPlan(rebuilder.store, rebuilder.rs.ledger_prefix, rebuilder.target.backend, collection,
                     mac_key=rebuilder.rs.shard_plan_key)


def check_plan(rebuilder: Rebuilder, plan: Plan, shared: dict[str, Any], dim: int, where: str) -> None:
    """The plan still describes this chunk file, model and dimension: otherwise the shards' parts would not add
    up to one index."""
    for key, want in (("chunk_key", plan.chunk_key), ("chunk_etag", plan.chunk_etag),
                      ("model_id", rebuilder.embedder.model_id), ("dimension", dim)):
        if shared.get(key) != want:
            raise UsageError(f"{where}: {key} changed since the shard plan was made ({shared.get(key)!r} -> "
                             f"{want!r})", hint="see docs/rebuild-index.md, 'Sharded rebuild': start over")


class ShardedRebuilder(Rebuilder):
    """One worker of a sharded rebuild: stores its shard of every dataset into the plan's build collection; no
    gate, no switch (that is --finalize's, once, on the whole collection)."""

    def __init__(self, *args: Any, shard: Shard, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.shard = shard

    def run(self) -> list[DatasetReport]:
        if self.target is not None and getattr(self.target, "single_process", False):
            raise UsageError(f"--shard needs a vector store several processes can write at once; "
                             f"{self.target.describe()} is a Milvus Lite file, which one process opens",
                             hint="rebuild without --shard, or point milvus.uri at a Milvus server")
        return super().run()

    def _mine(self, chunk: Chunk) -> bool:
        return self.shard.owns(chunk.id)

    def _run_lock(self, plan: Plan) -> Any:
        """Shard I's own lock: workers of other indexes run side by side; a second worker of this one exits 11."""
        assert self.target is not None
        folder = shards_folder(self.rs.ledger_prefix, self.target.backend, plan.collection)
        return store_lock(self.store, f"{folder}shard-{self.shard.index}.lock", holder=f"rebuild-index shard "
                          f"{self.shard}", stale_after_s=self.settings.snapshot.lock_stale_after,
                          break_stale=self.options.break_stale_lock, emit=self.emit)

    def rebuild(self, plan: Plan, report: DatasetReport) -> None:
        target = self.target
        assert target is not None
        t0 = time.monotonic()
        dim = self.dimension(plan)
        dify_cache = self.dify_cache_for(plan)
        plans = shard_plan(self, plan.collection)
        shared, authored = plans.load(), False
        if shared is None:
            shared, authored = self._propose(plan, plans, dim, dify_cache)
        if not authored:
            plans.refuse_untrusted(target, shared, plan.dataset_id, self.emit)
        if shared["shards"] != self.shard.count:
            raise UsageError(f"the sharded rebuild of {plan.collection} was planned for {shared['shards']} shards; "
                             f"this worker is shard {self.shard}",
                             hint=f"run it with the same number of shards (--shard {self.shard.index}/"
                                  f"{shared['shards']}), or start over (docs/rebuild-index.md, 'Sharded rebuild')")
        check_plan(self, plan, shared, dim, f"shard {self.shard} of {plan.collection}")
        build, mode = shared["build"], shared["mode"]
        ledger = plans.ledger(self.shard.index)
        state = ledger.load()
        resume_line = 0
        if state is not None:
            if not self.options.resume:
                raise UsageError(f"shard {self.shard} of {plan.collection} has a checkpoint at "
                                 f"{self.store.url(ledger.key)} (line {state.get('lines_done', 0)})",
                                 hint="rerun it with --resume to finish it")
            if state.get("build") != build or state.get("shards") != self.shard.count:
                raise UsageError(f"the checkpoint {self.store.url(ledger.key)} belongs to another shard plan",
                                 hint="see docs/rebuild-index.md, 'Sharded rebuild': start over")
            if state.get("phase") == "built":
                report.mode, report.build_collection, report.status = f"shard {self.shard}", build, "shard built"
                self.emit({"event": "rebuild.shard_built", "dataset": plan.dataset_id, "shard": self.shard.index,
                           "shards": self.shard.count, "build": build, "inserted": 0, "already": True})
                return
            resume_line = int(state.get("lines_done", 0))
            report.resumed_from_line = resume_line
            self.emit({"event": "rebuild.resumed", "dataset": plan.dataset_id, "collection": build,
                       "line": resume_line, "shard": self.shard.index})
        else:
            ledger.data = {"dataset_id": plan.dataset_id, "collection": plan.collection, "build": build,
                           "mode": mode, "shard": self.shard.index, "shards": self.shard.count, "lines_done": 0,
                           "phase": "building", "started_at": time.time()}
            ledger.save()
        self._ensure_build(build, dim, authored)
        report.mode, report.build_collection = f"shard {self.shard}", build
        self.emit({"event": "rebuild.shard_started", "dataset": plan.dataset_id, "collection": plan.collection,
                   "build": build, "mode": mode, "shard": self.shard.index, "shards": self.shard.count})
        report.stage_seconds["plan"] = time.monotonic() - t0
        try:
            self._build(plan, report, ledger, build, dim, dify_cache, resume_line, resuming=state is not None)
        except ChunkFileRefused:
            ledger.delete()  # every shard refuses the same file; nothing of this shard is worth resuming
            raise
        report.status = "shard built"
        self.emit({"event": "rebuild.shard_built", "dataset": plan.dataset_id, "shard": self.shard.index,
                   "shards": self.shard.count, "build": build, "inserted": report.inserted, "already": False})

    def _propose(self, plan: Plan, plans: ShardPlan, dim: int, dify_cache: Any) -> tuple[dict[str, Any], bool]:
        """Decide the build name and mode as a single-worker rebuild would, and publish them with a conditional
        write; (the plan in force, whether this worker wrote it). The author writes the plan before it creates
        anything, so whatever another worker sees created already has a plan to read."""
        target = self.target
        assert target is not None
        exists = target.exists(plan.collection)
        beside = exists or target.switches_by_alias or target.switch_is_rename
        build = target.build_name(plan.collection) if beside else plan.collection
        mode = ("blue-green" if exists else "new alias" if target.switches_by_alias
                else "new" if beside else "in-place")
        data = {"dataset_id": plan.dataset_id, "collection": plan.collection, "build": build, "mode": mode,
                "shards": self.shard.count, "chunk_key": plan.chunk_key, "chunk_etag": plan.chunk_etag,
                "model_id": self.embedder.model_id, "dimension": dim}
        again = plans.load()  # another worker may have published while we looked
        if again is not None:
            return again, False
        self.check_dimensions(plan, dim, dify_cache)
        if exists and not self.options.yes:
            needed = target.confirm_needed(plan.collection)
            if needed:
                raise UsageError(needed, hint="add --yes to confirm, or rebuild into another vector store")
        single = Ledger(self.store, self.rs.ledger_prefix, target.backend, plan.collection)
        if single.store.head(single.key) is not None:
            raise UsageError(f"an interrupted single-worker rebuild of {plan.collection} has a checkpoint at "
                             f"{self.store.url(single.key)}",
                             hint="finish it without --shard (--resume), or discard it (--force), first")
        if build != plan.collection and target.exists(build):
            raise UsageError(f"collection {build} already exists and no shard plan explains it",
                             hint="drop it (or rebuild once without --shard and with --force), then start the "
                                  "shards again")
        if plans.create(data):
            self.emit({"event": "rebuild.shard_plan", "dataset": plan.dataset_id, "collection": plan.collection,
                       "build": build, "mode": mode, "shards": self.shard.count})
            return data, True
        won = plans.load()
        if won is None:
            raise UsageError(f"the shard plan {self.store.url(plans.key)} was removed while this worker started",
                             hint="a finalize or a cleanup ran at the same time: start the shard again")
        return won, False

    def _ensure_build(self, build: str, dim: int, authored: bool) -> None:
        """The plan's author creates the build collection; the others wait for it (concurrent creation of one
        collection is not safe on every store), and create it themselves only when the author died first."""
        target = self.target
        assert target is not None
        if target.exists(build):
            return
        if not authored:
            deadline = time.monotonic() + CREATE_WAIT_S
            while time.monotonic() < deadline:
                time.sleep(0.5)
                if target.exists(build):
                    return
        try:
            target.create(build, dim)
        except DrtoolError:
            if not target.exists(build):  # another worker created it at the same moment: fine
                raise


class ShardFinalizer(Rebuilder):
    """`rebuild-index --finalize`: once every shard is built, the single-worker gate and switch on the whole build
    collection. Holds the collection's run lock (the single-worker one): a single-worker rebuild cannot overlap."""

    def dataset_ids(self) -> list[str]:
        """With --all: the datasets a sharded rebuild is pending for (a shard plan, or a finalize's checkpoint);
        the others are skipped with an event, so a finalize Job retried after finishing some datasets passes.
        A named --dataset without a plan still fails (exit 10)."""
        ids = super().dataset_ids()
        if not self.options.all_datasets or self.target is None:
            return ids
        pending = []
        for dataset_id in ids:
            try:
                collection = self.plan(dataset_id).collection
            except DrtoolError:
                pending.append(dataset_id)  # run() reports why it cannot be planned
                continue
            plans = shard_plan(self, collection)
            single = Ledger(self.store, self.rs.ledger_prefix, self.target.backend, collection)
            if self.store.head(plans.key) is not None or self.store.head(single.key) is not None:
                pending.append(dataset_id)
            else:
                self.emit({"event": "rebuild.dataset_skipped", "dataset": dataset_id,
                           "reason": "no sharded rebuild to finalize"})
        if not pending:
            raise NotFoundError(f"no sharded rebuild to finalize under {self.store.url(self.rs.ledger_prefix)}",
                                hint="run the shard workers first (--shard I/N or an Indexed Job)")
        return pending

    def rebuild(self, plan: Plan, report: DatasetReport) -> None:
        target = self.target
        assert target is not None
        plans = shard_plan(self, plan.collection)
        ledger = Ledger(self.store, self.rs.ledger_prefix, target.backend, plan.collection)
        shared = plans.load()
        if shared is None:
            state = ledger.load()
            if state is not None and state.get("sharded"):
                # A finalize killed after removing the plan (just before or during its switch): its checkpoint
                # is a single-worker one at phase built/switching, which --resume finishes.
                self.options = replace(self.options, resume=True, force=False)
                return super().rebuild(plan, report)
            raise NotFoundError(f"no sharded rebuild of {plan.collection} to finalize (no shard plan at "
                                f"{self.store.url(plans.key)})",
                                hint="run the shard workers first (--shard I/N or an Indexed Job)")
        plans.refuse_untrusted(target, shared, plan.dataset_id, self.emit)  # a switch from it would drop data
        dim = self.dimension(plan)
        dify_cache = self.dify_cache_for(plan)
        check_plan(self, plan, shared, dim, f"finalize {plan.collection}")
        n = int(shared["shards"])
        unfinished: list[str] = []
        late = 0
        for i in range(n):
            state = plans.ledger(i).load()
            if state is None:
                unfinished.append(f"{i} (not started)")
            elif state.get("phase") != "built":
                unfinished.append(f"{i} (at line {state.get('lines_done', 0)})")
            else:
                late += int(state.get("late_rejected", 0))
        if unfinished:
            raise ShardsUnfinished(f"cannot finalize {plan.collection}: {len(unfinished)} of {n} shard(s) not "
                                   f"finished: {', '.join(unfinished)}",
                                   hint="finish each one (rerun it with its index and --resume), then finalize")
        build, mode = shared["build"], shared["mode"]
        if not target.exists(build):
            raise UsageError(f"cannot finalize: the build collection {build} of the shard plan is gone",
                             hint="see docs/rebuild-index.md, 'Sharded rebuild': start over")
        self._shards = (plans, n)
        report.mode, report.build_collection = mode, build
        # The single-worker checkpoint, at phase "built" with every line done: re-reading the file below counts
        # the valid chunks and draws the gate's sample without storing anything, exactly as a single-worker resume
        # after a kill during verification does.
        ledger.data = {"dataset_id": plan.dataset_id, "collection": plan.collection, "build": build, "mode": mode,
                       "chunk_key": plan.chunk_key, "chunk_etag": plan.chunk_etag,
                       "model_id": self.embedder.model_id, "dimension": dim, "lines_done": 1 << 62,
                       "late_rejected": late, "phase": "built", "sharded": n, "started_at": time.time()}
        ledger.save()
        self.emit({"event": "rebuild.finalizing", "dataset": plan.dataset_id, "collection": plan.collection,
                   "build": build, "mode": mode, "shards": n})
        self._build(plan, report, ledger, build, dim, dify_cache, 1 << 62, resuming=False)
        self._verify_and_switch(plan, report, ledger, build, dim, dify_cache)

    def _finish_switch(self, plan: Plan, report: DatasetReport, ledger: Ledger, build: str) -> None:
        """The gate passed: drop the shard plan and ledgers first (the single-worker checkpoint now stands for
        them, so a kill from here on is finished by --finalize or --resume), then switch as a single worker."""
        shards = getattr(self, "_shards", None)
        if shards is not None:
            plans, n = shards
            plans.remove(n)
        super()._finish_switch(plan, report, ledger, build)
