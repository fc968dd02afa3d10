"""Which worker of a sharded rebuild stores which chunk (`rebuild-index --shard I/N`, or a Kubernetes Indexed Job).

Pure logic. A chunk belongs to shard `sha256(chunk id) mod N`: the chunk id is the stable `index_node_id`, and
sha256 gives every process, host and Python version the same answer (Python's `hash()` is salted per process),
so a resumed or replaced worker takes exactly the chunks its predecessor took, and the N shards together take
every chunk exactly once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from drtool.errors import UsageError

# Kubernetes sets JOB_COMPLETION_INDEX in every pod of an Indexed Job; JOB_COMPLETIONS is not set by Kubernetes,
# the manifest sets it to the Job's spec.completions (playbooks/scheduling/drtool-rebuild-indexed-job.yaml).
ENV_INDEX = "JOB_COMPLETION_INDEX"
ENV_COUNT = "JOB_COMPLETIONS"
MAX_SHARDS = 1024  # far beyond any useful parallelism; a typo like 3000/30000 is refused instead of planned
PLAN_MAC = "mac"  # the plan's field holding its HMAC (rebuild.shard_plan_key)
MAC_PREFIX = "hmac-sha256:"
MIN_PLAN_KEY_CHARS = 32  # `openssl rand -base64 32` gives 44


@dataclass(frozen=True)
class Shard:
    """Shard `index` (0-based) of `count`."""

    index: int
    count: int

    def owns(self, chunk_id: str) -> bool:
        return shard_of(chunk_id, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def shard_of(chunk_id: str, count: int) -> int:
    """The shard (0..count-1) that stores the chunk with this id: the first 8 bytes of its sha256, mod count."""
    return int.from_bytes(hashlib.sha256(chunk_id.encode("utf-8")).digest()[:8], "big") % count


def live_build(collection: str, build: str, *, by_alias: bool, rename_build: str | None,
               live_target: str | None) -> str | None:
    """Why a shard plan's build collection would be the live one (the words after "the build collection X"), or
    None. The plan lies in a bucket and whoever can write there can rewrite it, so a worker that did not write it
    checks it before storing anything (issue #16). `rename_build`: the one name a store that switches by a rename
    builds under (its build_name, which is fixed), None for another store; `live_target`: the collection that
    `collection` is an alias of, None when it is not an alias.
    """
    if build == collection and (by_alias or rename_build is not None):
        how = "an alias" if by_alias else "a rename"
        return f"is the live collection itself, and this store switches by {how}: a build is never made in place"
    if live_target is not None and build == live_target:
        return f"is what {collection} is an alias of: the collection Dify is querying"
    if rename_build is not None and build != rename_build:
        # Any other name may reach live data: pgvector cuts a longer name to Dify's own table; `_drtool_prev`.
        return f"is not {rename_build}, the only name this store (it switches by a rename) builds under"
    return None


def plan_mac(key: str, plan: Mapping[str, Any]) -> str:
    """The HMAC-SHA256 of a shard plan's canonical JSON (every field but the MAC itself). Every worker of one
    rebuild may author the plan and every one reads it, so they share one secret: a symmetric MAC, not a signature."""
    body = json.dumps({k: v for k, v in plan.items() if k != PLAN_MAC}, sort_keys=True, separators=(",", ":"))
    return MAC_PREFIX + hmac.new(key.encode("utf-8"), body.encode("utf-8"), hashlib.sha256).hexdigest()


def plan_authentication_problem(key: str | None, plan: Mapping[str, Any]) -> str | None:
    """Why a shard plan read from the bucket is not authenticated (the words after "the shard plan X"), or None.
    Without a key nothing is checked (the structural checks, live_build, still run), but a plan that carries a MAC
    is refused: one worker of the Job lacks the secret the others have."""
    mac = plan.get(PLAN_MAC)
    if key is None:
        if mac is None:
            return None
        return "carries a MAC, but this worker has no rebuild.shard_plan_key to check it"
    if not isinstance(mac, str):
        return "is not authenticated: it has no MAC, and rebuild.shard_plan_key is set"
    if not hmac.compare_digest(mac, plan_mac(key, plan)):
        return "has a MAC that rebuild.shard_plan_key does not verify: another key made it, or it was changed"
    return None


def make(index: int, count: int, source: str) -> Shard:
    if not 1 <= count <= MAX_SHARDS:
        raise UsageError(f"{source}: the number of shards must be 1..{MAX_SHARDS}, not {count}")
    if not 0 <= index < count:
        raise UsageError(f"{source}: shard index {index} is outside 0..{count - 1}",
                         hint="shard indexes count from 0, as Kubernetes' JOB_COMPLETION_INDEX does")
    return Shard(index, count)


def parse(text: str, source: str = "--shard") -> Shard:
    """`I/N` as --shard takes it."""
    index, sep, count = text.strip().partition("/")
    if not sep or not index.strip().isdigit() or not count.strip().isdigit():
        raise UsageError(f"{source} {text!r} is not I/N", hint="e.g. --shard 0/4 for the first of four workers")
    return make(int(index), int(count), source)


def resolve(flag: str | None, environ: Mapping[str, str]) -> Shard | None:
    """The flag when given, else the Indexed Job's variables when JOB_COMPLETION_INDEX is set, else None (one
    worker). A pod with the index but without the count is refused: guessing N would split the data wrongly."""
    if flag is not None:
        return parse(flag)
    index = environ.get(ENV_INDEX, "").strip()
    if not index:
        return None
    count = environ.get(ENV_COUNT, "").strip()
    if not count:
        raise UsageError(f"{ENV_INDEX} is set ({index!r}) but {ENV_COUNT} is not",
                         hint=f"set {ENV_COUNT} to the Job's spec.completions in the pod's env, or pass --shard I/N")
    if not index.isdigit() or not count.isdigit():
        raise UsageError(f"{ENV_INDEX}={index!r} / {ENV_COUNT}={count!r} are not whole numbers")
    return make(int(index), int(count), f"{ENV_INDEX}/{ENV_COUNT}")
