"""The S3 / MinIO policies drtool documents (docs/iam.md), and the rule that says whether a credential's policy is
wider than them.

Pure: no network, no SDK. docs/iam.md shows these policies to people and `tests/security/test_least_privilege.py`
runs every command with exactly them; `tests/audit/test_audit_checks_s3.py` keeps this table and the document's
JSON blocks equal, so the audit compares a credential with the same policies the document and the least-privilege
test use. The audit cannot read docs/iam.md at run time: the document is not installed with the package.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

VERSION = "2012-10-17"
PLACEHOLDERS = ("SOURCE_BUCKET", "SNAPSHOT_BUCKET", "TARGET_BUCKET")
DEFAULT_PREFIX = "drtool/"  # the snapshot.prefix the documented resources are written with


def _st(sid: str, actions: list[str], resources: list[str] | None = None) -> dict[str, Any]:
    st: dict[str, Any] = {"Sid": sid, "Effect": "Allow", "Action": actions}
    if resources is not None:
        st["Resource"] = resources
    return st


_SRC, _SNAP, _TGT = "arn:aws:s3:::SOURCE_BUCKET", "arn:aws:s3:::SNAPSHOT_BUCKET", "arn:aws:s3:::TARGET_BUCKET"
_RW = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
_INSPECT_SOURCE = _st("ListAndInspectSource", ["s3:ListBucket", "s3:GetBucketVersioning",
                                               "s3:GetLifecycleConfiguration"], [_SRC])

# name -> statements, in docs/iam.md's order (each `<!-- iam-policy: NAME -->` block).
POLICIES: dict[str, list[dict[str, Any]]] = {
    "snapshot-create": [
        _INSPECT_SOURCE,
        _st("SnapshotBucket", ["s3:ListBucket"], [_SNAP]),
        _st("WriteSnapshotsAndLock", _RW, [f"{_SNAP}/drtool/*"]),
    ],
    "snapshot-create-object-lock": [
        _INSPECT_SOURCE,
        _st("SnapshotBucket", ["s3:ListBucket", "s3:GetBucketObjectLockConfiguration"], [_SNAP]),
        _st("WriteSnapshotsAndLock", _RW, [f"{_SNAP}/drtool/*"]),
        _st("LockSnapshotArtifacts", ["s3:PutObjectRetention"], [f"{_SNAP}/drtool/snapshots/*"]),
    ],
    "restore": [
        _st("SnapshotBucket", ["s3:ListBucket"], [_SNAP]),
        _st("ReadSnapshotsAndLock", _RW, [f"{_SNAP}/drtool/*"]),
        _st("ReadPinnedVersions", ["s3:GetObject"], [f"{_SRC}/*"]),
        _st("TargetBucket", ["s3:ListBucket"], [_TGT]),
        _st("WriteTargetObjects", ["s3:GetObject", "s3:PutObject"], [f"{_TGT}/*"]),
    ],
    "replication-status": [
        _st("SiteReplicationInfoAndStatus", ["admin:SiteReplicationInfo"]),
        _st("ReplicationBacklog", ["admin:ReplicationDiff"]),
        _st("ListBuckets", ["s3:ListAllMyBuckets"], ["arn:aws:s3:::*"]),
        _st("BucketReplicationSetup", ["s3:GetBucketVersioning", "s3:GetReplicationConfiguration",
                                       "s3:GetLifecycleConfiguration"], ["arn:aws:s3:::*"]),
    ],
    "rebuild-index": [
        _st("ListChunkBucket", ["s3:ListBucket"], [_SRC]),
        _st("ReadChunksAndVectorCache", ["s3:GetObject"], [f"{_SRC}/datasets/*", f"{_SRC}/annotations/*"]),
        _st("WriteVectorCache", ["s3:PutObject"], [f"{_SRC}/datasets/*/processed/vectors/*",
                                                   f"{_SRC}/annotations/*/processed/vectors/*"]),
        _st("LedgerAndLock", _RW, [f"{_SRC}/drtool/rebuild/*"]),
    ],
    "export-chunks": [
        _st("Bucket", ["s3:ListBucket"], [_SRC]),
        _st("ChunkFiles", _RW, [f"{_SRC}/datasets/*/processed/chunks.jsonl*",
                                f"{_SRC}/annotations/*/processed/chunks.jsonl*"]),
        _st("Lock", _RW, [f"{_SRC}/drtool/locks/*"]),
    ],
    "snapshots-verify": [
        _st("SnapshotBucket", ["s3:ListBucket"], [_SNAP]),
        _st("ReadSnapshots", ["s3:GetObject"], [f"{_SNAP}/drtool/*"]),
    ],
    "audit": [
        _st("InspectBuckets", ["s3:ListBucket", "s3:GetBucketVersioning", "s3:GetLifecycleConfiguration",
                               "s3:GetBucketPolicy", "s3:GetEncryptionConfiguration"], [_SRC, _SNAP]),
        _st("SnapshotBucketLock", ["s3:GetBucketObjectLockConfiguration"], [_SNAP]),
        _st("ReadSnapshotsDrillsAndChunkFiles", ["s3:GetObject"], [f"{_SNAP}/drtool/*", f"{_SRC}/datasets/*"]),
        _st("WriteAndMultipartProbes", [*_RW, "s3:AbortMultipartUpload"],
            [f"{_SRC}/drtool/audit/*", f"{_SNAP}/drtool/audit/*"]),
        _st("ServerInfo", ["admin:ServerInfo"]),
    ],
}

_BLOCK = re.compile(r"<!-- iam-policy: (?P<name>[a-z-]+) -->\s*```json\n(?P<body>.*?)\n```", re.S)


def document(name: str) -> dict[str, Any]:
    """One documented policy as a policy document, placeholders still in."""
    return {"Version": VERSION, "Statement": json.loads(json.dumps(POLICIES[name]))}


def parse_policy_blocks(text: str) -> dict[str, str]:
    """The `<!-- iam-policy: NAME -->` JSON blocks of docs/iam.md by name (placeholders still in); each must parse."""
    found = {m["name"]: m["body"] for m in _BLOCK.finditer(text)}
    for body in found.values():
        json.loads(body)
    return found


def render(template: str, **buckets: str) -> dict[str, Any]:
    """A policy template (JSON text) with its bucket placeholders replaced; a placeholder left over is an error."""
    for placeholder, value in buckets.items():
        template = template.replace(placeholder, value)
    if "_BUCKET" in template:
        raise ValueError(f"unreplaced placeholder in {template}")
    return dict(json.loads(template))


def documented_policy(source: str, snapshot: str, *, prefix: str = DEFAULT_PREFIX,
                      names: Iterable[str] | None = None) -> dict[str, Any]:
    """The union of the documented policies (all, or `names`) for these buckets: what one key doing every drtool
    job may hold. A restore's target is taken to be the source bucket (restore in place); `prefix` replaces
    `drtool/` (snapshot.prefix). Sids are dropped: the same Sid appears in several policies."""
    prefix = prefix.strip("/") + "/"
    statements: list[dict[str, Any]] = []
    for name in names or POLICIES:
        text = json.dumps(document(name)).replace("/" + DEFAULT_PREFIX, "/" + prefix)
        for st in render(text, SOURCE_BUCKET=source, SNAPSHOT_BUCKET=snapshot, TARGET_BUCKET=source)["Statement"]:
            st.pop("Sid", None)
            statements.append(st)
    return {"Version": VERSION, "Statement": statements}


# --- is a policy wider than the documented one? ---------------------------------------------------------------

MAX_STATEMENTS = 500  # statements of an effective policy examined; policy text is data, kept bounded
MAX_ITEMS = 200  # actions or resources of one statement examined
MAX_TEXT = 512  # characters of one action or resource compared


@dataclass(frozen=True)
class Excess:
    """What an effective policy allows beyond the documented one: actions drtool never uses (wildcards
    included), and documented actions on resources the documentation does not give them."""

    actions: tuple[str, ...]
    grants: tuple[tuple[str, str], ...]  # (action, resource)
    truncated: bool = False  # the policy was larger than the bounds above: the rest was not examined

    def __bool__(self) -> bool:
        return bool(self.actions or self.grants or self.truncated)


def covers(pattern: str, value: str) -> bool:
    """True when the IAM glob `pattern` (`*` any run, `?` one character) matches everything the glob `value`
    matches: a `*` or `?` in `value` is matched only by a wildcard of `pattern`, so `bucket/*` does not cover
    `*` while `*` covers `bucket/*`."""
    p, v = pattern[:MAX_TEXT], value[:MAX_TEXT]

    @cache
    def at(i: int, j: int) -> bool:
        if i == len(p):
            return j == len(v)
        if p[i] == "*":
            return at(i + 1, j) or (j < len(v) and at(i, j + 1))
        if j == len(v) or v[j] == "*":
            return False
        if p[i] == "?":
            return at(i + 1, j + 1)
        return v[j] == p[i] and at(i + 1, j + 1)

    try:
        return at(0, 0)
    finally:
        at.cache_clear()


def _items(value: Any) -> Iterator[str]:
    values = value if isinstance(value, list) else [value]
    for item in values[:MAX_ITEMS]:
        if isinstance(item, str):
            yield item


def _grants(policy: Mapping[str, Any]) -> Iterator[tuple[str, str | None]]:
    for st in _statements(policy):
        if st.get("Effect") != "Allow":
            continue
        resources = list(_items(st["Resource"])) if "Resource" in st else [None]
        for action in _items(st.get("Action")):
            for resource in resources:
                yield action, resource


def _statements(policy: Mapping[str, Any]) -> list[dict[str, Any]]:
    statements = policy.get("Statement") or []
    if isinstance(statements, dict):
        statements = [statements]
    return [st for st in statements[:MAX_STATEMENTS] if isinstance(st, dict)] if isinstance(statements, list) else []


def excess(effective: Mapping[str, Any], documented: Mapping[str, Any]) -> Excess:
    """What `effective` (a credential's policy, as MinIO's accountinfo returns it) allows beyond `documented`.

    Only Allow statements widen; Deny statements and conditions are not credited (a policy that needs a Deny to be
    narrow is still wider than one that never granted it). NotAction and NotResource grant nearly everything and
    count as the wildcard they stand for. Actions compare case-insensitively, resources case-sensitively, both as
    IAM globs: an effective `s3:Get*` or `arn:aws:s3:::*` is wider unless a documented pattern covers it.
    """
    allowed: dict[str, list[str | None]] = {}
    for action, resource in _grants(documented):
        allowed.setdefault(action.lower(), []).append(resource)
    extra_actions: set[str] = set()
    extra_grants: set[tuple[str, str]] = set()
    statements = _statements(effective)
    raw = effective.get("Statement")
    truncated = isinstance(raw, list) and len(raw) > MAX_STATEMENTS
    for st in statements:
        if st.get("Effect") != "Allow":
            continue
        if "NotAction" in st:
            extra_actions.add("NotAction " + ",".join(_items(st["NotAction"])))
            continue
        if "NotResource" in st:
            extra_grants.update((a, "NotResource " + ",".join(_items(st["NotResource"])))
                                for a in _items(st.get("Action")))
            continue
        resources = list(_items(st["Resource"])) if "Resource" in st else [None]
        for action in _items(st.get("Action")):
            matching = [r for a, rs in allowed.items() if covers(a, action.lower()) for r in rs]
            if not matching:
                extra_actions.add(action)
                continue
            if not action.lower().startswith("s3:"):
                continue  # admin:/kms: actions are not scoped by resource
            for resource in resources:
                r = resource if resource is not None else "*"
                if not any(m is not None and covers(m, r) for m in matching):
                    extra_grants.add((action, r))
    return Excess(tuple(sorted(extra_actions)), tuple(sorted(extra_grants)), truncated)
