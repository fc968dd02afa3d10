"""`drtool export-chunks`: Dify's indexed texts from Postgres into per-dataset chunk files in object storage."""

from __future__ import annotations

import time
from typing import cast

import click

from drtool.cli.app import App, global_options, pass_app
from drtool.core.chunks import Compression
from drtool.core.metrics import Metric, write_textfile
from drtool.core.terminal import one_line
from drtool.errors import ExitCode
from drtool.ops.export_chunks import ExportOptions, export_chunks

_COMPRESSION = ("gzip", "none", "zstd")


@click.command("export-chunks")
@global_options
@click.option("--dataset", "datasets", multiple=True, metavar="ID", help="Dataset to export (repeatable).")
@click.option("--all", "all_datasets", is_flag=True, help="Every dataset in Dify's datasets table.")
@click.option("--compression", type=click.Choice(_COMPRESSION), default="none", show_default=True,
              help="chunks.jsonl, chunks.jsonl.gz or chunks.jsonl.zst.")
@click.option("--force", is_flag=True, help="Upload even when the stored file has the same content hash.")
@click.option("--dry-run", is_flag=True, help="Read Postgres and compare hashes; write nothing.")
@click.option("--part-size-mb", type=click.IntRange(5), default=16, show_default=True,
              help="Files larger than this go up as a multipart upload of parts this size.")
@click.option("--bucket", help="Bucket holding Dify's files and the chunk files (s3.bucket).")
@click.option("--metrics-file", type=click.Path(dir_okay=False),
              help="Write Prometheus metrics here (node_exporter textfile collector).")
@click.option("--break-stale-lock", is_flag=True,
              help="Replace the bucket's export lock when judged stale (held on another host, or older than "
                   "snapshot.lock_stale_after, or unverifiable: this host name but another PID namespace); a "
                   "dead run's lock in this host and PID namespace is taken over without it.")
@pass_app
def export_chunks_cmd(app: App, datasets: tuple[str, ...], all_datasets: bool, compression: str, force: bool,
                      dry_run: bool, part_size_mb: int, bucket: str | None, metrics_file: str | None,
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
                            break_stale_lock=break_stale_lock)
    results = export_chunks(settings, options, emit=app.emit)
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    payload = {"event": "export_summary", "exit_code": 0, "dry_run": dry_run, "datasets": len(results),
               "statuses": counts, "chunks": sum(r.chunks for r in results),
               "bytes_written": sum(r.stored_bytes for r in results if r.status == "written")}

    def render() -> None:
        app.echo(f"{'dataset':<36}  {'status':<12} {'chunks':>8} {'bytes':>10}  file")
        for r in results:
            app.echo(f"{one_line(r.dataset_id):<36}  {r.status:<12} {r.chunks:>8} {r.stored_bytes:>10}  "
                     f"{one_line(r.url)}")
        summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "nothing to do"
        app.echo(f"{len(results)} dataset(s): {summary}" + (" (dry run: nothing written)" if dry_run else ""))

    app.result(payload, render)
    if metrics_file:
        write_textfile(metrics_file, [
            Metric("drtool_export_last_run_timestamp_seconds", "End of the last export-chunks run.",
                   time.time()),
            *(Metric("drtool_export_chunks", "Chunks in the dataset's exported file.", r.chunks,
                     {"dataset_id": r.dataset_id}) for r in results),
            *(Metric("drtool_export_datasets", "Datasets by export status in the last run.", n, {"status": s})
              for s, n in counts.items()),
        ])
    return int(ExitCode.OK)
