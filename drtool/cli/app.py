"""State shared by every command: global options, lazily loaded settings, result output, and the end of a run.

Two contracts are kept here, once, for every command, so that no command can drift from them:

- `--json` (docs/json.md): every line on stdout is one event stamped with `schema_version`, `command` and `ts`, and
  the last line is the run's single `result` event with its final `exit_code`, also when the run failed (usage and
  configuration errors included). `finish_run` writes it once the exit code is known.
- `--metrics-file` (docs/metrics.md): the four `drtool_<command>_...` metrics every state-changing or checking
  command writes on success and on failure, plus the command's own, in one atomically replaced textfile. A file
  that cannot be written is an error with an exit code, never a silent gap in alerting.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from drtool.config import Settings, load_settings
from drtool.core.metrics import Metric, metric_prefix, previous_value, write_textfile
from drtool.core.terminal import for_terminal
from drtool.errors import ExitCode
from drtool.log import LOG_FORMAT_ENV, LOG_FORMATS, LOGGER_NAME
from drtool.redact import redact, redact_obj

# Version of the `--json` event contract (docs/json.md). Raise it when a documented event or field changes meaning
# or disappears; adding an event or an optional field does not.
SCHEMA_VERSION = 1

log = logging.getLogger(LOGGER_NAME)


@dataclass
class RunState:
    """What one run of drtool has to report when it ends, whatever way it ends (result, error, exception)."""

    json_mode: bool = False
    started: float = field(default_factory=time.monotonic)
    command: str = ""
    metrics_path: str | None = None
    metrics: list[Metric] = field(default_factory=list)
    result: dict[str, Any] | None = None
    heartbeat: Any = None  # the progress display of a long command (drtool/cli/progress.py), stopped by finish_run


_run = RunState()


def begin_run(json_mode: bool) -> RunState:
    """A fresh state for one run (drtool.cli.main.run; the in-process tests run many in one interpreter)."""
    global _run
    _run = RunState(json_mode=json_mode)
    return _run


def current_run() -> RunState:
    return _run


def _command_path(context: click.Context | None) -> str:
    return canonical_command(context.command_path.removeprefix("drtool").strip()) if context is not None else ""


def canonical_command(path: str) -> str:
    """One name per command, whichever spelling of its group was typed (`snapshots create` is `snapshot create`,
    `snapshot prune` is `snapshots prune`): the `command` of every JSON event and the metrics prefix use it, so an
    alias cannot start a second series of metrics."""
    words = path.split()
    if len(words) > 1 and words[0] in ("snapshot", "snapshots"):
        words[0] = "snapshot" if words[1] == "create" else "snapshots"
    return " ".join(words)


def stamp(event: Mapping[str, Any], command: str | None = None) -> dict[str, Any]:
    """The envelope every `--json` line carries (docs/json.md): event name first, then version, command, time."""
    if command is None:
        command = _command_path(click.get_current_context(silent=True)) or _run.command
    body = {k: v for k, v in event.items() if k not in ("event", "schema_version", "command", "ts")}
    return {"event": event.get("event"), "schema_version": SCHEMA_VERSION, "command": command or None,
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds"), **body}


def write_json_line(event: Mapping[str, Any]) -> None:
    # ensure_ascii: no control or bidi character reaches a terminal that shows the JSON, values exact
    sys.stdout.write(json.dumps(redact_obj(dict(event)), default=str, ensure_ascii=True) + "\n")
    sys.stdout.flush()


def finish_run(code: int, error: Mapping[str, Any] | None = None) -> int:
    """End the run: write the metrics file (when --metrics-file was parsed), then the one `result` event under
    --json. Returns the final exit code: a metrics file that cannot be written turns 0 and 3 into 1 (an alert
    that silently stops being fed is worse than a failed run) and is reported on stderr in every case."""
    state = _run
    if state.heartbeat is not None:
        state.heartbeat.stop()
        state.heartbeat = None
    metrics_error = None
    if state.metrics_path:
        try:
            write_run_metrics(state, code)
        except (OSError, ValueError) as exc:
            metrics_error = f"cannot write the metrics file {state.metrics_path}: {type(exc).__name__}: {exc}"
            log.error("%s", metrics_error, extra={"fields": {"event": "metrics.write_failed",
                                                             "path": state.metrics_path}})
            if code in (ExitCode.OK, ExitCode.DEGRADED):
                code = int(ExitCode.ERROR)
    if state.json_mode:
        payload: dict[str, Any] = {**(state.result or {}), **(error or {})}
        payload.update(event="result", exit_code=int(code),
                       duration_seconds=round(time.monotonic() - state.started, 3))
        if metrics_error:
            payload["metrics_error"] = metrics_error
        write_json_line(stamp(payload, state.command))
    return code


def write_run_metrics(state: RunState, code: int) -> None:
    """The four metrics of every command, with one naming scheme, then the command's own. The last success is
    read back from the previous file when this run did not succeed: the file is the only memory a cron job has."""
    prefix = metric_prefix(state.command)
    path = Path(str(state.metrics_path))
    now = time.time()
    last_success_name = f"{prefix}_last_success_timestamp_seconds"
    last_success = now if code == ExitCode.OK else (previous_value(path, last_success_name) or 0.0)
    what = f"drtool {state.command}"
    common = [
        Metric(f"{prefix}_last_run_timestamp_seconds", f"Unix time the last {what} run ended.", now),
        Metric(last_success_name, f"Unix time the last successful (exit 0) {what} run ended; 0: none yet.",
               last_success),
        Metric(f"{prefix}_last_exit_code", f"Exit code of the last {what} run (docs/exit-codes.md).", code),
        Metric(f"{prefix}_duration_seconds", f"Wall time of the last {what} run.",
               round(time.monotonic() - state.started, 3)),
    ]
    stray = sorted({m.name for m in state.metrics if not m.name.startswith(prefix + "_")})
    if stray:  # one naming scheme: a command writes only under its own prefix
        raise ValueError(f"metrics outside {prefix}_*: {', '.join(stray)}")
    write_textfile(path, [*common, *state.metrics])


def _metrics_callback(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """Eager, so the path is known before any other option of the command can fail: a usage error after it is
    recorded in the file too. Parsing only records it (a command line can be parsed where the file will not be
    written, e.g. to check a crontab); `check_metrics_path` looks at the disk when the command starts."""
    if value:
        _run.command = _command_path(ctx)
        _run.metrics_path = value
    return value


def check_metrics_path() -> None:
    """A metrics directory that does not exist is refused when the command starts (exit 2), not after a two-hour
    run whose outcome could then not be recorded."""
    path = _run.metrics_path
    if path and not Path(path).parent.is_dir():
        from drtool.errors import UsageError

        failed, _run.metrics_path = path, None  # nothing can be written there: the error is the report
        raise UsageError(f"--metrics-file {failed}: the directory {str(Path(failed).parent)!r} does not exist",
                         hint="create it (node_exporter's --collector.textfile.directory) or fix the path")


METRICS_FILE_HELP = ("Write Prometheus text metrics here (node_exporter textfile collector), on success and on "
                     "failure; see docs/metrics.md.")


def metrics_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--metrics-file PATH` for a command that changes or checks state; the command adds its own metrics with
    `App.add_metrics`, and `finish_run` writes the file however the run ends."""
    return click.option("--metrics-file", type=click.Path(dir_okay=False), default=None, expose_value=False,
                        is_eager=True, callback=_metrics_callback, help=METRICS_FILE_HELP)(command)


@dataclass(frozen=True)
class Outcome:
    """A command that finished with a non-zero exit code returns this instead of a bare int: `reason` is the line
    that `drtool.cli.main.run` prints on stderr when nothing at that level said why yet (with -q, the renderer and
    the warnings are silent, and cron mails only what reaches stderr)."""

    code: int
    reason: str = ""
    command: str = ""


def conclude(code: int, reason: str) -> int | Outcome:
    """`code` as the command's return value: 0 stays 0, anything else carries `reason` and the command's name."""
    if int(code) == 0:
        return 0
    return Outcome(int(code), reason, _command_path(click.get_current_context(silent=True)))


@dataclass
class App:
    config_path: str | None = None
    dify_env_path: str | None = None
    dify_hosts: tuple[str, ...] = ()
    json_mode: bool = False
    verbosity: int = 0
    quiet: bool = False
    log_format: str | None = None
    # --ca-bundle / --no-verify-tls: TLS trust is global, so every command takes them
    tls_overrides: dict[str, Any] = field(default_factory=dict)
    _settings: Settings | None = field(default=None, repr=False)

    def settings(self, flags: Mapping[str, Any] | None = None) -> Settings:
        """Load settings once per run; a command passes the flags it owns as `section.key` overrides. Every
        command starts here, so it is also where an impossible --metrics-file is refused."""
        check_metrics_path()
        self._start_heartbeat()
        merged = {**self.tls_overrides, **(flags or {})}
        if self.dify_hosts:
            merged["dify.hosts"] = self.dify_hosts
        if self._settings is None or merged:
            self._settings = load_settings(
                flags=merged, config_path=self.config_path, dify_env_path=self.dify_env_path
            )
        return self._settings

    @property
    def loaded_settings(self) -> Settings | None:
        """The settings this run already loaded, or None: an error handler must not load them (and fail) again."""
        return self._settings

    def _start_heartbeat(self) -> None:
        """Long commands show progress (drtool/cli/heartbeat.py, progress.py): a bar on a terminal, a line every
        DRTOOL_PROGRESS_SECONDS off one; nothing with -q."""
        from drtool.cli import heartbeat

        command = _command_path(click.get_current_context(silent=True))
        if _run.heartbeat is None and not self.quiet:
            _run.heartbeat = heartbeat.start(command, json_mode=self.json_mode, log_format=self.log_format)

    def emit(self, event: Mapping[str, Any]) -> None:
        """One JSON object per line on stdout, only in --json mode; human output is the renderer's job. Progress
        events only: the result is `result`'s, written once at the end of the run. A unit-count `progress` event
        (drtool/cli/progress.py) goes to the progress display on stderr alone, never to stdout."""
        if event.get("event") == "result":
            raise ValueError("the result event is written by finish_run: pass it to App.result")
        if _run.heartbeat is not None:
            _run.heartbeat.observe(event)
        if self.json_mode and event.get("event") != "progress":
            write_json_line(stamp(event))

    def result(self, payload: Mapping[str, Any], render: Callable[[], None]) -> None:
        """The command's result: rendered now for a person, or kept for the one `result` event `finish_run`
        writes with the final exit code (which a metrics file that cannot be written may still change)."""
        if self.json_mode:
            _run.result = {k: v for k, v in payload.items() if k != "event"}
            _run.command = _run.command or _command_path(click.get_current_context(silent=True))
        elif not self.quiet:
            render()

    def add_metrics(self, metrics: Sequence[Metric]) -> None:
        """This command's metrics beyond the common four; written by `finish_run`, only with --metrics-file. Each
        name starts with the command's prefix (`drtool_snapshot_create_...`), else the file is refused."""
        _run.metrics.extend(metrics)

    def echo(self, text: str = "") -> None:
        """Print a rendered line. Its values may come from data, so controls and bidi characters are escaped; the
        renderer's own line breaks stay (a value that may hold one is passed through `one_line` first)."""
        click.echo(for_terminal(redact(text)))


pass_app = click.make_pass_decorator(App)

CA_BUNDLE_HELP = "CA certificate(s) that signed the S3/MinIO endpoint's TLS certificate (s3.ca_bundle)."
NO_VERIFY_TLS_HELP = "Do not verify TLS certificates (s3.verify_tls=false; prints a warning; tests only)."
LOG_FORMAT_HELP = (f"Format of the log lines on stderr (env {LOG_FORMAT_ENV}); auto: text on a terminal, JSON lines "
                   "otherwise or with --json.")
LOG_FORMAT_TYPE = click.Choice(LOG_FORMATS, case_sensitive=False)


def _global_option_callback(attr: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """Store a global option given after the subcommand on the run's App, as if given before it."""

    def callback(ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
        # Click calls this for every global option of the command, given or not: the run now knows its command,
        # for the final `result` event and the metrics (a usage error before it: drtool.cli.main reads exc.ctx).
        _run.command = _command_path(ctx)
        if value in (None, (), False, 0):
            return value
        app = ctx.find_object(App)
        if app is None:
            return value
        if attr == "dify_hosts":
            app.dify_hosts = (*app.dify_hosts, *value)
        elif attr == "ca_bundle":
            app.tls_overrides["s3.ca_bundle"] = value
        elif attr == "no_verify_tls":
            app.tls_overrides["s3.verify_tls"] = False
        elif attr == "verbosity":
            app.verbosity += int(value)
        else:
            setattr(app, attr, value)
        if attr in ("verbosity", "quiet", "json_mode", "log_format"):
            from drtool.log import setup_logging

            setup_logging(verbosity=app.verbosity, quiet=app.quiet, json_mode=app.json_mode,
                          log_format=app.log_format)
        return value

    return callback


def global_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Accept drtool's global options after the command name too (`drtool config show --json`)."""
    options = [
        click.option("--config", type=click.Path(dir_okay=False), expose_value=False,
                     callback=_global_option_callback("config_path"), help="drtool.toml to read."),
        click.option("--dify-env", type=click.Path(dir_okay=False), expose_value=False,
                     callback=_global_option_callback("dify_env_path"), help="A Dify docker/.env to read."),
        click.option("--dify-host", multiple=True, metavar="NAME=HOST", expose_value=False,
                     callback=_global_option_callback("dify_hosts"), help="Replace a Dify compose host name."),
        click.option("--ca-bundle", type=click.Path(dir_okay=False), expose_value=False,
                     callback=_global_option_callback("ca_bundle"), help=CA_BUNDLE_HELP),
        click.option("--no-verify-tls", is_flag=True, expose_value=False,
                     callback=_global_option_callback("no_verify_tls"), help=NO_VERIFY_TLS_HELP),
        click.option("--json", is_flag=True, expose_value=False, callback=_global_option_callback("json_mode"),
                     help="One JSON object per event or result on stdout."),
        click.option("--log-format", type=LOG_FORMAT_TYPE, default=None, expose_value=False,
                     callback=_global_option_callback("log_format"), help=LOG_FORMAT_HELP),
        click.option("-v", "--verbose", count=True, expose_value=False,
                     callback=_global_option_callback("verbosity"), help="More output on stderr."),
        click.option("-q", "--quiet", is_flag=True, expose_value=False, callback=_global_option_callback("quiet"),
                     help="Only errors on stderr, and one line saying why whenever the exit code is not 0."),
    ]
    for option in reversed(options):
        command = option(command)
    return command
