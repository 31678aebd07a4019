"""The read model of ``trialwatch list``: which trials and saved searches, in what state.

``trial_rows`` answers "what am I watching?": each trial's status, phase, latest version and
last change (the newest version that brought events: its registry posting date and its most
severe event's kind), filtered by status, event kind, saved query or watched-only.
``declared`` adds the trials a configuration's ``[watch]`` names but no cycle has stored
yet, so they show before the first check. ``query_rows`` lists the saved searches.

Rows are DESIGN.md's ``list --json`` objects (``nct_id``, ``title``, ``status``,
``latest_version``, ``watched``) plus ``phase``, ``last_change`` and ``removed``. Removed
means the registry stopped serving the trial (its ``removed`` event set ``removed_at``).
Nothing here writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from trialwatch.monitor.events import iso_utc
from trialwatch.storage.models import Event, QueryMatch, SavedQuery, Trial


def normalize_status(text: str) -> str:
    """``recruiting`` / ``Not yet recruiting`` / ``not-yet-recruiting`` → the registry enum."""
    return "_".join(text.replace("-", " ").replace("_", " ").upper().split())


def trial_rows(session: Session, *, status: str | None = None, kind: str | None = None,
               query: str | None = None, watched_only: bool = False,
               declared: Sequence[str] = ()) -> list[dict[str, Any]]:
    """``list --json``: the trials that pass every filter given, by NCT ID.

    One Core query of the ``trials`` table (the tables' columns, not the mapped classes:
    no mapper is configured), plain rows: ``list`` of 10,000 trials is a one-shot command
    (bench/oneshot.py). The phase and the last change are kept on each trial when
    its versions and events are stored (``trialwatch.storage.repository.add_events``)."""
    trial, event = Trial.__table__.c, Event.__table__.c
    match, saved = QueryMatch.__table__.c, SavedQuery.__table__.c
    stmt = select(trial.nct_id, trial.title, trial.overall_status, trial.phases,
                  trial.latest_version, trial.watched, trial.removed_at.is_not(None),
                  trial.last_change_version, trial.last_change_kind, trial.last_change_date,
                  ).order_by(trial.nct_id)
    if watched_only:
        stmt = stmt.where(trial.watched.is_(True))
    if status:
        stmt = stmt.where(trial.overall_status == normalize_status(status))
    if kind:
        stmt = stmt.where(trial.id.in_(select(event.trial_id).where(event.kind == kind)))
    if query:
        stmt = stmt.where(trial.id.in_(
            select(match.trial_id).join(SavedQuery.__table__, saved.id == match.query_id)
            .where(saved.name == query)))
    rows: list[dict[str, Any]] = [
        {"nct_id": nct_id, "title": title, "status": overall_status,
         "latest_version": latest or None, "watched": watched,
         "phase": phases.split(",") if phases else None,
         "last_change": {"date": day, "kind": change, "version": changed}
         if changed is not None else None,
         "removed": removed}
        for nct_id, title, overall_status, phases, latest, watched, removed, changed, change, day
        in session.connection().execute(stmt).all()]
    if not (status or kind or query):
        known = set(session.connection().scalars(select(trial.nct_id).where(
            trial.nct_id.in_(list(declared))))) if declared else set()
        unseen = [{"nct_id": nct_id, "title": None, "status": None, "latest_version": None,
                   "watched": True, "phase": None, "last_change": None, "removed": False}
                  for nct_id in dict.fromkeys(declared) if nct_id not in known]
        if unseen:
            rows = sorted([*rows, *unseen], key=lambda row: str(row["nct_id"]))
    return rows


def query_rows(session: Session, declared: Sequence[Any] = ()) -> list[dict[str, Any]]:
    """``list --queries --json``: every saved search, its matches and its last good run;
    searches a configuration declares but no cycle has saved yet are listed as never run."""
    matches = dict(session.execute(select(QueryMatch.query_id, func.count())
                                   .group_by(QueryMatch.query_id)).all())
    rows = [{"name": q.name, "term": q.term, "condition": q.condition,
             "matches": int(matches.get(q.id, 0)),
             "last_run": iso_utc(q.last_success_at) if q.last_success_at else None}
            for q in session.scalars(select(SavedQuery).order_by(SavedQuery.name))]
    saved = {row["name"] for row in rows}
    rows += [{"name": q.name, "term": q.term, "condition": q.condition, "matches": 0,
              "last_run": None} for q in declared if q.name not in saved]
    return sorted(rows, key=lambda row: row["name"])
