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

from trialwatch.monitor.redaction import terminal_line, terminal_text

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


def terminal_safe(_logger: Any, _method: str, event: MutableMapping[str, Any]
                  ) -> MutableMapping[str, Any]:
    """For the console renderer, which prints the event name and a traceback as they are
    (other values it shows as ``repr``): no control character in them reaches the terminal
    (a traceback keeps its line breaks), so only the renderer's own colours do."""
    if isinstance(event.get("event"), str):
        event["event"] = terminal_line(event["event"])
    if isinstance(event.get("exception"), str):
        event["exception"] = terminal_text(event["exception"])
    return event


def configure_logging(fmt: str = "auto", level: str = "info", stream: TextIO | None = None
                      ) -> None:
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    renderer: Any
    rendering: list[Any] = []
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
        rendering = [terminal_safe]
    else:
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_secrets,
            structlog.processors.format_exc_info,
            *rendering,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS.get(level.lower(), 20)),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
