"""The cycle's saved-query stage: run each saved search, watch its matches, name the new ones.

A query's first successful run is its baseline (its matches are watched without alerts);
later runs return the trials that newly match, which the cycle fetches with a ``new_trial``
event. A new match whose first fetch failed stays *pending* and is fetched again next cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import select

from trialwatch.monitor.cycle.lease_guard import LeaseGuard
from trialwatch.monitor.cycle.listing import CHANGED_SINCE_OVERLAP
from trialwatch.monitor.cycle.report import CycleReport
from trialwatch.monitor.sources.ctgov.client import RegistryClient, RegistryError
from trialwatch.storage import repository as repo
from trialwatch.storage.engine import Database
from trialwatch.storage.models import QueryMatch, SavedQuery, Trial


def pending_new_matches(db: Database) -> dict[str, str]:
    """New query matches whose first fetch failed (matched after the query's baseline, so
    not watched yet, and no version): they are fetched, with their new_trial event, again."""
    with db.transaction() as session:
        rows = session.execute(
            select(Trial.nct_id, SavedQuery.name)
            .join(QueryMatch, QueryMatch.trial_id == Trial.id)
            .join(SavedQuery, SavedQuery.id == QueryMatch.query_id)
            .where(Trial.watched.is_(False), Trial.latest_version == 0)
            .order_by(Trial.nct_id, SavedQuery.name))
        pending: dict[str, str] = {}
        for nct_id, name in rows:
            pending.setdefault(nct_id, name)
        return pending


def has_unrun_query(db: Database) -> bool:
    """Whether a saved query has never answered (its baseline is still to be taken)."""
    with db.transaction() as session:
        return any(q.last_success_at is None for q in repo.saved_queries(session))


def run_queries(db: Database, client: RegistryClient, report: CycleReport,
                clock: Callable[[], datetime], guard: LeaseGuard | None = None,
                renew: Callable[[], None] | None = None) -> dict[str, str]:
    """Run saved queries; returns new matches {nct_id: query name} that deserve new_trial.

    A query's first run is its baseline: its matches become watched without alerts. With a
    ``guard`` the new matches are leased to this worker in the same transaction, so no other
    worker fetches them without their ``new_trial`` event; ``renew`` is called per query.
    """
    with db.transaction() as session:
        queries = [(q.id, q.name, q.term, q.condition, q.last_success_at)
                   for q in repo.saved_queries(session)]
    new_matches: dict[str, str] = {}
    for query_id, name, term, condition, last_success in queries:
        since = (last_success - CHANGED_SINCE_OVERLAP).date() if last_success else None
        started = clock()
        try:
            stamps = list(client.search_stamps(term, condition, updated_since=since))
        except RegistryError as exc:
            if not report.skip_if_stopping(1, f"query {name}"):
                report.failures.append(f"query {name}: {exc}")
            continue
        with db.transaction() as session:
            for stamp in stamps:
                trial = repo.get_or_create_trial(session, stamp.nct_id, started)
                is_new = session.get(QueryMatch, (query_id, trial.id)) is None
                if is_new:
                    session.add(QueryMatch(query_id=query_id, trial_id=trial.id,
                                           matched_at=started))
                if last_success is not None and not trial.watched and (
                        is_new or not trial.latest_version):
                    # A new match is watched once its first version and its new_trial event
                    # are stored: a fetch that fails leaves it pending, not silently lost.
                    new_matches[stamp.nct_id] = name
                    if guard is not None:
                        guard.claim(session, [trial])
                    continue
                trial.watched = True
            saved = session.get(SavedQuery, query_id)
            assert saved is not None
            saved.last_success_at = started
        report.queries_run += 1
        if renew is not None:
            renew()
    return new_matches
