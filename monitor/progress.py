"""Progress of long work as log lines, at most one every few seconds.

On a pipe (cron, systemd) there is no progress bar: ``check`` of many trials, ``backfill``
and ``ingest`` of a folder log a ``progress`` line instead (``task``, ``done``, ``total``,
``elapsed_s``), the first one only once the work has taken ``every`` seconds, so short work
logs nothing and long work a steady trickle, not a line per item.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import structlog

T = TypeVar("T")
EVERY_SECONDS = 5.0


class ProgressLog:
    """Counts work done and logs ``progress`` when ``every`` seconds passed since the last."""

    def __init__(self, task: str, total: int | None = None, *, every: float = EVERY_SECONDS,
                 clock: Callable[[], float] = time.monotonic, logger: Any = None) -> None:
        self.task, self.total, self.every, self.clock = task, total, every, clock
        self.log = logger if logger is not None else structlog.get_logger("trialwatch")
        self.done = 0
        self.started = self.last = clock()
        self.lines = 0

    def advance(self, count: int = 1, **fields: Any) -> None:
        self.done += count
        now = self.clock()
        if now - self.last < self.every:
            return
        self.last = now
        self.lines += 1
        self.log.info("progress", task=self.task, done=self.done, total=self.total,
                      elapsed_s=round(now - self.started), **fields)

    def over(self, items: Iterable[T]) -> Iterator[T]:
        """``items`` one by one, each counted once it has been handled."""
        for item in items:
            yield item
            self.advance()
