"""Rounds and leases: how several workers split one cycle's trials on a shared PostgreSQL.

A *round* (``cycle_rounds`` row) is one pass over the watched trials for one registry data
load. Workers join the round of the data load they see, then take batches of trials not yet
checked in it with ``SELECT ... FOR UPDATE SKIP LOCKED`` and stamp them with a lease
(``lease_owner``, ``lease_until``). A checked trial gets ``checked_round = round``; a worker
that dies leaves its lease to expire, after which any worker takes the batch over.

Lease times come from the database clock (``now()`` on PostgreSQL), so workers on hosts
whose clocks disagree still agree on when a lease has expired. Every function here takes a
Session; callers own the (short) transactions. The orchestration is ``monitor.workers``.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from storage.models import CycleRound, SavedQuery, Trial

# pg_advisory_xact_lock key serializing "find or open the round" (any constant will do).
ROUND_LOCK_KEY = 0x7472_6961_6C77  # "trialw"


@dataclass(frozen=True)
class LeasedTrial:
    """A trial this worker now holds for the round."""

    nct_id: str
    registry_last_update: str | None
    has_version: bool


@dataclass(frozen=True)
class RoundState:
    id: int
    data_timestamp: str | None
    closed: bool
    prepared_at: datetime | None
    strategy: str | None
    stamps: dict[str, str | None] | None


def lease_owner(worker: str | None = None) -> str:
    """A lease owner unique to one cycle call: the worker's name plus a random tag."""
    base = worker or f"{socket.gethostname()}:{os.getpid()}"
    return f"{base[:55]}/{secrets.token_hex(4)}"


def db_now(session: Session) -> datetime:
    """The database's clock (transaction start on PostgreSQL); the local clock on SQLite."""
    if session.get_bind().dialect.name == "postgresql":
        moment = session.scalar(select(func.now()))
        assert isinstance(moment, datetime)
        return moment.astimezone(UTC)
    return datetime.now(UTC)


def _state(row: CycleRound) -> RoundState:
    return RoundState(id=row.id, data_timestamp=row.data_timestamp,
                      closed=row.closed_at is not None, prepared_at=row.prepared_at,
                      strategy=row.strategy, stamps=row.stamps)


def join_round(session: Session, *, data_timestamp: str, owner: str,
               now: datetime) -> RoundState:
    """The round for this registry data load, opened if there is none (or the last failed).

    A closed round whose checks all succeeded is joined again: trials watched since then are
    still "not checked in it", everything else is done. A closed round with failures is
    followed by a fresh round for the same data load, so the failed trials are retried.
    ``now`` (the cycle's clock) becomes ``opened_at``, the base of the next round's
    changed-since listing, as a cycle's start is on SQLite.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(ROUND_LOCK_KEY)))
    stmt = (select(CycleRound).where(CycleRound.data_timestamp == data_timestamp)
            .order_by(CycleRound.id.desc()).limit(1).with_for_update())
    row = session.scalars(stmt).first()
    if row is None or (row.closed_at is not None and row.failures > 0):
        row = CycleRound(data_timestamp=data_timestamp, opened_at=now,
                         opened_by=owner, workers=0, checked=0, fetched=0, changed=0,
                         events=0, requests=0, failures=0)
        session.add(row)
    row.workers += 1
    session.flush()
    return _state(row)


def round_state(session: Session, round_id: int) -> RoundState:
    row = session.get(CycleRound, round_id)
    assert row is not None
    return _state(row)


def has_unrun_query(session: Session) -> bool:
    stmt = select(SavedQuery.id).where(SavedQuery.last_success_at.is_(None)).limit(1)
    return session.scalars(stmt).first() is not None


def claim_preparation(session: Session, round_id: int, owner: str, lease: timedelta,
                      *, seen_prepared_at: datetime | None) -> str:
    """Try to become the worker that prepares the round.

    Returns ``"claimed"`` (go ahead), ``"done"`` (someone prepared it since
    ``seen_prepared_at``) or ``"busy"`` (another worker holds an unexpired preparation lease).
    """
    row = session.get(CycleRound, round_id, with_for_update=True)
    assert row is not None
    if row.prepared_at is not None and row.prepared_at != seen_prepared_at:
        return "done"
    now = db_now(session)
    if (row.prep_owner not in (None, owner) and row.prep_until is not None
            and row.prep_until > now):
        return "busy"
    row.prep_owner, row.prep_until = owner, now + lease
    return "claimed"


def renew_preparation(session: Session, round_id: int, owner: str, lease: timedelta) -> None:
    session.execute(update(CycleRound)
                    .where(CycleRound.id == round_id, CycleRound.prep_owner == owner)
                    .values(prep_until=db_now(session) + lease))


def finish_preparation(session: Session, round_id: int, owner: str, *, strategy: str,
                       stamps: dict[str, str | None] | None) -> None:
    row = session.get(CycleRound, round_id, with_for_update=True)
    assert row is not None
    if row.strategy is None:  # a re-preparation (a new saved query) keeps the round's plan
        row.strategy, row.stamps = strategy, stamps
    row.prepared_at = db_now(session)
    row.prep_owner = row.prep_until = None


def last_ok_round_opened(session: Session, before: int) -> datetime | None:
    """When the latest round that finished without failures was opened."""
    stmt = (select(CycleRound.opened_at)
            .where(CycleRound.id < before, CycleRound.closed_at.is_not(None),
                   CycleRound.failures == 0)
            .order_by(CycleRound.id.desc()).limit(1))
    return session.scalars(stmt).first()


def _unchecked(round_id: int) -> Any:
    return (Trial.watched.is_(True),
            or_(Trial.checked_round.is_(None), Trial.checked_round < round_id))


def lease_trials(session: Session, round_id: int, owner: str, lease: timedelta,
                 limit: int) -> list[LeasedTrial]:
    """Lease up to ``limit`` watched trials not checked in the round and not leased by a
    live worker; rows another transaction holds are skipped, never waited for."""
    now = db_now(session)
    stmt = (select(Trial)
            .where(*_unchecked(round_id),
                   or_(Trial.lease_until.is_(None), Trial.lease_until <= now))
            .order_by(Trial.id).limit(limit)
            .with_for_update(skip_locked=True))
    rows = session.scalars(stmt).all()
    for row in rows:
        row.lease_owner, row.lease_until = owner, now + lease
    return sorted((LeasedTrial(r.nct_id, r.registry_last_update, bool(r.latest_version))
                   for r in rows), key=lambda t: t.nct_id)


def claim_trials(session: Session, trials: Sequence[Trial], owner: str,
                 lease: timedelta) -> None:
    """Lease trials this worker is creating or updating itself (new query matches)."""
    until = db_now(session) + lease
    for row in trials:
        row.lease_owner, row.lease_until = owner, until


def held(session: Session, owner: str, nct_ids: Sequence[str]) -> dict[str, Trial]:
    """The trials among these that this worker still leases, by NCT id; locked until commit
    so nobody takes them over while their new versions are written."""
    stmt = (select(Trial)
            .where(Trial.nct_id.in_(list(nct_ids)), Trial.lease_owner == owner)
            .with_for_update())
    return {row.nct_id: row for row in session.scalars(stmt)}


def renew(session: Session, owner: str, lease: timedelta) -> int:
    """Push back the expiry of every lease this worker holds (a heartbeat)."""
    result = session.execute(update(Trial).where(Trial.lease_owner == owner)
                             .values(lease_until=db_now(session) + lease))
    return int(getattr(result, "rowcount", 0) or 0)


def mark_checked(session: Session, round_id: int, owner: str, nct_ids: Sequence[str]) -> int:
    """The trials are done for the round: stamp it and drop the lease (only ours)."""
    result = session.execute(
        update(Trial)
        .where(Trial.nct_id.in_(list(nct_ids)), Trial.lease_owner == owner)
        .values(checked_round=round_id, lease_owner=None, lease_until=None))
    return int(getattr(result, "rowcount", 0) or 0)


def release(session: Session, owner: str) -> int:
    """Give back every lease this worker holds, unchecked (it is stopping or failed)."""
    result = session.execute(update(Trial).where(Trial.lease_owner == owner)
                             .values(lease_owner=None, lease_until=None))
    session.execute(update(CycleRound).where(CycleRound.prep_owner == owner)
                    .values(prep_owner=None, prep_until=None))
    return int(getattr(result, "rowcount", 0) or 0)


def unchecked_count(session: Session, round_id: int) -> int:
    stmt = select(func.count()).select_from(Trial).where(*_unchecked(round_id))
    return int(session.scalar(stmt) or 0)


def add_counts(session: Session, round_id: int, **counts: int) -> None:
    """Add this worker's counts to the round's totals (atomic increments)."""
    values = {name: getattr(CycleRound, name) + n for name, n in counts.items() if n}
    if values:
        session.execute(update(CycleRound).where(CycleRound.id == round_id).values(**values))


def close_round(session: Session, round_id: int) -> bool:
    """Close the round if every watched trial has been checked in it; True when closed."""
    if unchecked_count(session, round_id):
        return False
    session.execute(update(CycleRound)
                    .where(CycleRound.id == round_id, CycleRound.closed_at.is_(None))
                    .values(closed_at=db_now(session)))
    return True
