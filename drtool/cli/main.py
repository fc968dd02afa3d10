"""The `drtool` entry point: global options, command registration, and the exit-code contract."""

from __future__ import annotations

import json
import logging
import sys

import click

from drtool import __version__
from drtool.cli.app import CA_BUNDLE_HELP, LOG_FORMAT_HELP, LOG_FORMAT_TYPE, NO_VERIFY_TLS_HELP, App, Outcome
from drtool.cli.config_cmd import config_group
from drtool.cli.drill_cmd import drill_group
from drtool.cli.export_cmd import export_chunks_cmd
from drtool.cli.keys_cmd import keys_group
from drtool.cli.rebuild_cmd import rebuild_index
from drtool.cli.replication_cmd import replication_group
from drtool.cli.restore_cmd import restore_cmd
from drtool.cli.snapshot_cmd import snapshot_group, snapshots_group
from drtool.cli.verify_cmd import verify_cmd
from drtool.core.terminal import one_line
from drtool.errors import DrtoolError, ExitCode
from drtool.log import LOG_FORMAT_ENV, LOGGER_NAME, loudest_emitted, reset_loudest, setup_logging
from drtool.redact import redact, redact_obj

log = logging.getLogger(LOGGER_NAME)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="drtool")
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


cli.add_command(config_group)
cli.add_command(export_chunks_cmd)
cli.add_command(verify_cmd)
cli.add_command(snapshot_group)
cli.add_command(snapshots_group)
cli.add_command(restore_cmd)
cli.add_command(rebuild_index)
cli.add_command(replication_group)
cli.add_command(drill_group)
cli.add_command(keys_group)


def main(argv: list[str] | None = None) -> None:
    """Run drtool and exit with a code from the table; a traceback only with -v."""
    sys.exit(run(argv))


def run(argv: list[str] | None = None) -> int:
    """Run one command and return its exit code; a non-zero code is never silent (see `_explain`)."""
    args = sys.argv[1:] if argv is None else argv
    reset_loudest()
    code, outcome = _invoke(args)
    if code != ExitCode.OK and outcome is not None:
        _explain(outcome)
    return code


def _invoke(args: list[str]) -> tuple[int, Outcome | None]:
    """The exit code, and the command's Outcome when it finished (errors are reported here, once, as they are)."""
    verbose = any(a in ("-v", "--verbose") or (a.startswith("-v") and set(a[1:]) == {"v"}) for a in args)
    json_mode = "--json" in args
    try:
        rv = cli.main(args=args, prog_name="drtool", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code), None
    except click.exceptions.Abort:
        _report("aborted", None, json_mode, ExitCode.ERROR)
        return int(ExitCode.ERROR), None
    except click.ClickException as exc:
        exc.show()
        return int(ExitCode.USAGE), None
    except DrtoolError as exc:
        if verbose:
            log.debug("traceback", exc_info=True)
        _report(str(exc), exc.to_event(), json_mode, exc.exit_code)
        return int(exc.exit_code), None
    except KeyboardInterrupt:
        _report("interrupted; it is safe to run the command again", None, json_mode, ExitCode.ERROR)
        return int(ExitCode.ERROR), None
    except Exception as exc:  # the last line of defence: no raw traceback for the operator
        if verbose:
            log.error("unexpected error", exc_info=True)
        message = f"unexpected error: {type(exc).__name__}: {exc}"
        if not verbose:
            message += " (run with -v for a traceback, and please report it)"
        _report(message, None, json_mode, ExitCode.ERROR)
        return int(ExitCode.ERROR), None
    if isinstance(rv, Outcome):
        return rv.code, rv
    code = int(rv) if isinstance(rv, int) else int(ExitCode.OK)
    return code, Outcome(code) if code else None


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


def _report(message: str, event: dict[str, object] | None, json_mode: bool, code: ExitCode) -> None:
    """Errors always reach stderr as a log record (JSON lines off a terminal); --json also puts one on stdout."""
    if not log.handlers:  # failed before the root command set logging up
        setup_logging(verbosity=0, quiet=False, json_mode=json_mode)
    payload = event or {"event": "error", "exit_code": int(code), "message": message}
    log.error("%s", message, extra={"fields": {k: v for k, v in payload.items() if k != "message"}})
    if json_mode:
        click.echo(json.dumps(redact_obj(payload), ensure_ascii=True))
