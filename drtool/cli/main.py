"""The `drtool` entry point: global options, command registration, and the exit-code contract."""

from __future__ import annotations

import logging
import os
import sys

import click

from drtool import __version__
from drtool.cli.app import (
    CA_BUNDLE_HELP,
    LOG_FORMAT_HELP,
    LOG_FORMAT_TYPE,
    NO_VERIFY_TLS_HELP,
    App,
    Outcome,
    begin_run,
    current_run,
    finish_run,
)
from drtool.cli.lazy import LazyCommand, LazyGroup
from drtool.core.terminal import one_line
from drtool.errors import DrtoolError, ExitCode
from drtool.log import LOG_FORMAT_ENV, LOGGER_NAME, loudest_emitted, reset_loudest, setup_logging
from drtool.redact import redact

log = logging.getLogger(LOGGER_NAME)
# gRPC's C core (pymilvus, weaviate) writes its own lines straight to stderr (`GOAWAY ... too_many_pings`), which
# would break the JSON log stream and cron mail; silenced before any command imports it, unless asked for.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

# Each command's module is imported when that command runs (drtool/cli/lazy.py); the summaries are its --help line.
COMMANDS = {
    "audit": LazyCommand("drtool.cli.audit_cmd:audit_cmd",
                         "Audit object storage, MinIO, snapshots and drills, Postgres and the vector store for "
                         "recovery risks."),
    "config": LazyCommand("drtool.cli.config_cmd:config_group",
                          "Show the effective configuration, or check that every configured system answers."),
    "drill": LazyCommand("drtool.cli.drill_cmd:drill_group",
                         "Restore a snapshot into scratch targets and measure RTO and RPO."),
    "export-chunks": LazyCommand("drtool.cli.export_cmd:export_chunks_cmd",
                                 "Write each dataset's indexed chunks to "
                                 "s3://BUCKET/[PREFIX]datasets/<id>/processed/chunks.jsonl[.gz|.zst]."),
    "keys": LazyCommand("drtool.cli.keys_cmd:keys_group",
                        "Create and inspect the key pair that signs snapshots (restore points a trusted key did not "
                        "sign are refused)."),
    "rebuild-index": LazyCommand("drtool.cli.rebuild_cmd:rebuild_index",
                                 "Re-embed the chunks at s3://BUCKET/datasets/ID/processed/chunks.jsonl[.gz|.zst] "
                                 "into the collection Dify queries: built beside the live one, verified, then "
                                 "switched (blue/green), resumable after any interruption."),
    "replication": LazyCommand("drtool.cli.replication_cmd:replication_group",
                               "Check MinIO site replication, verify that two sites hold the same objects, measure "
                               "replication lag."),
    "restore": LazyCommand("drtool.cli.restore_cmd:restore_cmd",
                           "Restore SNAPSHOT_ID (or `latest`): make every pinned version current in the target "
                           "bucket (server-side copy; objects already current are untouched), then pg_restore into "
                           "--target-db in one transaction."),
    "snapshot": LazyCommand("drtool.cli.snapshot_cmd:snapshot_group",
                            "Take a consistent snapshot: Postgres dump + the object versions it references, at one "
                            "instant."),
    "snapshots": LazyCommand("drtool.cli.snapshot_cmd:snapshots_group",
                             "List, verify, prune and garbage-collect snapshots; remove a stale lock."),
    "verify": LazyCommand("drtool.cli.verify_cmd:verify_cmd",
                          "Check referential closure across Postgres, object storage and the vector index."),
}


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """drtool's version and those of the clients it talks to its systems with (what a bug report needs)."""
    if not value or ctx.resilient_parsing:
        return
    from importlib.metadata import PackageNotFoundError, version

    click.echo(f"drtool, version {__version__}")
    for package in ("boto3", "psycopg", "pymilvus", "milvus-lite", "weaviate-client", "redis", "httpx",
                    "sentence-transformers"):
        try:
            click.echo(f"  {package} {version(package)}")
        except PackageNotFoundError:
            click.echo(f"  {package} not installed")
    ctx.exit()


@click.group(cls=LazyGroup, lazy=COMMANDS,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Show drtool's version and its clients' versions, and exit.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="DRTOOL_CONFIG",
              help="drtool.toml to read (default: ./drtool.toml if present).")
@click.option("--dify-env", "dify_env_path", type=click.Path(dir_okay=False), envvar="DRTOOL_DIFY_ENV",
              help="A Dify docker/.env whose storage, database and vector settings drtool should use.")
@click.option("--dify-host", "dify_hosts", multiple=True, metavar="NAME=HOST",
              help="Replace a docker-compose host name from the Dify .env (repeatable), e.g. db_postgres=10.0.0.5.")
@click.option("--ca-bundle", type=click.Path(dir_okay=False), help=CA_BUNDLE_HELP)
@click.option("--no-verify-tls", is_flag=True, help=NO_VERIFY_TLS_HELP)
@click.option("--json", "json_mode", is_flag=True, help="One JSON object per event or result on stdout.")
@click.option("--log-format", type=LOG_FORMAT_TYPE, default=None, envvar=LOG_FORMAT_ENV, help=LOG_FORMAT_HELP)
@click.option("-v", "--verbose", count=True, help="More output on stderr (-v progress, -vv debug).")
@click.option("-q", "--quiet", is_flag=True,
              help="Only errors on stderr, and one line saying why whenever the exit code is not 0.")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, dify_env_path: str | None, dify_hosts: tuple[str, ...],
        ca_bundle: str | None, no_verify_tls: bool, json_mode: bool, log_format: str | None, verbose: int,
        quiet: bool) -> None:
    """Disaster recovery for self-hosted RAG platforms such as Dify.

    Exit codes: 0 ok, 1 error, 2 usage, 3 degraded/warning, 4 critical/verification failed,
    10 not found, 11 locked, 12 authentication or permission refused. A non-zero exit always leaves one line
    on stderr saying why, also with -q.
    """
    setup_logging(verbosity=verbose, quiet=quiet, json_mode=json_mode, log_format=log_format)
    ctx.obj = App(config_path=config_path, dify_env_path=dify_env_path, dify_hosts=dify_hosts,
                  json_mode=json_mode, verbosity=verbose, quiet=quiet, log_format=log_format)
    if ca_bundle:
        ctx.obj.tls_overrides["s3.ca_bundle"] = ca_bundle
    if no_verify_tls:
        ctx.obj.tls_overrides["s3.verify_tls"] = False




def main(argv: list[str] | None = None) -> None:
    """Run drtool and exit with a code from the table; a traceback only with -v."""
    sys.exit(run(argv))


def run(argv: list[str] | None = None) -> int:
    """Run one command and return its exit code; a non-zero code is never silent (see `_explain`), the metrics
    file and the `--json` result event are written however the run ended (drtool.cli.app.finish_run)."""
    args = sys.argv[1:] if argv is None else argv
    reset_loudest()
    begin_run(json_mode="--json" in args)
    code, outcome, error = _invoke(args)
    if code is None:  # --help, --version: not a run, nothing to record
        return 0 if outcome is None else outcome.code
    code = finish_run(code, error)
    if code != ExitCode.OK and outcome is not None:
        _explain(outcome)
    return code


Error = dict[str, object] | None


def _invoke(args: list[str]) -> tuple[int | None, Outcome | None, Error]:
    """The exit code (None for --help/--version), the command's Outcome when it finished, and the error's fields
    for the result event when it did not (errors are logged here, once, as they are)."""
    verbose = any(a in ("-v", "--verbose") or (a.startswith("-v") and set(a[1:]) == {"v"}) for a in args)
    json_mode = "--json" in args
    try:
        rv = cli.main(args=args, prog_name="drtool", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return None, Outcome(int(exc.exit_code)), None
    except click.exceptions.Abort:
        return int(ExitCode.ERROR), None, _report("aborted", None, json_mode, ExitCode.ERROR)
    except click.ClickException as exc:
        exc.show()
        context = getattr(exc, "ctx", None)
        if context is not None and not current_run().command:  # refused while parsing: name the command anyway
            current_run().command = context.command_path.removeprefix("drtool").strip()
        return int(ExitCode.USAGE), None, {"error": "UsageError", "message": exc.format_message(),
                                            "hint": "see --help", "system": None}
    except DrtoolError as exc:
        if verbose:
            log.debug("traceback", exc_info=True)
        return int(exc.exit_code), None, _report(str(exc), exc.to_event(), json_mode, exc.exit_code)
    except KeyboardInterrupt:
        return int(ExitCode.ERROR), None, _report("interrupted; it is safe to run the command again", None,
                                                  json_mode, ExitCode.ERROR)
    except Exception as exc:  # the last line of defence: no raw traceback for the operator
        if verbose:
            log.error("unexpected error", exc_info=True)
        message = f"unexpected error: {type(exc).__name__}: {exc}"
        if not verbose:
            message += " (run with -v for a traceback, and please report it)"
        return int(ExitCode.ERROR), None, _report(message, None, json_mode, ExitCode.ERROR)
    if isinstance(rv, Outcome):
        return rv.code, rv, None
    code = int(rv) if isinstance(rv, int) else int(ExitCode.OK)
    return code, Outcome(code) if code else None, None


def _explain(outcome: Outcome) -> None:
    """The -q guarantee: a command that ends non-zero leaves `<command>: <reason>` on stderr unless a record at that
    level already did (an error logged on the way, or the warnings themselves without -q). It bypasses the logger's
    level on purpose: -q silences progress and detail, never why cron is being told that something is wrong."""
    level = logging.WARNING if outcome.code == ExitCode.DEGRADED else logging.ERROR
    if loudest_emitted() >= level:
        return
    if not log.handlers:  # failed before the root command set logging up
        setup_logging(verbosity=0, quiet=False, json_mode=False)
    try:
        name = ExitCode(outcome.code).name
    except ValueError:
        name = "UNKNOWN"
    reason = outcome.reason or f"exit code {outcome.code} ({name}); run without -q for the details"
    text = one_line(redact(f"{outcome.command or 'drtool'}: {reason}"))
    record = log.makeRecord(log.name, level, __file__, 0, "%s", (text,), None,
                            extra={"fields": {"event": "exit", "command": outcome.command or None,
                                              "exit_code": outcome.code, "verdict": name}})
    log.handle(record)


def _report(message: str, event: dict[str, object] | None, json_mode: bool, code: ExitCode) -> dict[str, object]:
    """Errors always reach stderr as a log record (JSON lines off a terminal); the fields returned go into the
    `--json` result event (`error`, `message`, `hint`, `system`)."""
    if not log.handlers:  # failed before the root command set logging up
        setup_logging(verbosity=0, quiet=False, json_mode=json_mode)
    payload = event or {"event": "error", "error": "Error", "exit_code": int(code), "message": message,
                        "hint": None, "system": None}
    log.error("%s", message, extra={"fields": {k: v for k, v in payload.items() if k != "message"}})
    return {k: v for k, v in payload.items() if k not in ("event", "exit_code")}
