"""`drtool audit`: drtool's own state: the newest snapshot (age against the RPO, signature), the last passed drill,
the chunk files of every high-quality dataset, and the rebuild model against each dataset's model.
"""

from __future__ import annotations

from datetime import datetime

from drtool.core.chunks import CHUNK_FILE_NAMES
from drtool.ops.audit.context import AuditRun
from drtool.ops.drill.history import load_history
from drtool.ops.snapshot.catalog import list_snapshots
from drtool.wiring import bucket_store, dify_reader


def snapshots(audit: AuditRun) -> None:
    dest = audit.destination()
    infos = list_snapshots(dest)
    audit.result.checked.append("drtool: newest snapshot")
    if not infos:
        audit.add("drtool.no_snapshot", f"no committed snapshot under {dest.url}/snapshots/",
                  "drtool snapshot create (and schedule it: playbooks/scheduling/crontab)", dest.url)
        return
    newest = max(infos, key=lambda i: (i.fence, i.id))
    age_h = (audit.now - newest.fence).total_seconds() / 3600
    if age_h > audit.options.rpo_hours:
        audit.add("drtool.snapshot_too_old",
                  f"newest snapshot {newest.id} has fence {newest.fence.isoformat()}, {age_h:.1f} h old; RPO "
                  f"target {audit.options.rpo_hours:g} h",
                  "drtool snapshot create now; check the snapshot cron job's mail and "
                  "drtool_snapshot_create_last_success_timestamp_seconds", newest.id)
    if newest.signed_by is None:
        audit.add("drtool.snapshot_unsigned", f"COMMITTED of {newest.id} carries no signature",
                  "drtool keys generate --out /etc/drtool/signing.key; set snapshot.signing_key_file and "
                  "snapshot.trusted_keys (docs/snapshots.md)", newest.id)


def drills(audit: AuditRun) -> None:
    dest = audit.destination()
    history = load_history(dest, 200)
    audit.result.checked.append("drtool: last successful drill")
    passed = [r for r in history if r.get("outcome") == "passed"]
    limit = audit.options.drill_max_age_days
    fix = "drtool drill (weekly; playbooks/scheduling/crontab)"
    if not passed:
        audit.add("drtool.drill_overdue", f"no passed drill among the {len(history)} record(s) under "
                                          f"{dest.url}/drills/", fix, dest.url)
        return
    newest = max(passed, key=lambda r: str(r.get("finished_at") or r.get("started_at")))
    when = datetime.fromisoformat(str(newest.get("finished_at") or newest.get("started_at")))
    age_d = (audit.now - when).total_seconds() / 86400
    if age_d > limit:
        audit.add("drtool.drill_overdue", f"last passed drill {newest.get('drill_id')} ended {when.isoformat()}, "
                                          f"{age_d:.1f} days ago; limit {limit:g} days", fix, dest.url)


def datasets(audit: AuditRun) -> None:
    """Chunk files of high-quality datasets, and the rebuild model against each dataset's model."""
    with dify_reader(audit.settings.postgres) as reader:
        rows = [d for d in reader.datasets() if d.indexing_technique == "high_quality"]
    audit.result.checked.append(f"postgres: {len(rows)} high-quality dataset(s) read")
    if audit.settings.s3.bucket:
        store = bucket_store(audit.settings.s3, client=audit.client(audit.settings.s3))
        for d in rows:
            keys = [f"datasets/{d.id}/processed/{name}" for name in CHUNK_FILE_NAMES]
            if not any(store.head(k) is not None for k in keys):
                audit.add("drtool.chunks_missing", f"none of {', '.join(store.url(k) for k in keys[:1])}[.gz|.zst] "
                                                   f"exists for dataset {d.name!r}",
                          f"drtool export-chunks --dataset {d.id}", d.id)
        audit.result.checked.append("drtool: chunk files of high-quality datasets")
    model = audit.settings.embedding.model
    if model:
        short = model.rstrip("/").rsplit("/", 1)[-1]
        for d in rows:
            theirs = (d.embedding_model or "").rstrip("/").rsplit("/", 1)[-1]
            if theirs and theirs != short:
                audit.add("vector.embedding_mismatch",
                          f"dataset {d.name!r} was embedded with {d.embedding_model!r} ({d.embedding_provider}); "
                          f"embedding.model for rebuilds is {model!r}",
                          f"set embedding.model={d.embedding_model} (DRTOOL_EMBEDDING_MODEL) and its provider "
                          "settings, or rebuild that dataset with its own --model", d.id)
        audit.result.checked.append("vector: rebuild model matches datasets")
    else:
        audit.result.skipped.append("vector: embedding.model is not set, model match not checked")
