"""verify, file references: every `upload_files.key` and `tool_files.file_key` names an existing object (HEAD,
s3.key_prefix applied), or, with --snapshot, the version that snapshot pinned (what a restore from it needs)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from drtool.adapters import s3 as s3_adapter
from drtool.adapters.age import load_identities
from drtool.adapters.dify_metadata import FileRef
from drtool.config import Settings
from drtool.core import manifest as mf
from drtool.errors import KeyRefusedError
from drtool.ops.snapshot.auth import authenticate
from drtool.ops.snapshot.catalog import bounded_map, iter_records, resolve
from drtool.ops.snapshot.destination import open_destination
from drtool.ops.verify.report import FilesVerdict, Findings, VerifyOptions


def verify_files(refs: Iterator[FileRef], store: s3_adapter.BucketStore, findings: Findings,
                 workers: int, *, on_checked: Callable[[int], None] | None = None) -> FilesVerdict:
    verdict = FilesVerdict()

    def head(ref: FileRef) -> tuple[FileRef, bool, str | None]:
        """(row, object exists, why the key was refused). A key the server refuses (400: `..`, too long, ...) names
        no object either: a break of that row, not the end of the run."""
        try:
            return ref, store.head(ref.key) is not None, None
        except KeyRefusedError as exc:
            return ref, False, f"the object store refused the key ({exc.reason})"

    for ref, exists, refused in bounded_map(head, refs, workers):
        verdict.checked += 1
        if on_checked is not None:
            on_checked(verdict.checked)
        verdict.by_table[ref.table] = verdict.by_table.get(ref.table, 0) + 1
        if not exists:
            verdict.missing += 1
            findings.add("missing_object", table=ref.table, row_id=ref.row_id, key=ref.key, url=store.url(ref.key),
                         tenant_id=ref.tenant_id, **({"problem": refused} if refused else {}))
    return verdict


def verify_files_at_snapshot(settings: Settings, options: VerifyOptions, refs: Iterator[FileRef],
                             store: s3_adapter.BucketStore, findings: Findings, *,
                             on_checked: Callable[[int], None] | None = None) -> FilesVerdict:
    """Each referenced key must be pinned in the snapshot's manifest, and that exact version must still exist.

    This is what a restore from the snapshot will need: the current object may have changed or gone since.
    """
    dest = open_destination(settings)
    info = resolve(dest, str(options.snapshot))
    # A forged manifest could claim pins that do not exist and hide what a restore would miss: trust it only once
    # authenticated, as restore and drill do (exit 4 when a trusted key is configured and it does not verify).
    auth = authenticate(settings, dest, info)
    identities = load_identities(options.identity) if options.identity else None
    source_bucket = str(info.meta.get("source", {}).get("bucket") or store.bucket)
    prefix = str(info.meta.get("source", {}).get("key_prefix", store.prefix) or "")
    source = store.at(source_bucket)  # manifest keys are whole keys of the snapshot's source bucket
    records, _raw = iter_records(dest, info, identities)
    pinned: dict[str, mf.ManifestRecord] = {rec.key: rec for rec in records if rec.referenced_by}
    verdict = FilesVerdict(snapshot=info.id, snapshot_authenticated=auth.authenticated)

    def check(ref: FileRef) -> tuple[FileRef, str | None]:
        rec = pinned.get(prefix + ref.key)
        if rec is None:
            return ref, "not in the snapshot's manifest (the row is newer than the snapshot)"
        if rec.state != mf.STATE_PINNED:
            return ref, f"snapshot state {rec.state}" + (f": {rec.reason}" if rec.reason else "")
        version = None if rec.copy_key else rec.version_id
        try:
            head = source.head(rec.copy_key or rec.key, version_id=version)
        except KeyRefusedError:  # a key the server refuses: a break of this row, not of the run
            return ref, "the object store refused the key (400)"
        if head is None:
            return ref, f"pinned version {rec.version_id} is gone"
        if rec.size is not None and head.get("ContentLength") != rec.size:
            return ref, f"pinned version {rec.version_id} has {head.get('ContentLength')} bytes, not {rec.size}"
        return ref, None

    for ref, problem in bounded_map(check, refs, options.workers):
        verdict.checked += 1
        if on_checked is not None:
            on_checked(verdict.checked)
        verdict.by_table[ref.table] = verdict.by_table.get(ref.table, 0) + 1
        if problem:
            verdict.missing += 1
            rec = pinned.get(prefix + ref.key)
            findings.add("missing_object", table=ref.table, row_id=ref.row_id, key=ref.key, snapshot=info.id,
                         version_id=rec.version_id if rec else None, problem=problem)
    return verdict
