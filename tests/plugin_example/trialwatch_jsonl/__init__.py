"""An example third-party trialwatch notifier: append each alert as one JSON line to a file.

This is the whole contract a plugin fulfils (see ``trialwatch.notifiers.base.Notifier``):

* a class attribute ``name`` — the ``type`` users write in ``[channels.X]``; it must equal
  the entry point name;
* a class attribute ``Config`` — a ``trialwatch.notifiers.base.NotifierConfig`` subclass (pydantic,
  unknown keys rejected) validating the rest of the table; annotate it
  ``ClassVar[type[NotifierConfig]]`` so type checkers accept the class as a ``Notifier``;
* a constructor ``__init__(self, config, env)`` — ``env`` is the process environment; read
  secrets from variables the config names, and raise ``ConfigurationError`` for problems
  (the key is relative: trialwatch prefixes it with ``channels.X.``);
* ``send(self, alert) -> None`` — raise ``DeliveryError`` when delivery fails; the outbox
  retries the alert later with the same ``alert.id``, so make delivery idempotent by id
  where the destination allows it.

It is published through the entry-point group ``trialwatch.notifiers`` (see pyproject.toml
next to this package).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from trialwatch.notifiers.base import Alert, ConfigurationError, DeliveryError, NotifierConfig


class JsonLinesConfig(NotifierConfig):
    """``[channels.X]`` with ``type = "jsonl"``."""

    path: str = Field(min_length=1)


class JsonLinesNotifier:
    """Append each alert's JSON payload as one line to a file."""

    name: ClassVar[str] = "jsonl"
    Config: ClassVar[type[NotifierConfig]] = JsonLinesConfig

    def __init__(self, config: JsonLinesConfig, env: Mapping[str, str]) -> None:
        self.path = Path(config.path).expanduser()
        if not self.path.parent.is_dir():
            raise ConfigurationError("path", f"directory {self.path.parent} does not exist")

    def send(self, alert: Alert) -> None:
        line = json.dumps(alert.payload(), ensure_ascii=False, separators=(",", ":"))
        try:
            with self.path.open("a", encoding="utf-8") as out:
                out.write(line + "\n")
        except OSError as exc:
            raise DeliveryError(f"jsonl {self.path}: {exc.strerror or exc}") from exc
