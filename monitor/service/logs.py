"""structlog set-up, done once at start: timestamp, level, bound context, redaction, renderer.

Logs always go to stderr (stdout is for command output and ``--json``). The renderer is
the console one on a TTY and JSON lines otherwise, unless ``--log-format`` says.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

SECRET_MARKERS = ("password", "secret", "token", "authorization", "api_key")
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR, "critical": logging.CRITICAL}


def redact_secrets(_logger: Any, _method: str, event: MutableMapping[str, Any]
                   ) -> MutableMapping[str, Any]:
    """Never let a value logged under a secret-looking key reach the output."""
    for key in list(event):
        if any(marker in key.lower() for marker in SECRET_MARKERS) and not key.endswith("_env"):
            event[key] = "***"
    return event


def configure_logging(fmt: str = "auto", level: str = "info", stream: TextIO | None = None
                      ) -> None:
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    renderer: Any
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    else:
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_secrets,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS.get(level.lower(), 20)),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
