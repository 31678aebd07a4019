"""What one cycle did: the counts, records, events and failures ``run_cycle`` returns.

Every stage of a cycle (listing, queries, fetching and recording, the shared rounds) adds
to the one ``CycleReport`` it is handed; ``run_cycle`` stores its totals in the ``cycles``
table when the cycle ends.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog

from trialwatch.monitor.events import ChangeEvent
from trialwatch.monitor.sources.ctgov.client import RegistryBlocked, RegistryError
from trialwatch.monitor.versioning import RecordOutcome

log = structlog.get_logger(__name__)


@dataclass
class CycleReport:
    started_at: datetime
    finished_at: datetime | None = None
    outcome: str = "running"
    watched: int = 0
    fetched: int = 0
    changed: int = 0
    requests: int = 0
    strategy: str = "ids"
    records: list[RecordOutcome] = field(default_factory=list)
    events: list[ChangeEvent] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    data_timestamp: str | None = None
    queries_run: int = 0  # saved queries that answered (their matches may be newly watched)
    round_id: int | None = None  # the shared round (PostgreSQL workers), None on SQLite
    reverified: int = 0  # trials re-fetched by rolling re-verification (not listed as moved)
    # Asked before a failed batch counts as a failure: once the daemon is stopping (SIGTERM),
    # what its registry client refuses is work left for the next cycle, not a fault.
    stopping: Callable[[], bool] = field(default=lambda: False, repr=False)
    skipped: int = 0  # trials (or queries) left undone because the cycle was stopped
    failed_trials: int = 0  # trials in batches that failed

    @property
    def covered(self) -> int:
        """Watched trials the cycle got through (neither in a failed batch nor skipped)."""
        return max(self.watched - self.failed_trials - self.skipped, 0)

    def skip_if_stopping(self, count: int, step: str) -> bool:
        """True (and ``count`` noted as skipped) when the cycle is being stopped."""
        if not self.stopping():
            return False
        self.skipped += count
        log.info("cycle.batch_skipped", step=step, trials=count, reason="stopping")
        return True

    def to_json(self) -> dict[str, Any]:
        return {"records": [r.to_json() for r in self.records],
                "events": [e.to_json() for e in self.events],
                "requests": self.requests, "failures": self.failures}

    def fail(self, chunk: Sequence[str], step: str, exc: RegistryError) -> None:
        """A batch of trials failed at ``step`` (listing, fetch, confirm): noted, logged;
        nothing of it is recorded, and the next cycle tries again. While stopping it is
        only skipped (the refusal was the stop, not the registry)."""
        if self.skip_if_stopping(len(chunk), step):
            return
        self.failed_trials += len(chunk)
        reason = "blocked by the registry" if isinstance(exc, RegistryBlocked) else str(exc)
        first = chunk[0] if len(chunk) == 1 else f"{chunk[0]}..{chunk[-1]} ({len(chunk)} trials)"
        self.failures.append(f"{step} {first}: {reason}")
        log.warning("cycle.batch_failed", step=step, trials=len(chunk), reason=reason)
