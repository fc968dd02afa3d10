"""`drtool verify [--deep]`: is every reference between Postgres, object storage and the vector index intact?"""

from __future__ import annotations

import click

from drtool.cli.app import App, Outcome, conclude, global_options, metrics_option, pass_app
from drtool.core.metrics import Metric
from drtool.core.ports import VECTOR_STORES
from drtool.core.terminal import one_line
from drtool.errors import ExitCode, UsageError
from drtool.ops.verify.closure import verify
from drtool.ops.verify.report import KINDS, VerifyOptions, VerifyReport

_SHORT = {"missing_vector": "missing", "orphan_vector": "orphan", "duplicate_vector": "dup",
          "wrong_document_id": "wrong-doc", "wrong_dataset_id": "wrong-ds", "missing_collection": "no-coll",
          "chunk_file_missing": "no-file", "chunk_file_stale": "stale-file"}


@click.command("verify")
@global_options
@click.option("--dataset", "datasets", multiple=True, metavar="ID",
              help="Only this dataset (repeatable); default: every dataset.")
@click.option("--deep", is_flag=True, help="Also compare each dataset's chunk file in object storage with Postgres.")
@click.option("--skip-files", is_flag=True, help="Do not HEAD the objects upload_files and tool_files name.")
@click.option("--skip-vectors", is_flag=True, help="Do not read the vector store.")
@click.option("--annotations/--no-annotations", default=None,
              help="Check the annotation-reply collection (and with --deep the annotation file) of every app with "
                   "annotation reply enabled.  [default: unless --dataset or --snapshot]")
@click.option("--snapshot", "snapshot_ref", metavar="ID|latest",
              help="Check file references at the object versions this snapshot pinned, not the current objects.")
@click.option("--identity", type=click.Path(dir_okay=False, exists=True),
              help="age identity file, to read the manifest of an encrypted snapshot.")
@click.option("--workers", type=click.IntRange(1, 64), default=8, show_default=True,
              help="Parallel HEAD requests for the object check.")
@click.option("--vector-store", type=click.Choice(VECTOR_STORES),
              help="Backend of datasets whose index_struct does not name one (vector.store).")
@click.option("--milvus-uri", help="Milvus server URI or Milvus Lite file (milvus.uri).")
@click.option("--weaviate-endpoint", help="Weaviate HTTP endpoint (weaviate.endpoint).")
@click.option("--weaviate-grpc", help="Weaviate gRPC host:port (weaviate.grpc_endpoint).")
@click.option("--bucket", help="Bucket holding Dify's files and the chunk files (s3.bucket).")
@metrics_option
@pass_app
def verify_cmd(app: App, datasets: tuple[str, ...], deep: bool, skip_files: bool, skip_vectors: bool,
               annotations: bool | None, snapshot_ref: str | None, identity: str | None, workers: int,
               vector_store: str | None, milvus_uri: str | None, weaviate_endpoint: str | None,
               weaviate_grpc: str | None, bucket: str | None) -> int | Outcome:
    """Check referential closure across Postgres, object storage and the vector index.

    Every upload_files/tool_files key must name an object; every segment or child chunk Dify indexes in a
    high-quality dataset must have exactly one vector (metadata doc_id) with the right document_id and
    dataset_id; every vector must map back to such a segment. --deep also checks that each dataset's chunk file
    holds the same ids and texts as Postgres. With --snapshot, each file reference must be pinned in that
    snapshot's manifest and the pinned version must still exist (what a restore needs); point
    postgres.database at the database restored from the snapshot to check it as a whole.

    Exit codes: 0 no break, 4 at least one break (the first examples of each kind are printed), 2 usage,
    10 bucket or dataset not found, 12 credentials refused, 1 other errors.
    """
    settings = app.settings({"s3.bucket": bucket, "vector.store": vector_store, "milvus.uri": milvus_uri,
                             "weaviate.endpoint": weaviate_endpoint, "weaviate.grpc_endpoint": weaviate_grpc})
    if snapshot_ref and skip_files:
        raise UsageError("--snapshot checks file references: it cannot be combined with --skip-files")
    options = VerifyOptions(datasets=datasets, deep=deep, check_files=not skip_files, check_vectors=not skip_vectors,
                            snapshot=snapshot_ref, identity=identity, workers=workers, annotations=annotations)
    report = verify(settings, options, emit=app.emit)
    code = ExitCode.OK if report.ok else ExitCode.CRITICAL
    payload = {"event": "result", **report.to_dict()}
    app.result(payload, lambda: _render(app, report))
    app.add_metrics([Metric("drtool_verify_breaks", "Breaks of each kind found by the last verify.",
                            report.findings.counts.get(kind, 0), {"kind": kind}) for kind in KINDS])
    kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(report.findings.counts.items()) if n)
    return conclude(code, f"{report.findings.total} break(s): {kinds}")


def _render(app: App, report: VerifyReport) -> None:
    files = report.files
    if files.note:
        app.echo(f"objects: {one_line(files.note)}")
    else:
        tables = ", ".join(f"{n} {t}" for t, n in sorted(files.by_table.items()))
        at = f" at snapshot {files.snapshot}" if files.snapshot else ""
        app.echo(f"objects{at}: {files.checked} referenced ({tables}), {files.missing} missing")
    header = f"{'dataset':<36}  {'technique':<12} {'backend':<8} {'indexed':>7} {'vectors':>7}  result"
    app.echo(header)
    for d in report.datasets:
        vectors = "-" if d.vectors is None else str(d.vectors)
        if d.ok:
            result = "ok" + (f" ({one_line(d.note)})" if d.note else "")
        else:
            result = ", ".join(f"{_SHORT.get(k, k)} {n}" for k, n in d.breaks.items())
        app.echo(f"{one_line(d.dataset_id):<36}  {one_line(d.indexing_technique or '-'):<12} {d.backend or '-':<8} "
                 f"{d.indexed_chunks:>7} {vectors:>7}  {result}")
    for a in report.annotations:
        vectors = "-" if a["vectors"] is None else str(a["vectors"])
        result = ("ok" + (f" ({one_line(a['note'])})" if a["note"] else "") if a["ok"]
                  else ", ".join(f"{k} {n}" for k, n in a["breaks"].items()))
        app.echo(f"app {one_line(a['app_id']):<32}  {'annotations':<12} {'':<8} {a['annotations']:>7} "
                 f"{vectors:>7}  {result}")
    if report.ok:
        app.echo(f"verify{' --deep' if report.deep else ''}: no break in {len(report.datasets)} dataset(s)"
                 + (f" and {len(report.annotations)} app(s) with annotation reply" if report.annotations else ""))
        return
    app.echo(f"\n{report.findings.total} break(s):")
    for kind, text in KINDS.items():
        count = report.findings.counts.get(kind)
        if not count:
            continue
        app.echo(f"  {kind} ({count}): {text}")
        for example in report.findings.examples.get(kind, []):
            # keys, ids and server messages from data: one line each, so none can forge a line of this report
            app.echo("    " + ", ".join(f"{k}={one_line(v)}" for k, v in example.items() if v is not None))
