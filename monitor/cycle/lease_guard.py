"""A worker's hold on the trials it leased in a shared round (PostgreSQL workers).

The stages that write (queries, recording) take an optional ``LeaseGuard``: with one, they
write only for trials this worker still leases, and renew the lease as they go.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.orm import Session

from trialwatch.storage import leases
from trialwatch.storage.models import Trial


@dataclass(frozen=True)
class LeaseGuard:
    """A worker's hold on leased trials: what it may still write, renewed on every write."""

    owner: str
    lease: timedelta

    def held(self, session: Session, nct_ids: Sequence[str]) -> dict[str, Trial]:
        leases.renew(session, self.owner, self.lease)
        return leases.held(session, self.owner, nct_ids)

    def claim(self, session: Session, trials: Sequence[Trial]) -> None:
        leases.claim_trials(session, trials, self.owner, self.lease)
