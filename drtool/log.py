"""Logging to stderr: readable on a terminal, JSON lines for machines, secrets always masked.

stdout is reserved for results (and `--json` events), so a cron job can pipe it without log noise.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from drtool.redact import redact

LOGGER_NAME = "drtool"


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
        return json.dumps(payload, default=str)


class _HumanFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prefix = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        text = f"{prefix}{record.getMessage()}"
        if record.exc_info:
            text += "\n" + redact(self.formatException(record.exc_info))
        return text


def setup_logging(*, verbosity: int, quiet: bool, json_mode: bool) -> None:
    """Quiet by default (cron), -v for progress, -vv for debug, -q for errors only."""
    level = logging.ERROR if quiet else {0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RedactingFilter())
    use_json = json_mode or not sys.stderr.isatty()
    handler.setFormatter(_JsonFormatter() if use_json else _HumanFormatter())
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
