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

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from trialwatch.monitor.events import KINDS, SEVERITY_RANK
from trialwatch.monitor.versioning import iso_utc
from trialwatch.storage.models import Event, QueryMatch, SavedQuery, Trial, Version


def normalize_status(text: str) -> str:
    """``recruiting`` / ``Not yet recruiting`` / ``not-yet-recruiting`` → the registry enum."""
    return "_".join(text.replace("-", " ").replace("_", " ").upper().split())


def is_removed(trial: Trial) -> bool:
    """Whether the registry no longer serves the trial (the hook for a ``removed`` flag)."""
    return trial.removed_at is not None


def trial_rows(session: Session, *, status: str | None = None, kind: str | None = None,
               query: str | None = None, watched_only: bool = False,
               declared: Sequence[str] = ()) -> list[dict[str, Any]]:
    """``list --json``: the trials that pass every filter given, by NCT ID."""
    stmt = select(Trial).order_by(Trial.nct_id)
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
    trials = list(session.scalars(stmt))
    ids = [t.id for t in trials]
    phases = _phases(session, ids)
    changes = _last_changes(session, ids)
    rows: list[dict[str, Any]] = [
        {"nct_id": t.nct_id, "title": t.title, "status": t.overall_status,
         "latest_version": t.latest_version or None, "watched": t.watched,
         "phase": phases.get(t.id), "last_change": changes.get(t.id), "removed": is_removed(t)}
        for t in trials]
    if not (status or kind or query):
        known = {t.nct_id for t in session.scalars(select(Trial).where(
            Trial.nct_id.in_(list(declared))))} if declared else set()
        rows += [{"nct_id": nct_id, "title": None, "status": None, "latest_version": None,
                  "watched": True, "phase": None, "last_change": None, "removed": False}
                 for nct_id in dict.fromkeys(declared) if nct_id not in known]
        rows.sort(key=lambda row: str(row["nct_id"]))
    return rows


def _phases(session: Session, trial_ids: Iterable[int]) -> dict[int, list[str]]:
    ids = list(trial_ids)
    if not ids:
        return {}
    stmt = (select(Trial.id, Version.canonical["design"]["phases"])
            .join(Version, (Version.trial_id == Trial.id)
                  & (Version.version == Trial.latest_version))
            .where(Trial.id.in_(ids)))
    return {trial_id: list(phases) for trial_id, phases in session.execute(stmt)
            if isinstance(phases, list)}


def _last_changes(session: Session, trial_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """Per trial: the newest version that brought events, its date and its top event kind."""
    ids = list(trial_ids)
    if not ids:
        return {}
    newest = (select(Event.trial_id, func.max(Event.to_version).label("version"))
              .where(Event.trial_id.in_(ids)).group_by(Event.trial_id).subquery())
    stmt = (select(Event.trial_id, Event.to_version, Event.kind, Event.severity,
                   Event.detected_at, Version.last_update_posted)
            .join(newest, (newest.c.trial_id == Event.trial_id)
                  & (newest.c.version == Event.to_version))
            .outerjoin(Version, (Version.trial_id == Event.trial_id)
                       & (Version.version == Event.to_version)))
    found: dict[int, tuple[tuple[int, int], dict[str, Any]]] = {}
    for trial_id, version, kind, severity, detected_at, posted in session.execute(stmt):
        rank = (-SEVERITY_RANK.get(severity, 0), KINDS.index(kind) if kind in KINDS else 99)
        if trial_id in found and found[trial_id][0] <= rank:
            continue
        date = posted or iso_utc(detected_at)[:10]
        found[trial_id] = (rank, {"date": date[:10], "kind": kind, "version": version})
    return {trial_id: change for trial_id, (_, change) in found.items()}


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
