"""The ``console`` notifier: print alerts to stdout or stderr (demos, cron mail, debugging)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import ClassVar, Literal, TextIO

from trialwatch.notifiers.base import Alert, DeliveryError, NotifierConfig
from trialwatch.notifiers.render import render_text, subject


class ConsoleConfig(NotifierConfig):
    """``[channels.X]`` with ``type = "console"``."""

    stream: Literal["stdout", "stderr"] = "stdout"


class ConsoleNotifier:
    """Print each alert as readable text to stdout (or stderr)."""

    name: ClassVar[str] = "console"
    Config: ClassVar[type[NotifierConfig]] = ConsoleConfig

    def __init__(
        self, config: ConsoleConfig, env: Mapping[str, str], *, stream: TextIO | None = None
    ) -> None:
        """``stream`` overrides ``config.stream`` (tests, embedding)."""
        self.config = config
        self._stream = stream

    def __repr__(self) -> str:
        return f"ConsoleNotifier(stream={self.config.stream!r})"

    def send(self, alert: Alert) -> None:
        # Looked up at send time so redirected sys.stdout/sys.stderr are honoured.
        out = self._stream if self._stream is not None else getattr(sys, self.config.stream)
        text = f"{subject(alert)}\n{render_text(alert)}\n"
        try:
            out.write(text)
            out.flush()
        except (OSError, ValueError) as exc:  # closed pipe, closed file
            raise DeliveryError(f"console {self.config.stream}: {exc}") from exc
