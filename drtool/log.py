"""Logging to stderr: readable on a terminal, JSON lines for machines, secrets always masked.

stdout is reserved for results (and `--json` events), so a cron job can pipe it without log noise.

The format is `--log-format text|json` or `DRTOOL_LOG_FORMAT`; `auto` (the default) is text on a terminal and JSON
lines otherwise (and with `--json`), which is what log shippers reading a CronJob's or a unit's stderr expect. Cron
mail reads better with `--log-format text`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from datetime import UTC, datetime

from drtool.core.terminal import for_terminal
from drtool.redact import redact

LOGGER_NAME = "drtool"
LOG_FORMATS = ("auto", "text", "json")
LOG_FORMAT_ENV = "DRTOOL_LOG_FORMAT"

# The most severe record that reached stderr in this run: `drtool.cli.main.run` reads it to know whether a non-zero
# exit has already been explained (the -q guarantee), so the reason is printed once, never zero times.
_loudest = logging.NOTSET


def loudest_emitted() -> int:
    """Level of the most severe record written to stderr since `reset_loudest` (NOTSET if none)."""
    return _loudest


def reset_loudest() -> None:
    global _loudest
    _loudest = logging.NOTSET


class _LoudestFilter(logging.Filter):
    """Sits on the handler, so it sees only records that passed the level threshold and are really written."""

    def filter(self, record: logging.LogRecord) -> bool:
        global _loudest
        _loudest = max(_loudest, record.levelno)
        return True


class _RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        return True


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            payload.update(fields)
        if record.exc_info:
            payload["traceback"] = redact(self.formatException(record.exc_info))
        # ensure_ascii: controls, bidi and every non-ASCII character as \uNNNN; values stay exact for a parser
        return json.dumps(payload, default=str, ensure_ascii=True)


# A line break inside a message that is not followed by indentation: indented, so that no record (and no value from
# data inside one) can start a line that looks like the start of another record ("error: ...").
_UNINDENTED_CONTINUATION = re.compile(r"\n(?=[^ \t\n])")


class _HumanFormatter(logging.Formatter):
    """Plain text for a terminal: values from data (keys, holders, server errors) reach it inside messages, so every
    control and bidi character is escaped (drtool.core.terminal) before the terminal can act on it."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        message = _UNINDENTED_CONTINUATION.sub("\n  ", for_terminal(record.getMessage()))
        text = f"{prefix}{message}"
        if record.exc_info:
            text += "\n" + for_terminal(redact(self.formatException(record.exc_info)))
        return text


def use_json_logs(log_format: str | None, json_mode: bool) -> bool:
    """--log-format, else DRTOOL_LOG_FORMAT, else auto: JSON with --json or when stderr is not a terminal.

    An unknown DRTOOL_LOG_FORMAT counts as auto here; the CLI option, which reads the same variable, rejects it."""
    chosen = (log_format or os.environ.get(LOG_FORMAT_ENV) or "auto").strip().lower()
    if chosen == "text":
        return False
    if chosen == "json":
        return True
    return json_mode or not sys.stderr.isatty()


def setup_logging(*, verbosity: int, quiet: bool, json_mode: bool, log_format: str | None = None) -> None:
    """Quiet by default (cron), -v for progress, -vv for debug, -q for errors only (a non-zero exit still says why:
    drtool.cli.main.run)."""
    level = logging.ERROR if quiet else {0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RedactingFilter())
    handler.addFilter(_LoudestFilter())
    handler.setFormatter(_JsonFormatter() if use_json_logs(log_format, json_mode) else _HumanFormatter())
    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
    # SDK loggers are chatty and may echo request details; let them through only when debugging.
    for noisy in ("botocore", "boto3", "urllib3", "httpx", "httpcore", "pymilvus", "weaviate"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbosity >= 3 else logging.WARNING)
    root = logging.getLogger()
    root.handlers[:] = [handler] if verbosity >= 3 else []


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(f"{LOGGER_NAME}.{name}")
