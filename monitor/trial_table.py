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

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.selectable import ScalarSelect

from trialwatch.monitor.events import KINDS, SEVERITIES, SEVERITY_RANK, iso_utc
from trialwatch.storage.models import Event, QueryMatch, SavedQuery, Trial, Version


def normalize_status(text: str) -> str:
    """``recruiting`` / ``Not yet recruiting`` / ``not-yet-recruiting`` → the registry enum."""
    return "_".join(text.replace("-", " ").replace("_", " ").upper().split())


def trial_rows(session: Session, *, status: str | None = None, kind: str | None = None,
               query: str | None = None, watched_only: bool = False,
               declared: Sequence[str] = ()) -> list[dict[str, Any]]:
    """``list --json``: the trials that pass every filter given, by NCT ID.

    Plain rows, not ORM objects: ``list`` of 10,000 trials is a one-shot command, and
    building 10,000 tracked ``Trial`` instances was a third of its time (bench/oneshot.py).
    Last changes are read for the same filter as a subquery, not a list of 10,000 bound
    IDs (SQLite allows at most 32,766 parameters)."""
    stmt = select(Trial.id, Trial.nct_id, Trial.title, Trial.overall_status, Trial.phases,
                  Trial.latest_version, Trial.watched,
                  Trial.removed_at.is_not(None)).order_by(Trial.nct_id)
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
    trials = session.connection().execute(stmt).all()
    ids = stmt.with_only_columns(Trial.id).order_by(None).scalar_subquery()
    changes = _last_changes(session, ids) if trials else {}
    rows: list[dict[str, Any]] = [
        {"nct_id": nct_id, "title": title, "status": overall_status,
         "latest_version": latest or None, "watched": watched,
         "phase": phases.split(",") if phases else None, "last_change": changes.get(trial_id),
         "removed": removed}
        for trial_id, nct_id, title, overall_status, phases, latest, watched, removed in trials]
    if not (status or kind or query):
        known = set(session.scalars(select(Trial.nct_id).where(
            Trial.nct_id.in_(list(declared))))) if declared else set()
        rows += [{"nct_id": nct_id, "title": None, "status": None, "latest_version": None,
                  "watched": True, "phase": None, "last_change": None, "removed": False}
                 for nct_id in dict.fromkeys(declared) if nct_id not in known]
        rows.sort(key=lambda row: str(row["nct_id"]))
    return rows


def _last_changes(session: Session, trial_ids: ScalarSelect[int]) -> dict[int, dict[str, Any]]:
    """Per trial: the newest version that brought events, its date (the registry's posting
    date of that version, else the day it was detected) and its most severe event's kind.

    The database picks the kind: ``MIN`` of a rank that orders severity, then the kind's
    place in ``KINDS`` (one row per trial comes back, not one per event)."""
    newest = (select(Event.trial_id, func.max(Event.to_version).label("version"))
              .where(Event.trial_id.in_(trial_ids)).group_by(Event.trial_id).subquery())
    of_newest = (newest.c.trial_id == Event.trial_id) & (newest.c.version == Event.to_version)
    its_version = (Version.trial_id == Event.trial_id) & (Version.version == Event.to_version)
    places = len(KINDS) + 1
    rank = (case({name: (len(SEVERITIES) - 1 - n) * places for name, n in SEVERITY_RANK.items()},
                 value=Event.severity, else_=(len(SEVERITIES) - 1) * places)
            + case({name: n for n, name in enumerate(KINDS)}, value=Event.kind,
                   else_=len(KINDS)))
    stmt = (select(Event.trial_id, Event.to_version, func.min(rank),
                   Version.last_update_posted)
            .join(newest, of_newest).outerjoin(Version, its_version)
            .group_by(Event.trial_id, Event.to_version, Version.last_update_posted))
    best = session.connection().execute(stmt).all()
    detected: dict[int, str] = {}
    if any(posted is None for *_, posted in best):  # versions with no posting date
        undated = (select(Event.trial_id, func.max(Event.detected_at))
                   .join(newest, of_newest).outerjoin(Version, its_version)
                   .where(Version.last_update_posted.is_(None)).group_by(Event.trial_id))
        detected = {trial_id: iso_utc(moment) for trial_id, moment in session.execute(undated)}
    kinds = (*KINDS, "other")  # a kind this version does not know ranks last, as "other"
    return {trial_id: {"date": (posted or detected.get(trial_id, ""))[:10],
                       "kind": kinds[place % places], "version": version}
            for trial_id, version, place, posted in best}


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
