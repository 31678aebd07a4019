"""The cycle's listing stage: which of the trials a cycle covers moved since last fetched.

    watch_list(db)          how many trials the cycle covers, and which were never fetched
    list_moved(...)         their registry stamps, by one of two listings (whichever needs
                            fewer requests), with the stored state of each trial listed

* ``ids``: ``filter.ids`` listings of every covered trial (~600 per request: the URL stays
  under ~7,500 characters); a trial a successful listing lacks is returned as *missing*
  (``trialwatch.monitor.cycle.recording.confirm_missing`` asks for it alone before calling it
  removed);
* ``changed-since``: the registry-wide listing of updates since the last successful cycle
  (minus ``CHANGED_SINCE_OVERLAP``), intersected with the covered trials; its first page
  carries the count that decides. A status the registry switches itself moves no date, so
  the cycle also lists the trials it switched to ``UNKNOWN`` lately
  (``switched_to_unknown``: status ``UNKNOWN``, verified about two years before; one page,
  registry-wide). Trials never fetched are listed as moved either way.

Whether a listed trial moved is ``moved(stamp, state)``: its last-update date differs from
the one recorded, or its status from the stored one (the registry changes a status without
moving the date: its automatic switch to ``UNKNOWN``), or it was never fetched. Trials
marked removed are not listed by ID (each would be one more "missing" trial every cycle):
rolling re-verification (``trialwatch.monitor.cycle.reverify``) asks for them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from trialwatch.monitor.sources.ctgov.client import RegistryClient, RegistryError, StudyStamp
from trialwatch.storage import repository as repo
from trialwatch.storage.engine import Database
from trialwatch.storage.models import Trial

if TYPE_CHECKING:
    from trialwatch.monitor.cycle.report import CycleReport

# How far before the last successful cycle "changed since" asks (the registry posts dates,
# not times, and a day's load may land after our cycle): a safety overlap.
CHANGED_SINCE_OVERLAP = timedelta(days=2)


@dataclass
class TrialState:
    """What the database knows of a covered trial: its last stamp and whether it has a version."""

    nct_id: str
    last_update: str | None
    has_version: bool
    overall_status: str | None = None
    removed: bool = False


def moved(stamp: StudyStamp, *, last_update: str | None, overall_status: str | None,
          has_version: bool) -> bool:
    """Whether a listed trial needs a fetch: never fetched, another last-update date, or a
    status other than the stored one (pure)."""
    if not has_version or stamp.last_update_posted != last_update:
        return True
    return (stamp.overall_status is not None and overall_status is not None
            and stamp.overall_status != overall_status)


@dataclass(frozen=True)
class WatchList:
    """What a cycle covers, cheaply: how many trials, and which were never fetched. The
    per-trial states are loaded only for the trials a listing names (a changed-since listing
    names a few thousand registry-wide, not the 100,000 a large watch list may hold)."""

    size: int
    unfetched: frozenset[str]


def _watched(stmt: Any, only: Sequence[str] | None) -> Any:
    if only is not None:
        return stmt.where(Trial.nct_id.in_(list(only)))
    return stmt.where(Trial.watched.is_(True))


def watch_list(db: Database, only: Sequence[str] | None) -> WatchList:
    with db.transaction() as session:
        size = session.scalar(_watched(select(func.count(Trial.id)), only)) or 0
        unfetched = session.scalars(
            _watched(select(Trial.nct_id), only).where(Trial.latest_version == 0))
        return WatchList(size, frozenset(unfetched))


def load_states(db: Database, only: Sequence[str] | None,
                among: Iterable[str] | None = None, *, live_only: bool = False
                ) -> dict[str, TrialState]:
    """States of the covered trials (all of them, or those ``among`` the given IDs; with
    ``live_only``, not those marked removed)."""
    stmt = _watched(select(Trial.nct_id, Trial.registry_last_update, Trial.latest_version,
                           Trial.overall_status, Trial.removed_at), only)
    if live_only:
        stmt = stmt.where(Trial.removed_at.is_(None))
    with db.transaction() as session:
        if among is not None:
            stmt = stmt.where(repo.among(session, Trial.nct_id, among))
        # in NCT ID order: the ID listing batches them in this order
        return {nct_id: TrialState(nct_id, last, bool(latest), status, removed is not None)
                for nct_id, last, latest, status, removed
                in session.execute(stmt.order_by(Trial.nct_id))}


def list_moved(db: Database, client: RegistryClient, report: CycleReport, watch: WatchList,
               only: Sequence[str] | None, last_ok_started: datetime | None
               ) -> tuple[dict[str, StudyStamp], list[str], dict[str, TrialState]]:
    """Stamps of covered trials that may have moved, IDs a full listing did not return, and
    the states of the trials the stamps name."""
    if not watch.size:
        return {}, [], {}
    by_ids_cost = client.listing_requests(watch.size)
    if last_ok_started is not None and by_ids_cost > 2:
        since = (last_ok_started - CHANGED_SINCE_OVERLAP).date()
        changes = client.changed_since(since)  # its first page tells what the rest costs
        if changes.cheaper_than(by_ids_cost):
            report.strategy = "changed-since"
            listed = {stamp.nct_id: stamp for stamp in changes}
            for stamp in switched_to_unknown(client, report, since):
                listed.setdefault(stamp.nct_id, stamp)
            states = load_states(db, only, among=listed.keys() | watch.unfetched)
            return _changed_since(listed, states), [], states
    report.strategy = "ids"
    # ``check NCT...`` names its trials: a removed one among them is asked for again
    states = load_states(db, only, live_only=only is None)
    return (*list_by_ids(client, report, list(states)), states)


def unknown_verified_since(since: date) -> date:
    """The earliest last-verified date of a status the registry switched to ``UNKNOWN`` on
    or after ``since``: it does so once a status went unverified for two years (counted
    from the end of the verified month), so a month before ``since`` minus two years."""
    year, month = since.year - 2, since.month - 1
    if month == 0:
        year, month = year - 1, 12
    return date(year, month, 1)


def switched_to_unknown(client: RegistryClient, report: CycleReport, since: date
                        ) -> list[StudyStamp]:
    """Stamps of the studies the registry switched to ``UNKNOWN`` since ``since``; on a
    failure none (logged, counted): the next cycle's listing asks again from its own date."""
    try:
        return list(client.switched_status("UNKNOWN", unknown_verified_since(since)))
    except RegistryError as exc:
        report.failures.append(f"listing of status switches: {exc}")
        return []


def list_by_ids(client: RegistryClient, report: CycleReport, ids: Sequence[str]
                ) -> tuple[dict[str, StudyStamp], list[str]]:
    """Stamps of the given trials through ``filter.ids``, and the IDs the listing lacked."""
    stamps: dict[str, StudyStamp] = {}
    missing: list[str] = []
    if not ids:
        return stamps, missing
    per_request = max(1, math.ceil(len(ids) / client.listing_requests(len(ids))))
    for start in range(0, len(ids), per_request):
        chunk = ids[start:start + per_request]
        try:
            found = {s.nct_id: s for s in client.iter_stamps(chunk)}
        except RegistryError as exc:
            report.fail(chunk, "listing", exc)
            continue
        for nct_id in chunk:
            stamp = found.get(nct_id) or _by_alias(found.values(), nct_id)
            if stamp is None:
                missing.append(nct_id)
            else:
                stamps[nct_id] = StudyStamp(nct_id, stamp.last_update_posted,
                                            overall_status=stamp.overall_status)
    return stamps, missing


def _changed_since(listed: dict[str, StudyStamp], states: dict[str, TrialState]
                   ) -> dict[str, StudyStamp]:
    """The covered trials' stamps from a registry-wide changed-since listing."""
    stamps = {nct_id: listed[nct_id] for nct_id in states if nct_id in listed}
    # Trials never fetched are not "changed since": they need their first fetch anyway.
    for state in states.values():
        if not state.has_version and state.nct_id not in stamps:
            stamps[state.nct_id] = StudyStamp(state.nct_id, None)
    return stamps


def _by_alias(stamps: Iterable[StudyStamp], nct_id: str) -> StudyStamp | None:
    return next((s for s in stamps if nct_id in s.aliases), None)
