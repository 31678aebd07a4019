"""One fetch cycle: ask the registry what moved, fetch only that, record it, count everything.

    version  ─► list stamps (by watched IDs, or registry-wide "changed since")  ─► moved?
    saved queries ─► new matches (``new_trial``)                                   │
    fetch full documents in batches ─► parse ─► ``record_observation`` ◄────────────┘

Failure rules (a bad answer never becomes a false alert):
* a listing or fetch batch that fails (unavailable, blocked, bad answer) is recorded as a
  failure for those trials and skipped: no version, no event, and the trial's last-known
  update date is left alone so the next cycle tries again;
* a trial missing from a *successful* listing is confirmed one by one with ``get_study``;
  only a 404 for a trial seen before gives (exactly one) ``removed`` event.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
import structlog
from sqlalchemy import select

from monitor.events import ChangeEvent
from monitor.ingest import (
    Observation,
    RecordOutcome,
    Subscription,
    record_observation,
    record_removal,
)
from monitor.record import ParseError
from monitor.sources.ctgov import (
    RegistryBlocked,
    RegistryClient,
    RegistryError,
    StudyStamp,
    TrialNotFound,
)
from monitor.sources.ctgov_json import parse_study
from storage import repository as repo
from storage.engine import Database
from storage.models import Cycle, QueryMatch, SavedQuery, Trial

log = structlog.get_logger(__name__)

LISTING_PAGE = 1000
FETCH_PAGE = 100
# How far before the last successful cycle "changed since" asks (the registry posts dates,
# not times, and a day's load may land after our cycle): a safety overlap.
CHANGED_SINCE_OVERLAP = timedelta(days=2)


@dataclass
class CycleReport:
    started_at: datetime
    finished_at: datetime | None = None
    outcome: str = "running"
    watched: int = 0
    fetched: int = 0
    changed: int = 0
    requests: int = 0
    strategy: str = "ids"
    records: list[RecordOutcome] = field(default_factory=list)
    events: list[ChangeEvent] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    data_timestamp: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"records": [r.to_json() for r in self.records],
                "events": [e.to_json() for e in self.events],
                "requests": self.requests, "failures": self.failures}


@dataclass
class _TrialState:
    nct_id: str
    last_update: str | None
    has_version: bool


def run_cycle(db: Database, client: RegistryClient, *,
              subscriptions: Sequence[Subscription] = (), only: Sequence[str] | None = None,
              worker: str | None = None, now: Callable[[], datetime] | None = None
              ) -> CycleReport:
    """One cycle over the watched trials (or just ``only``); never raises for registry faults."""
    clock = now or (lambda: datetime.now(UTC))
    report = CycleReport(started_at=clock())
    requests_before = client.requests_made
    with db.transaction() as session:
        cycle_row = Cycle(started_at=report.started_at, outcome="running", worker=worker)
        session.add(cycle_row)
        session.flush()
        cycle_id = cycle_row.id
        last_ok = repo.last_successful_cycle(session)
        last_ok_started = last_ok.started_at if last_ok else None
        last_ok_stamp = last_ok.data_timestamp if last_ok else None
    try:
        _run(db, client, report, subscriptions, only, last_ok_started, last_ok_stamp, clock)
    except RegistryError as exc:  # the registry as a whole is unreachable / blocked
        report.failures.append(f"registry: {exc}")
        report.outcome = "failed"
    report.requests = client.requests_made - requests_before
    if report.outcome == "running":
        report.outcome = "partial" if report.failures else "ok"
    report.finished_at = clock()
    with db.transaction() as session:
        row = session.get(Cycle, cycle_id)
        assert row is not None
        row.finished_at, row.outcome = report.finished_at, report.outcome
        row.watched, row.fetched, row.changed = report.watched, report.fetched, report.changed
        row.events, row.requests = len(report.events), report.requests
        row.failures, row.data_timestamp = len(report.failures), report.data_timestamp
        row.error = "; ".join(report.failures)[:4000] or None
    log.info("cycle.finished", outcome=report.outcome, strategy=report.strategy,
             watched=report.watched, fetched=report.fetched, changed=report.changed,
             events=len(report.events), requests=report.requests,
             failures=len(report.failures),
             duration_ms=round((report.finished_at - report.started_at).total_seconds() * 1000))
    return report


def _run(db: Database, client: RegistryClient, report: CycleReport,
         subscriptions: Sequence[Subscription], only: Sequence[str] | None,
         last_ok_started: datetime | None, last_ok_stamp: str | None,
         clock: Callable[[], datetime]) -> None:
    report.data_timestamp = client.version().data_timestamp
    states = _load_states(db, only)
    if (only is None and last_ok_stamp is not None and report.data_timestamp == last_ok_stamp
            and all(s.has_version for s in states.values()) and not _has_unrun_query(db)):
        report.watched = len(states)
        report.strategy = "unchanged-data"  # the registry has loaded no new data since
        return
    new_matches: dict[str, str] = {}
    if only is None:
        new_matches = _run_queries(db, client, report, clock)
        states = _load_states(db, only)  # queries may have added watched trials
    report.watched = len(states)
    stamps, missing = _list_moved(client, report, states, last_ok_started)
    to_fetch = {nct_id: stamp for nct_id, stamp in stamps.items()
                if stamp.last_update_posted != states[nct_id].last_update
                or not states[nct_id].has_version}
    for nct_id in new_matches:
        to_fetch.setdefault(nct_id, StudyStamp(nct_id, None))
    _fetch_and_record(db, client, report, to_fetch, new_matches, subscriptions, clock)
    _confirm_missing(db, client, report, missing, subscriptions, clock)


def _has_unrun_query(db: Database) -> bool:
    with db.transaction() as session:
        return any(q.last_success_at is None for q in repo.saved_queries(session))


def _load_states(db: Database, only: Sequence[str] | None) -> dict[str, _TrialState]:
    with db.transaction() as session:
        stmt = select(Trial.nct_id, Trial.registry_last_update, Trial.latest_version)
        if only is not None:
            stmt = stmt.where(Trial.nct_id.in_(list(only)))
        else:
            stmt = stmt.where(Trial.watched.is_(True))
        return {nct_id: _TrialState(nct_id, last, bool(latest))
                for nct_id, last, latest in session.execute(stmt.order_by(Trial.nct_id))}


def _list_moved(client: RegistryClient, report: CycleReport, states: dict[str, _TrialState],
                last_ok_started: datetime | None
                ) -> tuple[dict[str, StudyStamp], list[str]]:
    """Stamps of watched trials that may have moved, and IDs a full listing did not return."""
    ids = list(states)
    if not ids:
        return {}, []
    by_ids_cost = client.listing_requests(len(ids))
    if last_ok_started is not None and by_ids_cost > 2:
        since = (last_ok_started - CHANGED_SINCE_OVERLAP).date()
        changed = client.count_changed_since(since)
        if 1 + math.ceil(changed / LISTING_PAGE) < by_ids_cost:
            report.strategy = "changed-since"
            return _list_changed_since(client, report, states, since), []
    report.strategy = "ids"
    stamps: dict[str, StudyStamp] = {}
    missing: list[str] = []
    per_request = max(1, math.ceil(len(ids) / by_ids_cost))
    for chunk in _chunks(ids, per_request):
        try:
            found = {s.nct_id: s for s in client.iter_stamps(chunk)}
        except RegistryError as exc:
            _fail(report, chunk, "listing", exc)
            continue
        for nct_id in chunk:
            stamp = found.get(nct_id) or _by_alias(found.values(), nct_id)
            if stamp is None:
                missing.append(nct_id)
            else:
                stamps[nct_id] = StudyStamp(nct_id, stamp.last_update_posted)
    return stamps, missing


def _list_changed_since(client: RegistryClient, report: CycleReport,
                        states: dict[str, _TrialState], since: date) -> dict[str, StudyStamp]:
    stamps = {}
    for stamp in client.changed_since_stamps(since):
        if stamp.nct_id in states:
            stamps[stamp.nct_id] = stamp
    # Trials never fetched are not "changed since": they need their first fetch anyway.
    for state in states.values():
        if not state.has_version and state.nct_id not in stamps:
            stamps[state.nct_id] = StudyStamp(state.nct_id, None)
    return stamps


def _by_alias(stamps: Iterable[StudyStamp], nct_id: str) -> StudyStamp | None:
    return next((s for s in stamps if nct_id in s.aliases), None)


def _run_queries(db: Database, client: RegistryClient, report: CycleReport,
                 clock: Callable[[], datetime]) -> dict[str, str]:
    """Run saved queries; returns new matches {nct_id: query name} that deserve new_trial.

    A query's first run is its baseline: its matches become watched without alerts.
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
            report.failures.append(f"query {name}: {exc}")
            continue
        with db.transaction() as session:
            for stamp in stamps:
                trial = repo.get_or_create_trial(session, stamp.nct_id, started)
                is_new = session.get(QueryMatch, (query_id, trial.id)) is None
                if is_new:
                    session.add(QueryMatch(query_id=query_id, trial_id=trial.id,
                                           matched_at=started))
                if is_new and last_success is not None and not trial.watched:
                    new_matches[stamp.nct_id] = name
                trial.watched = True
            saved = session.get(SavedQuery, query_id)
            assert saved is not None
            saved.last_success_at = started
    return new_matches


def _fetch_and_record(db: Database, client: RegistryClient, report: CycleReport,
                      to_fetch: dict[str, StudyStamp], new_matches: dict[str, str],
                      subscriptions: Sequence[Subscription],
                      clock: Callable[[], datetime]) -> None:
    for chunk in _chunks(sorted(to_fetch), FETCH_PAGE):
        try:
            documents = list(client.iter_studies(chunk, page_size=FETCH_PAGE))
        except RegistryError as exc:
            _fail(report, chunk, "fetch", exc)
            continue
        fetched_at = clock()
        with db.transaction() as session:
            for document in documents:
                try:
                    record = parse_study(document)
                except ParseError as exc:
                    report.failures.append(f"parse: {exc}")
                    log.warning("cycle.bad_record", reason=str(exc))
                    continue
                extra = []
                if record.nct_id in new_matches:
                    extra.append(ChangeEvent(
                        nct_id=record.nct_id, kind="new_trial", field="query", old=None,
                        new=new_matches[record.nct_id], severity="medium",
                        summary=f"New trial matching query {new_matches[record.nct_id]}: "
                                f"{record.title or record.nct_id}"))
                observation = Observation(record=record, raw=orjson.dumps(document),
                                          raw_format="ctgov-json", source="ctgov",
                                          fetched_at=fetched_at)
                outcome = record_observation(session, observation, subscriptions=subscriptions,
                                             extra_events=extra)
                report.fetched += 1
                report.records.append(outcome)
                report.events.extend(outcome.events)
                report.changed += int(outcome.changed)
                trial = repo.trial(session, record.nct_id)
                assert trial is not None
                trial.registry_last_update = record.last_update_posted
                trial.last_error = None


def _confirm_missing(db: Database, client: RegistryClient, report: CycleReport,
                     missing: Sequence[str], subscriptions: Sequence[Subscription],
                     clock: Callable[[], datetime]) -> None:
    for nct_id in missing:
        try:
            client.get_study(nct_id)
        except TrialNotFound:
            with db.transaction() as session:
                trial = repo.trial(session, nct_id)
                assert trial is not None
                event = record_removal(session, trial, now=clock(),
                                       subscriptions=subscriptions)
                trial.last_error = "not found in the registry (404)"
            if event is not None:
                report.events.append(event)
            else:
                log.warning("cycle.unknown_trial", nct_id=nct_id)
            continue
        except RegistryError as exc:
            _fail(report, [nct_id], "confirm", exc)
            continue
        # Served one by one but not listed: an alias or a listing hiccup. Next cycle retries.
        log.info("cycle.listing_gap", nct_id=nct_id)


def _fail(report: CycleReport, chunk: Sequence[str], step: str, exc: RegistryError) -> None:
    reason = "blocked by the registry" if isinstance(exc, RegistryBlocked) else str(exc)
    first = chunk[0] if len(chunk) == 1 else f"{chunk[0]}..{chunk[-1]} ({len(chunk)} trials)"
    report.failures.append(f"{step} {first}: {reason}")
    log.warning("cycle.batch_failed", step=step, trials=len(chunk), reason=reason)


def _chunks(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
