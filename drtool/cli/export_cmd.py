"""`drtool export-chunks`: Dify's indexed texts from Postgres into per-dataset chunk files in object storage."""

from __future__ import annotations

from typing import cast

import click

from drtool.cli.app import App, global_options, metrics_option, pass_app
from drtool.core.chunks import Compression
from drtool.core.metrics import Metric
from drtool.core.terminal import one_line
from drtool.errors import ExitCode
from drtool.ops.export.chunks import export_chunks
from drtool.ops.export.writer import ExportOptions

_COMPRESSION = ("gzip", "none", "zstd")


@click.command("export-chunks")
@global_options
@click.option("--dataset", "datasets", multiple=True, metavar="ID", help="Dataset to export (repeatable).")
@click.option("--all", "all_datasets", is_flag=True,
              help="Every dataset in Dify's datasets table, and the annotations of every app with annotation reply "
                   "enabled (unless --no-annotations).")
@click.option("--annotations/--no-annotations", default=None,
              help="Also (or, alone, only) write annotations/<app_id>/processed/chunks.jsonl for every app with "
                   "annotation reply enabled.  [default: with --all]")
@click.option("--compression", type=click.Choice(_COMPRESSION), default="none", show_default=True,
              help="chunks.jsonl, chunks.jsonl.gz or chunks.jsonl.zst.")
@click.option("--force", is_flag=True, help="Upload even when the stored file has the same content hash.")
@click.option("--dry-run", is_flag=True, help="Read Postgres and compare hashes; write nothing.")
@click.option("--part-size-mb", type=click.IntRange(5), default=16, show_default=True,
              help="Files larger than this go up as a multipart upload of parts this size.")
@click.option("--bucket", help="Bucket holding Dify's files and the chunk files (s3.bucket).")
@metrics_option
@click.option("--break-stale-lock", is_flag=True,
              help="Replace the bucket's export lock when judged stale (held on another host, or older than "
                   "snapshot.lock_stale_after, or unverifiable: this host name but another PID namespace); a "
                   "dead run's lock in this host and PID namespace is taken over without it.")
@pass_app
def export_chunks_cmd(app: App, datasets: tuple[str, ...], all_datasets: bool, annotations: bool | None,
                      compression: str, force: bool, dry_run: bool, part_size_mb: int, bucket: str | None,
                      break_stale_lock: bool) -> int:
    """Write each dataset's indexed chunks to s3://BUCKET/[PREFIX]datasets/<id>/processed/chunks.jsonl[.gz|.zst].

    Reads exactly what Dify embeds (completed, enabled, not archived documents; completed, enabled segments;
    child chunks for parent-child datasets; QA answers), in a stable order. A dataset whose content hash equals
    the one stored on its file is skipped; a changed one is replaced atomically. Safe to interrupt and re-run.

    One writing run per bucket (lock <snapshot.prefix>/locks/export-chunks.lock in it).

    Exit codes: 0 done, 2 usage, 10 bucket or dataset not found, 11 another export holds the bucket's lock,
    12 credentials refused, 1 other errors.
    """
    settings = app.settings({"s3.bucket": bucket})
    options = ExportOptions(datasets=datasets, all_datasets=all_datasets, compression=cast(Compression, compression),
                            dry_run=dry_run, force=force, part_size_mb=part_size_mb,
                            break_stale_lock=break_stale_lock, annotations=annotations)
    everything = export_chunks(settings, options, emit=app.emit)
    results = [r for r in everything if r.kind == "dataset"]
    apps = [r for r in everything if r.kind == "annotation"]
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    app_counts: dict[str, int] = {}
    for r in apps:
        app_counts[r.status] = app_counts.get(r.status, 0) + 1
    payload = {"event": "result", "dry_run": dry_run, "datasets": len(results),
               "statuses": counts, "chunks": sum(r.chunks for r in results),
               "bytes_written": sum(r.stored_bytes for r in everything if r.status == "written"),
               "annotation_apps": len(apps), "annotation_statuses": app_counts,
               "annotations": sum(r.chunks for r in apps)}

    def render() -> None:
        app.echo(f"{'dataset':<36}  {'status':<12} {'chunks':>8} {'bytes':>10}  file")
        for r in results:
            app.echo(f"{one_line(r.dataset_id):<36}  {r.status:<12} {r.chunks:>8} {r.stored_bytes:>10}  "
                     f"{one_line(r.url)}")
        for r in apps:
            app.echo(f"app {one_line(r.dataset_id):<32}  {r.status:<12} {r.chunks:>8} {r.stored_bytes:>10}  "
                     f"{one_line(r.url)}")
        summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "nothing to do"
        app.echo(f"{len(results)} dataset(s): {summary}" + (" (dry run: nothing written)" if dry_run else ""))
        if apps:
            app.echo(f"{len(apps)} app(s) with annotation reply: "
                     + ", ".join(f"{n} {s}" for s, n in sorted(app_counts.items())))

    app.result(payload, render)
    app.add_metrics([
        *(Metric("drtool_export_chunks_dataset_chunks", "Chunks in the dataset's exported file.", r.chunks,
                 {"dataset_id": r.dataset_id}) for r in results),
        *(Metric("drtool_export_chunks_datasets", "Datasets by export status in the last run.", n, {"status": s})
          for s, n in counts.items()),
        *(Metric("drtool_export_chunks_app_annotations", "Annotations in the app's exported file.", r.chunks,
                 {"app_id": r.dataset_id}) for r in apps),
    ])
    return int(ExitCode.OK)
