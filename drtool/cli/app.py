"""State shared by every command: global options, lazily loaded settings, and result output."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import click

from drtool.config import Settings, load_settings
from drtool.core.terminal import for_terminal
from drtool.log import LOG_FORMAT_ENV, LOG_FORMATS
from drtool.redact import redact, redact_obj


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
    context = click.get_current_context(silent=True)
    command = context.command_path.removeprefix("drtool").strip() if context is not None else ""
    return Outcome(int(code), reason, command)


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
        """Load settings once per run; a command passes the flags it owns as `section.key` overrides."""
        merged = {**self.tls_overrides, **(flags or {})}
        if self.dify_hosts:
            merged["dify.hosts"] = ",".join(self.dify_hosts)
        if self._settings is None or merged:
            self._settings = load_settings(
                flags=merged, config_path=self.config_path, dify_env_path=self.dify_env_path
            )
        return self._settings

    def emit(self, event: Mapping[str, Any]) -> None:
        """One JSON object per line on stdout, only in --json mode; human output is the renderer's job."""
        if self.json_mode:
            # ensure_ascii: no control or bidi character reaches a terminal that shows the JSON, values exact
            sys.stdout.write(json.dumps(redact_obj(dict(event)), default=str, ensure_ascii=True) + "\n")
            sys.stdout.flush()

    def result(self, payload: Mapping[str, Any], render: Callable[[], None]) -> None:
        if self.json_mode:
            self.emit(payload)
        elif not self.quiet:
            render()

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
