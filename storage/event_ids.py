"""Event ids handed out before the events are written, so that a page's events, and the
outbox rows that name them, are written in bulk.

An id is normally known only once its INSERT returns it, and on SQLite the ORM then inserts
such rows one statement each (it cannot match a multi-row RETURNING to its objects). An
outbox row names its events by id, so every page of a cycle had to flush its events one by
one before it could write its alerts. With ids given up front, both go in bulk statements.

* PostgreSQL: ids come from the column's own sequence, ``BLOCK`` at a time (``nextval`` in
  one query); ids a transaction does not use are skipped, as sequences allow.
* SQLite: every transaction holds the database's write lock from its start (BEGIN
  IMMEDIATE, ``trialwatch.storage.engine``), so the ids after ``max(id)`` are this transaction's:
  the
  first call reads it, later ones count on (SQLite itself would pick ``max(id) + 1``).

What a transaction was handed is forgotten when its outermost transaction ends.

Digests (``trialwatch.monitor.digests``) read "every event after id N"; ``settle`` makes
that safe on PostgreSQL, where ids are handed out before the events are committed.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from trialwatch.storage.models import Event

BLOCK = 256  # ids asked from a PostgreSQL sequence at once

_HANDED = "trialwatch.event_ids"  # in session.info: ids still to hand out, or the next one


def allocate(session: Session, count: int) -> list[int]:
    """``count`` new event ids, unique in the database, for this transaction to use."""
    if count <= 0:
        return []
    # On the session's connection, not through the session: asking must not flush what the
    # transaction has pending (that would write a page's first rows alone).
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        pool: list[int] = session.info.setdefault(_HANDED, [])
        if len(pool) < count:
            _hold_shared(connection, session)
            sequence = func.pg_get_serial_sequence("events", "id")
            pool.extend(connection.scalars(
                select(func.nextval(sequence))
                .select_from(func.generate_series(1, max(count - len(pool), BLOCK)))))
        taken, pool[:] = pool[:count], pool[count:]
        return taken
    first: int | None = session.info.get(_HANDED)
    if first is None:
        first = (connection.scalar(select(func.max(Event.id))) or 0) + 1
    session.info[_HANDED] = first + count
    return list(range(first, first + count))


@event.listens_for(Session, "after_transaction_end")
def _forget(session: Session, transaction: Any) -> None:
    if transaction.parent is None:
        session.info.pop(_HANDED, None)
        session.info.pop(_SETTLE_HELD, None)


# The advisory lock that orders event ids with digests (PostgreSQL): every transaction that
# is handed event ids holds it shared until it ends; a digest holds it exclusively.
_SETTLE_LOCK = 0x7477_6964  # "twid"
_SETTLE_HELD = "trialwatch.event_ids_settle_held"


def _hold_shared(connection: Any, session: Session) -> None:
    if not session.info.get(_SETTLE_HELD):
        connection.execute(select(func.pg_advisory_xact_lock_shared(_SETTLE_LOCK)))
        session.info[_SETTLE_HELD] = True


def settle(session: Session) -> None:
    """Wait until every transaction that was handed event ids has ended, and hand out none
    until this transaction ends: then ``max(events.id)`` bounds every event that will ever
    be committed with a smaller id (a digest reads "the events after its watermark" safely).

    PostgreSQL ids come from a sequence ahead of commits, so without this an event could be
    committed later with an id below the one a digest advanced to. SQLite needs nothing:
    every transaction there holds the write lock from its start."""
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        connection.execute(select(func.pg_advisory_xact_lock(_SETTLE_LOCK)))
