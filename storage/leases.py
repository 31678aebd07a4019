"""Rounds and leases: how several workers split one cycle's trials on a shared PostgreSQL.

A *round* (``cycle_rounds`` row) is one pass over the watched trials for one registry data
load. Workers join the round of the data load they see, then take batches of trials not yet
checked in it with ``SELECT ... FOR UPDATE SKIP LOCKED`` and stamp them with a lease
(``lease_owner``, ``lease_until``). A checked trial gets ``checked_round = round``; a worker
that dies leaves its lease to expire, after which any worker takes the batch over.

Lease times come from the database clock (``now()`` on PostgreSQL), so workers on hosts
whose clocks disagree still agree on when a lease has expired. Every function here takes a
Session; callers own the (short) transactions. The orchestration is
``trialwatch.monitor.cycle.workers``.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, not_, or_, select, update
from sqlalchemy.orm import Session, aliased

from trialwatch.storage import repository as repo
from trialwatch.storage.models import CycleRound, SavedQuery, Trial

# pg_advisory_xact_lock key serializing "find or open the round" (any constant will do).
ROUND_LOCK_KEY = 0x7472_6961_6C77  # "trialw"


@dataclass(frozen=True)
class LeasedTrial:
    """A trial this worker now holds for the round."""

    nct_id: str
    registry_last_update: str | None
    has_version: bool
    overall_status: str | None = None
    removed: bool = False


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


def known_ids(session: Session) -> set[str]:
    """NCT ids of every trial in the database, watched or not."""
    return set(session.scalars(select(Trial.nct_id)))


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


def _lease_free(now: datetime) -> Any:
    """Not leased, or leased by a worker that stopped renewing (expired: up for grabs)."""
    return or_(Trial.lease_until.is_(None), Trial.lease_until <= now)


def _needs_fetch(round_id: int) -> Any:
    """In a changed-since round, the trials to fetch: never fetched (no version yet), or listed
    in the round's changed-since stamps with another last-update date than the one recorded.

    The stamps (``cycle_rounds.stamps``, JSONB) are expanded once per statement and joined
    on NCT id (an uncorrelated subquery), not looked up row by row. PostgreSQL only, as are
    shared rounds.
    """
    stamps = select(CycleRound.stamps).where(CycleRound.id == round_id).scalar_subquery()
    listed = func.jsonb_each_text(stamps).table_valued("key", "value", name="listed")
    stamped = aliased(Trial, name="stamped")
    moved = (select(stamped.id).join(listed, listed.c.key == stamped.nct_id)
             .where(listed.c.value.is_distinct_from(stamped.registry_last_update)))
    return or_(Trial.latest_version == 0, Trial.id.in_(moved))


def lease_trials(session: Session, round_id: int, owner: str, lease: timedelta,
                 limit: int) -> list[LeasedTrial]:
    """Lease up to ``limit`` watched trials not checked in the round and not leased by a
    live worker; rows another transaction holds are skipped, never waited for."""
    return _lease(session, round_id, owner, lease, limit)


def lease_trials_to_fetch(session: Session, round_id: int, owner: str, lease: timedelta,
                          limit: int) -> list[LeasedTrial]:
    """Like ``lease_trials``, but only the trials a changed-since round must fetch
    (``_needs_fetch``); the others are stamped checked by ``stamp_unmoved``."""
    return _lease(session, round_id, owner, lease, limit, _needs_fetch(round_id))


def _lease(session: Session, round_id: int, owner: str, lease: timedelta, limit: int,
           *conditions: Any) -> list[LeasedTrial]:
    """One statement: lock up to ``limit`` free unchecked rows (skipping locked ones), lease
    them and return what the worker needs to know of them; no ORM object per row."""
    now = db_now(session)
    free = (select(Trial.id)
            .where(*_unchecked(round_id), _lease_free(now), *conditions)
            .order_by(Trial.id).limit(limit)
            .with_for_update(skip_locked=True)
            .correlate(None))  # its own scan of trials, not the UPDATE's row
    rows = session.execute(
        update(Trial).where(Trial.id.in_(free))
        .values(lease_owner=owner, lease_until=now + lease)
        .returning(Trial.nct_id, Trial.registry_last_update, Trial.latest_version,
                   Trial.overall_status, Trial.removed_at)
        .execution_options(synchronize_session=False))
    return sorted((LeasedTrial(nct_id, last_update, bool(latest), status, removed is not None)
                   for nct_id, last_update, latest, status, removed in rows),
                  key=lambda t: t.nct_id)


def stamp_unmoved(session: Session, round_id: int) -> int:
    """Stamp checked in a changed-since round every free watched trial it need not fetch.

    One set-based UPDATE, run whenever a worker finds nothing left to lease, so trials
    watched during the round are judged when they appear: with no version they are leased
    and fetched, otherwise the round's listing decides. Rows another worker is locking are
    skipped (never waited for: no deadlock between workers running this at once) and left
    for the next pass; an expired lease is dropped, so its late owner writes nothing.
    """
    now = db_now(session)
    unmoved = (select(Trial.id)
               .where(*_unchecked(round_id), _lease_free(now), not_(_needs_fetch(round_id)))
               .with_for_update(skip_locked=True)
               .correlate(None))
    result = session.execute(
        update(Trial).where(Trial.id.in_(unmoved))
        .values(checked_round=round_id, lease_owner=None, lease_until=None)
        .execution_options(synchronize_session=False))
    return int(getattr(result, "rowcount", 0) or 0)


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
    # One array parameter for a whole batch (~600 ids): an IN list binds each id separately,
    # which cost more than the UPDATE itself.
    result = session.execute(
        update(Trial).where(repo.among(session, Trial.nct_id, nct_ids),
                            Trial.lease_owner == owner)
        .values(checked_round=round_id, lease_owner=None, lease_until=None)
        .execution_options(synchronize_session=False))
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
