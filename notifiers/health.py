"""The monitor's own health: when a subject starts failing or recovers, and its ``system`` alert.

Subjects (rows of ``monitor_health``): ``checks`` (fetch cycles; what a cycle counts as is
``trialwatch.monitor.health.cycle_failed``) and ``channel:<name>`` (deliveries of one
channel; the outbox reports each attempt as it marks the row).

``decide`` is the rule, pure: each observation is a failure (with a reason) or a success.
``failing_after`` consecutive failures — or one failure ``at_once`` (an alert went dead) —
flip the subject to ``failing``, with ``since`` = the first failure of the streak and
``reason`` = the latest failure's. Further failures change nothing that is sent. A success
while failing flips it back to ``ok``. Each flip is ONE ``system`` alert, never one per
cycle; a success that ends a streak too short to have flipped sends nothing.

``observe`` is the storage edge: in the caller's transaction it locks the subject's row,
applies ``decide``, and for a flip writes one outbox row per channel given (``kind``
"system", the ``Alert.system`` mapping frozen in ``payload``, an id derived from subject,
state, failing-since and channel), so the flip and its alerts are committed together or not
at all, and a retried transaction cannot write them twice.

The ``monitor_health`` row: ``state``; ``failures`` (consecutive); ``since`` (failing, or ok
with ``failures`` > 0: the streak's first failure; ok after a recovery: when it recovered;
else None); ``reason`` (the latest failure's, None when ok).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from trialwatch.monitor.events import iso_utc
from trialwatch.storage.models import MonitorHealth, OutboxEntry
from trialwatch.storage.repository import insert_or_ignore

OK = "ok"
FAILING = "failing"
CHECKS = "checks"
REASON_LIMIT = 500  # characters of a failure's reason kept and sent
#: Failures in a row before a subject fails, when a caller does not say (``[alerts]
#: failing_after`` has the same default).
DEFAULT_FAILING_AFTER = 3


def channel_subject(channel: str) -> str:
    return f"channel:{channel}"


@dataclass(frozen=True)
class Health:
    """One subject's health as ``monitor_health`` keeps it."""

    subject: str
    state: str = OK
    failures: int = 0
    since: datetime | None = None
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"subject": self.subject, "state": self.state, "failures": self.failures,
                "since": iso_utc(self.since) if self.since else None, "reason": self.reason}


@dataclass(frozen=True)
class Flip:
    """A subject changed state: what its one ``system`` alert says."""

    subject: str
    state: str  # the new state
    since: datetime  # failing: the first failure; ok: when it recovered
    reason: str | None
    failing_since: datetime  # the start of the failing period this flip begins or ends

    @property
    def summary(self) -> str:
        name = ("checks" if self.subject == CHECKS
                else f"channel {self.subject.removeprefix('channel:')}")
        if self.state == FAILING:
            verb = "are" if self.subject == CHECKS else "is"
            return f"{name} {verb} failing since {iso_utc(self.since)}: {self.reason}"
        return f"{name} recovered (failing since {iso_utc(self.failing_since)})"

    def payload(self) -> dict[str, Any]:
        """``Alert.system``, as the outbox row freezes it and the webhook sends it."""
        return {"subject": self.subject, "state": self.state, "since": iso_utc(self.since),
                "reason": self.reason, "summary": self.summary}

    def alert_id(self, channel: str) -> str:
        """Stable for one flip to one channel: the same flip can never be queued twice."""
        key = f"{self.subject}|{self.state}|{iso_utc(self.failing_since)}|{channel}"
        return f"sys_{hashlib.sha256(key.encode()).hexdigest()[:32]}"


def decide(current: Health, *, failed: bool, at: datetime, failing_after: int,
           reason: str | None = None, at_once: bool = False) -> tuple[Health, Flip | None]:
    """The subject's health after one observation, and the flip it causes (if any)."""
    if failed:
        reason = " ".join((reason or "unknown error").split())[:REASON_LIMIT]
        failures = current.failures + 1
        since = current.since if current.failures and current.since is not None else at
        if current.state == FAILING:
            return replace(current, failures=failures, reason=reason), None
        if failures >= failing_after or at_once:
            return (Health(current.subject, FAILING, failures, since, reason),
                    Flip(current.subject, FAILING, since, reason, failing_since=since))
        return Health(current.subject, OK, failures, since, reason), None
    if current.state == FAILING:
        failing_since = current.since or at
        return (Health(current.subject, OK, 0, at, None),
                Flip(current.subject, OK, at, None, failing_since=failing_since))
    if current.failures:
        return Health(current.subject, OK, 0, None, None), None
    return current, None


def observe(session: Session, subject: str, *, failed: bool, at: datetime, failing_after: int,
            reason: str | None = None, at_once: bool = False,
            channels: Sequence[str] = ()) -> Flip | None:
    """Record one observation of ``subject`` in the caller's transaction; a flip also queues
    its ``system`` alert to each of ``channels``. A success of a subject without a row (it
    never failed) writes nothing."""
    if failed:
        _ensure_row(session, subject, at)
    else:  # the common case, a delivery to a healthy channel: read, lock nothing, write nothing
        seen = session.get(MonitorHealth, subject)
        if seen is None or (seen.state == OK and not seen.failures):
            return None
    row = session.get(MonitorHealth, subject, with_for_update=True, populate_existing=True)
    if row is None:
        return None
    current = Health(subject, row.state, row.failures, row.since, row.reason)
    new, flip = decide(current, failed=failed, at=at, failing_after=failing_after,
                       reason=reason, at_once=at_once)
    if new == current:
        return None
    row.state, row.failures, row.since, row.reason = new.state, new.failures, new.since, \
        new.reason
    row.updated_at = at
    if flip is not None:
        for channel in dict.fromkeys(channels):
            if session.get(OutboxEntry, flip.alert_id(channel)) is None:
                session.add(OutboxEntry(
                    id=flip.alert_id(channel), channel=channel, kind="system", trial_id=None,
                    version=0, event_ids=[], payload=flip.payload(), status="pending",
                    attempts=0, next_attempt_at=at, created_at=at))
    return flip


def health_rows(session: Session) -> list[Health]:
    """Every subject's health, ``checks`` first, then the channels by name."""
    rows = session.scalars(select(MonitorHealth)).all()
    found = [Health(r.subject, r.state, r.failures, r.since, r.reason) for r in rows]
    return sorted(found, key=lambda h: (h.subject != CHECKS, h.subject))


def _ensure_row(session: Session, subject: str, at: datetime) -> None:
    """Insert the subject's row unless it exists (without a race between two workers)."""
    session.execute(insert_or_ignore(session)(MonitorHealth).values(
        subject=subject, state=OK, failures=0, updated_at=at).on_conflict_do_nothing())
