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

    One query of the ``trials`` table, plain rows: ``list`` of 10,000 trials is a one-shot
    command (bench/oneshot.py). The phase and the last change are kept on each trial when
    its versions and events are stored (``trialwatch.storage.repository.add_events``)."""
    stmt = select(Trial.nct_id, Trial.title, Trial.overall_status, Trial.phases,
                  Trial.latest_version, Trial.watched, Trial.removed_at.is_not(None),
                  Trial.last_change_version, Trial.last_change_kind, Trial.last_change_date,
                  ).order_by(Trial.nct_id)
    if watched_only:
        stmt = stmt.where(Trial.watched.is_(True))
    if status:
        stmt = stmt.where(Trial.overall_status == normalize_status(status))
    if kind:
        stmt = stmt.where(Trial.id.in_(select(Event.trial_id).where(Event.kind == kind)))
    if query:
        stmt = stmt.where(Trial.id.in_(
            select(QueryMatch.trial_id).join(SavedQuery, SavedQuery.id == QueryMatch.query_id)
            .where(SavedQuery.name == query)))
    rows: list[dict[str, Any]] = [
        {"nct_id": nct_id, "title": title, "status": overall_status,
         "latest_version": latest or None, "watched": watched,
         "phase": phases.split(",") if phases else None,
         "last_change": {"date": day, "kind": change, "version": changed}
         if changed is not None else None,
         "removed": removed}
        for nct_id, title, overall_status, phases, latest, watched, removed, changed, change, day
        in session.connection().execute(stmt)]
    if not (status or kind or query):
        known = set(session.scalars(select(Trial.nct_id).where(
            Trial.nct_id.in_(list(declared))))) if declared else set()
        rows += [{"nct_id": nct_id, "title": None, "status": None, "latest_version": None,
                  "watched": True, "phase": None, "last_change": None, "removed": False}
                 for nct_id in dict.fromkeys(declared) if nct_id not in known]
        rows.sort(key=lambda row: str(row["nct_id"]))
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
