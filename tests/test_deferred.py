"""Queued rows (``trialwatch.storage.deferred``) on a real SQLite file: written once, just in time,
in
the transaction that queued them, or not at all."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from trialwatch.storage import deferred
from trialwatch.storage.engine import Database
from trialwatch.storage.models import Trial


class TrialWriter:
    """Inserts queued trial rows and remembers each call's NCT IDs."""

    def __init__(self, log: list[list[str]] | None = None) -> None:
        self.calls: list[list[str]] = [] if log is None else log

    def __call__(self, session: Session, rows: list[dict[str, Any]]) -> None:
        self.calls.append([row["nct_id"] for row in rows])
        session.execute(insert(Trial), rows)


def row(nct_id: str) -> dict[str, Any]:
    return {"nct_id": nct_id, "first_seen_at": datetime.now(UTC), "latest_version": 0,
            "watched": False}


def stored(db: Database) -> list[str]:
    with db.transaction() as session:
        return list(session.scalars(select(Trial.nct_id).order_by(Trial.nct_id)))


def test_queued_rows_are_written_together_just_before_the_next_statement(db: Database):
    writer = TrialWriter()
    with db.transaction() as session:
        deferred.add(session, writer, row("NCT00000001"))
        deferred.add(session, writer, row("NCT00000002"))
        assert writer.calls == []
        seen = list(session.scalars(select(Trial.nct_id).order_by(Trial.nct_id)))
        assert seen == ["NCT00000001", "NCT00000002"]
        session.scalars(select(Trial.nct_id)).all()  # a later statement: nothing queued
    assert writer.calls == [["NCT00000001", "NCT00000002"]]


def test_queued_rows_are_written_at_commit_when_no_statement_follows(db: Database):
    writer = TrialWriter()
    with db.transaction() as session:
        deferred.add(session, writer, row("NCT00000001"))
    assert writer.calls == [["NCT00000001"]]
    assert stored(db) == ["NCT00000001"]


def test_writers_run_in_the_order_they_were_first_used(db: Database):
    log: list[list[str]] = []
    first, second = TrialWriter(log), TrialWriter(log)
    with db.transaction() as session:
        deferred.add(session, first, row("NCT00000001"))
        deferred.add(session, second, row("NCT00000002"))
        deferred.add(session, first, row("NCT00000003"))
    assert log == [["NCT00000001", "NCT00000003"], ["NCT00000002"]]


def test_queued_rows_of_a_rolled_back_transaction_are_never_written(db: Database):
    writer = TrialWriter()
    with pytest.raises(RuntimeError), db.transaction() as session:
        deferred.add(session, writer, row("NCT00000001"))
        raise RuntimeError("failed before anything was written")
    with db.transaction() as session:
        deferred.add(session, writer, row("NCT00000002"))
    assert writer.calls == [["NCT00000002"]]
    assert stored(db) == ["NCT00000002"]
