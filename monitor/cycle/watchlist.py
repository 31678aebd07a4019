"""The watch list: which trials and saved searches trialwatch follows (kept in the database).

Trials and queries declared in ``trialwatch.toml`` (``[watch]``) are added to the database
watch list before each cycle; removing them from the file does not unwatch them (use
``trialwatch unwatch``), so the database stays the one source of truth.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from trialwatch.storage import repository as repo
from trialwatch.storage.engine import Database
from trialwatch.storage.models import SavedQuery

if TYPE_CHECKING:
    from trialwatch.monitor.config.settings import Config


def add_trials(db: Database, nct_ids: Sequence[str]) -> set[str]:
    """Watch the trials; returns those that were not watched before."""
    now = datetime.now(UTC)
    added = set()
    with db.transaction() as session:
        for nct_id in nct_ids:
            trial = repo.get_or_create_trial(session, nct_id, now)
            if not trial.watched:
                trial.watched = True
                added.add(nct_id)
    return added


def ensure_trials(db: Database, nct_ids: Sequence[str]) -> None:
    """Make sure the trials exist (``check NCT...`` on trials not watched yet)."""
    now = datetime.now(UTC)
    with db.transaction() as session:
        for nct_id in nct_ids:
            repo.get_or_create_trial(session, nct_id, now)


def remove_trials(db: Database, nct_ids: Sequence[str]) -> set[str]:
    """Stop watching; returns the IDs that were not watched. History is kept."""
    not_watched = set()
    with db.transaction() as session:
        for nct_id in nct_ids:
            trial = repo.trial(session, nct_id)
            if trial is None or not trial.watched:
                not_watched.add(nct_id)
            else:
                trial.watched = False
    return not_watched


def add_query(db: Database, name: str, *, term: str | None, condition: str | None) -> bool:
    """Save (or update) a search; returns True when it is new."""
    with db.transaction() as session:
        query = repo.saved_query(session, name)
        if query is None:
            session.add(SavedQuery(name=name, term=term, condition=condition,
                                   created_at=datetime.now(UTC)))
            return True
        if (query.term, query.condition) != (term, condition):
            query.term, query.condition = term, condition
            query.last_success_at = None  # a changed query starts from a new baseline
        return False


def remove_query(db: Database, name: str) -> bool:
    with db.transaction() as session:
        query = repo.saved_query(session, name)
        if query is None:
            return False
        session.delete(query)
        return True


def sync_declared_watches(db: Database, config: Config) -> None:
    """Add the trials and queries declared in ``[watch]`` to the database watch list."""
    if config.watch.trials:
        add_trials(db, list(config.watch.trials))
    for query in config.watch.queries:
        add_query(db, query.name, term=query.term, condition=query.condition)
