"""Rows a transaction writes late: just before the session's next statement or its commit.

A cycle records a fetched page one trial at a time, and each trial adds a version, events
and outbox rows. Written as they come, through the ORM's unit of work, that was one
statement per row on SQLite (a third of a cold import). They are queued instead, each with
the function that writes such rows in bulk::

    deferred.add(session, insert_versions, {"trial_id": 7, "version": 3, ...})

Before the next ORM statement the session executes, or before it commits (whichever comes
first), every writer is called once with the rows queued for it, in the order the writers
were first used; what they write goes through the same transaction, so every query sees
it. Statements a writer executes do not call writers again. When the outermost transaction
ends, rows still queued are dropped (committed: there are none; rolled back: they go with
the rest).

Savepoints: a row queued inside a savepoint that is rolled back would still be written.
trialwatch takes no savepoint; code that adds one calls ``write_now(session)`` first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

Writer = Callable[[Session, list[Any]], None]

_QUEUED = "trialwatch.deferred_rows"  # in session.info: {writer: [row, ...]}
_WRITING = "trialwatch.deferred_writing"


def add(session: Session, writer: Writer, row: Any) -> None:
    """Queue ``row``: ``writer(session, rows)`` writes it with the others, just in time."""
    queued: dict[Writer, list[Any]] = session.info.setdefault(_QUEUED, {})
    queued.setdefault(writer, []).append(row)


def write_now(session: Session) -> None:
    """Call every writer with its queued rows now."""
    if session.info.get(_WRITING):
        return
    queued: dict[Writer, list[Any]] | None = session.info.pop(_QUEUED, None)
    if not queued:
        return
    session.info[_WRITING] = True
    try:
        for writer, rows in queued.items():
            writer(session, rows)
    finally:
        del session.info[_WRITING]


@event.listens_for(Session, "do_orm_execute")
def _before_statement(state: Any) -> None:
    write_now(state.session)


@event.listens_for(Session, "before_commit")
def _before_commit(session: Session) -> None:
    write_now(session)


@event.listens_for(Session, "after_transaction_end")
def _transaction_ended(session: Session, transaction: Any) -> None:
    if transaction.parent is None:
        session.info.pop(_QUEUED, None)
