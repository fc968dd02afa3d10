"""`drtool verify [--deep]`: referential closure across Postgres, object storage and the vector index.

Checks, each a kind of break with a count and the first examples:
- every `upload_files.key` and `tool_files.file_key` names an existing object (HEAD, s3.key_prefix applied);
- every text Dify indexes for a high-quality dataset (the same rows export-chunks writes) has its vector, found
  by metadata `doc_id`, carrying the right `document_id` and `dataset_id`;
- every vector in the dataset's collection maps back to such a text (orphans; duplicates);
- with --deep, the dataset's chunk file in object storage holds exactly those ids with the same text.

Postgres is read in one REPEATABLE READ snapshot. Per dataset, the live texts are held as id -> (document id,
16-byte text digest), about 150 bytes per chunk; vectors and chunk-file lines are streamed against that map.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from drtool import wiring
from drtool.adapters import s3 as s3_adapter
from drtool.config import Settings
from drtool.core.events import Emit
from drtool.ops.verify.annotations import verify_annotations
from drtool.ops.verify.datasets import verify_dataset
from drtool.ops.verify.files import verify_files, verify_files_at_snapshot
from drtool.ops.verify.report import DatasetVerdict, FilesVerdict, Findings, VerifyOptions, VerifyReport
from drtool.ops.verify.scanners import Scanners


def verify(settings: Settings, options: VerifyOptions, *, emit: Emit) -> VerifyReport:
    store: s3_adapter.BucketStore | None = None
    if options.check_files or options.deep:
        settings.require_s3()
        store = wiring.dify_bucket(settings)
        store.probe()
    findings = Findings()
    scanners = Scanners(settings)
    verdicts: list[DatasetVerdict] = []
    files = FilesVerdict(note="skipped (--skip-files)")
    try:
        with wiring.dify_reader(settings.postgres) as reader:
            datasets = reader.datasets(options.datasets)
            emit({"event": "verify.started", "datasets": len(datasets), "deep": options.deep})
            if options.check_files and store is not None:
                # Units of work for the progress display (drtool/cli/progress.py): file rows checked, then datasets.
                def files_checked(n: int) -> None:
                    emit({"event": "progress", "task": "verify files", "unit": "files", "done": n, "total": None})

                if options.snapshot:
                    files = verify_files_at_snapshot(settings, options, reader.iter_file_refs(), store, findings,
                                                     on_checked=files_checked)
                else:
                    files = verify_files(reader.iter_file_refs(), store, findings, options.workers,
                                         on_checked=files_checked)
                emit({"event": "verify.files", **asdict(files)})
            chunks = 0
            for number, dataset in enumerate(datasets, start=1):
                verdict = verify_dataset(reader, dataset, settings, scanners, store, findings, options)
                chunks += verdict.indexed_chunks
                emit({"event": "progress", "task": "verify datasets", "unit": "datasets", "done": number,
                      "total": len(datasets), "also": {"chunks": chunks}})
                emit({"event": "verify.dataset", **verdict.to_dict()})
                verdicts.append(verdict)
            apps: list[dict[str, Any]] = []
            if options.with_annotations:
                apps = verify_annotations(reader, settings, scanners.get, store, findings,
                                          check_vectors=options.check_vectors, deep=options.deep)
                for app in apps:
                    emit({"event": "verify.annotations", **app})
    finally:
        scanners.close()
    return VerifyReport(datasets=verdicts, files=files, findings=findings, deep=options.deep, annotations=apps)
