"""`drtool snapshots verify`: is a snapshot sound? Signature, checksums, confinement of every record, and with
--deep every pinned version still there and every dump readable by pg_restore. The outcome goes to verified.json."""

from __future__ import annotations

import json
import logging
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from drtool import wiring
from drtool.adapters import postgres as pga
from drtool.config import Settings
from drtool.core import manifest as mf
from drtool.errors import NotFoundError, VerificationFailed
from drtool.ops.snapshot import stores as snapshot_stores
from drtool.ops.snapshot.auth import authenticate
from drtool.ops.snapshot.catalog import (
    DecryptingReader,
    SnapshotInfo,
    bounded_map,
    check_object,
    confinement_problems,
    iter_records,
    open_artifact,
    plaintext,
)
from drtool.ops.snapshot.destination import Destination, destination_store

log = logging.getLogger("drtool.snapshot")


def verify(settings: Settings, dest: Destination, info: SnapshotInfo, *, deep: bool,
           identities: list[Any] | None, expect_digest: str | None = None) -> list[str]:
    """What is broken in a snapshot (empty when it is sound); records the outcome in verified.json.

    First whether a trusted key signed it (ops.snapshot.auth; `info.authentication` holds the outcome), then the
    checksums; a manifest readable without the age identity is also checked for records that would make a restore
    write or copy outside their place (core.manifest.confinement_problem)."""
    broken: list[str] = []
    try:
        sums = authenticate(settings, dest, info, expect_digest=expect_digest).sums
    except VerificationFailed as exc:
        sums = {}
        broken.append(exc.message)
    manifest_name = info.meta.get("artifacts", {}).get("manifest", mf.MANIFEST)
    try:  # issue 13: the extra stores' manifests, each confined to its store's prefixes
        stores = {s["artifact"]: s for s in snapshot_stores.sections(info)}
    except VerificationFailed as exc:
        stores = {}
        broken.append(exc.message)
    for name in stores:
        if sums and name not in sums:
            broken.append(f"{name}: missing from {mf.SUMS}")
    for name, digest in sums.items():
        confinement: list[str] = []
        try:
            reader = open_artifact(dest, info.id, name)
            if name == manifest_name and not info.encrypted:
                confinement = confinement_problems(dest, info, mf.read_manifest(reader), name)
            elif name in stores and not info.encrypted:
                confinement = snapshot_stores.confinement_problems(stores[name], mf.read_manifest(reader))
            reader.drain()
        except NotFoundError:
            broken.append(f"{name}: missing")
            continue
        if reader.sha256.hexdigest() != digest:
            broken.append(f"{name}: checksum mismatch (corrupted or truncated, {reader.size} bytes)")
        else:
            broken += confinement
    if deep and not broken:
        broken += _verify_deep(settings, dest, info, identities, sums)
    record = {"at": datetime.now(UTC).isoformat(), "ok": not broken, "deep": deep, "broken": broken[:100],
              "broken_count": len(broken)}
    try:
        destination_store(dest).put(dest.folder(info.id) + mf.VERIFIED, json.dumps(record, indent=1).encode(),
                                    content_type="binary/octet-stream")
    except Exception as exc:
        log.warning("could not record the verification outcome: %s", exc)
    return broken



def _verify_deep(settings: Settings, dest: Destination, info: SnapshotInfo, identities: list[Any] | None,
                 sums: dict[str, str] | None = None) -> list[str]:
    broken: list[str] = []
    source = info.meta.get("source", {})
    bucket = source.get("bucket") or settings.s3.bucket
    client = wiring.s3_client(settings.s3)
    name = info.meta.get("artifacts", {}).get("manifest", mf.MANIFEST)
    records, raw = iter_records(dest, info, identities)
    folder = dest.folder(info.id)
    key_prefix = str(source.get("key_prefix") or "")
    confinement: list[str] = []
    tampered = 0

    def pinned() -> Iterator[mf.ManifestRecord]:
        # A record that is not confined is reported, never looked up: its key is not this snapshot's to probe.
        nonlocal tampered
        for r in records:
            problem = mf.confinement_problem(r, snapshot_folder=folder, key_prefix=key_prefix)
            if problem:
                tampered += 1
                if len(confinement) < 20:
                    confinement.append(f"{name}: tampered record: {problem}")
            elif r.state == mf.STATE_PINNED:
                yield r

    try:
        for problem in bounded_map(lambda r: check_object(
                dest.client if r.copy_key else client, dest.bucket if r.copy_key else bucket, r),
                pinned(), settings.snapshot.workers):
            if problem:
                broken.append(problem)
        raw.drain()
        if sums is not None and raw.sha256.hexdigest() != sums.get(name):
            broken.append(f"{name}: checksum mismatch (it changed while verify read it)")
    except ValueError as exc:
        broken.append(f"{name}: {exc}")
    broken[:0] = confinement + ([f"{name}: {tampered - 20} more tampered record(s)"] if tampered > 20 else [])
    problem = _dump_readable(settings, dest, info, identities)
    if problem:
        broken.append(problem)
    plugin = info.meta.get("plugin_database")  # issue 13: the plugin daemon's dump, checked like the main one
    if isinstance(plugin, dict):
        plugin_name = info.meta.get("artifacts", {}).get("plugin_dump")
        problem = _dump_readable(settings, dest, info, identities, name=plugin_name,
                                 major=int(plugin.get("pg_dump_major") or 0) or None) if plugin_name else \
            "meta.json records a plugin database but no plugin dump"
        if problem:
            broken.append(problem)
    broken += snapshot_stores.verify_deep(settings, dest, info, identities, sums)
    return broken


def _dump_readable(settings: Settings, dest: Destination, info: SnapshotInfo, identities: list[Any] | None, *,
                   name: str | None = None, major: int | None = None) -> str | None:
    """`pg_restore --list` over the streamed dump (the main one, or `name`): proves its table of contents is
    readable."""
    if name is None:
        name = info.meta.get("artifacts", {}).get("dump", mf.DUMP)
        major = int(info.meta.get("database", {}).get("pg_dump_major") or 0) or None
    tool = pga.find_pg_tool("pg_restore", server_major=major, bin_dir=settings.snapshot.pg_bin_dir, min_major=major)
    if major:  # a client too old for the archive is a setting to fix, not a damaged snapshot
        pga.check_pg_restore_reads(tool, major)
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen([tool, "--list"], stdin=subprocess.PIPE, stdout=out, stderr=subprocess.PIPE)
        raw = open_artifact(dest, info.id, name)
        stream = plaintext(raw, info, identities, f"{info.id}/{name}")
        assert proc.stdin is not None
        try:
            while chunk := stream.read(1 << 20):
                proc.stdin.write(chunk)
            proc.stdin.close()
        except BrokenPipeError:
            pass
        if isinstance(stream, DecryptingReader):
            stream.finish()
        assert proc.stderr is not None
        err = proc.stderr.read()  # not communicate(): it flushes stdin, which is already closed
        proc.stderr.close()
        proc.wait()
        if proc.returncode != 0:
            text = err.decode("utf-8", "replace").strip().splitlines()
            return f"{name}: pg_restore cannot read it ({text[-1] if text else 'exit ' + str(proc.returncode)})"
    return None
