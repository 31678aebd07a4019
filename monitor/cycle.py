"""One fetch cycle: ask the registry what moved, fetch only that, record it, count everything.

    version  ─► list stamps (``monitor.listing``: by watched IDs, or "changed since") ─► moved?
    saved queries ─► new matches (``new_trial``)                                        │
    fetch full documents in pages, parse (``monitor.fetching``) ─► ``record_observation`` ◄┘

Failure rules (a bad answer never becomes a false alert):
* a listing or fetch batch that fails (unavailable, blocked, bad answer) is recorded as a
  failure for those trials and skipped: no version, no event, and the trial's last-known
  update date is left alone so the next cycle tries again;
* a trial missing from a *successful* listing is confirmed one by one with ``get_study``;
  only a 404 for a trial seen before gives (exactly one) ``removed`` event.

Several workers (PostgreSQL). On SQLite a cycle is one process's pass over every watched
trial (the daemon holds a file lock, so there is one). On PostgreSQL every ``run_cycle``
without ``only`` takes part in a shared *round* instead (``monitor.workers``,
``storage.leases``), so several ``trialwatch run`` processes split the work:

* "this cycle" is the round of the registry data load the worker sees (``dataTimestamp`` of
  ``/version``): workers that see the same load join the same ``cycle_rounds`` row, whenever
  each of them starts; a round that ended with failures is followed by a fresh one, so failed
  trials are retried at the next cycle, as on SQLite;
* one worker *prepares* the round under a preparation lease: runs the saved queries (and
  fetches their new matches itself, for their ``new_trial`` events), then picks the listing
  strategy for the whole round (``ids``, or one registry-wide ``changed-since`` listing kept
  in the round row); the others wait for it;
* then each worker leases batches of watched trials with ``checked_round`` below the round
  (one ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED)``): in an ``ids`` round a
  batch is one ``filter.ids`` listing request (~600 trials); in a ``changed-since`` round only
  the trials the round's listing says moved (or never fetched) are leased, a fetch page at a
  time, and all the others are stamped checked by one set-based UPDATE. Moved trials are
  fetched in full pages of 100 across batches, recorded, and stamped ``checked_round =
  round``. Versions are written only for trials the worker still leases (checked under a row
  lock in the same transaction), and leases are renewed as they age, so no trial is fetched
  twice per round by live workers;
* a worker that dies leaves its lease to expire (``lease``, default 5 minutes, database
  clock); workers that have finished their own batches wait up to one lease period for
  the round to complete and take expired batches over. What is still unfinished after that is
  taken over by the next cycle of any worker, which joins the same open round.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from monitor.events import ChangeEvent
from monitor.fetching import fetch_pages, worker_pays_off
from monitor.ingest import (
    Observation,
    RecordOutcome,
    Subscription,
    record_observation,
    record_removal,
)
from monitor.listing import CHANGED_SINCE_OVERLAP, list_moved, watch_list
from monitor.record import TrialRecord
from monitor.sources.ctgov import (
    RegistryBlocked,
    RegistryClient,
    RegistryError,
    StudyStamp,
    TrialNotFound,
)
from storage import leases
from storage import repository as repo
from storage.engine import Database
from storage.models import Cycle, QueryMatch, SavedQuery, Trial

log = structlog.get_logger(__name__)

FETCH_PAGE = 100
# Several workers (PostgreSQL): trials per leased batch, and how long a lease lives unrenewed.
LEASE_BATCH = 1000
DEFAULT_LEASE = timedelta(minutes=5)
YOUNG_GC_THRESHOLD = 20_000  # during a cycle (see _gc_frozen)


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
    queries_run: int = 0  # saved queries that answered (their matches may be newly watched)
    round_id: int | None = None  # the shared round (PostgreSQL workers), None on SQLite

    def to_json(self) -> dict[str, Any]:
        return {"records": [r.to_json() for r in self.records],
                "events": [e.to_json() for e in self.events],
                "requests": self.requests, "failures": self.failures}

    def fail(self, chunk: Sequence[str], step: str, exc: RegistryError) -> None:
        """A batch of trials failed at ``step`` (listing, fetch, confirm): noted, logged;
        nothing of it is recorded, and the next cycle tries again."""
        reason = "blocked by the registry" if isinstance(exc, RegistryBlocked) else str(exc)
        first = chunk[0] if len(chunk) == 1 else f"{chunk[0]}..{chunk[-1]} ({len(chunk)} trials)"
        self.failures.append(f"{step} {first}: {reason}")
        log.warning("cycle.batch_failed", step=step, trials=len(chunk), reason=reason)


@dataclass(frozen=True)
class LeaseGuard:
    """A worker's hold on leased trials: what it may still write, renewed on every write."""

    owner: str
    lease: timedelta

    def held(self, session: Session, nct_ids: Sequence[str]) -> dict[str, Trial]:
        leases.renew(session, self.owner, self.lease)
        return leases.held(session, self.owner, nct_ids)

    def claim(self, session: Session, trials: Sequence[Trial]) -> None:
        leases.claim_trials(session, trials, self.owner, self.lease)


def run_cycle(db: Database, client: RegistryClient, *,
              subscriptions: Sequence[Subscription] = (), only: Sequence[str] | None = None,
              worker: str | None = None, now: Callable[[], datetime] | None = None,
              shared: bool | None = None, lease: timedelta = DEFAULT_LEASE,
              lease_batch: int = LEASE_BATCH, should_stop: Callable[[], bool] | None = None
              ) -> CycleReport:
    """One cycle over the watched trials (or just ``only``); never raises for registry faults.

    ``shared`` (default: on PostgreSQL, unless ``only`` is given) makes the cycle take part
    in the shared round of several workers, leasing ``lease_batch`` trials at a time for
    ``lease``; ``should_stop`` is polled while waiting for other workers' leases.
    """
    clock = now or (lambda: datetime.now(UTC))
    if shared is None:
        shared = not db.is_sqlite and only is None
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
        with _gc_frozen():
            if shared:
                from monitor.workers import run_round

                run_round(db, client, report, subscriptions, clock, cycle_id=cycle_id,
                          owner=leases.lease_owner(worker), lease=lease, batch=lease_batch,
                          should_stop=should_stop)
            else:
                _run(db, client, report, subscriptions, only, last_ok_started, last_ok_stamp,
                     clock)
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
             round=report.round_id,
             watched=report.watched, fetched=report.fetched, changed=report.changed,
             events=len(report.events), requests=report.requests,
             failures=len(report.failures),
             duration_ms=round((report.finished_at - report.started_at).total_seconds() * 1000))
    return report


@contextmanager
def _gc_frozen() -> Iterator[None]:
    """Keep what is alive when the cycle starts (modules, ORM mappers, configuration: most
    of the heap) out of the garbage collector's passes during the cycle, which would scan it
    again and again while pages of documents are parsed (a fifth of a cold cycle's CPU).
    Unfrozen afterwards, so nothing is kept that would otherwise be collected. Young objects
    are collected every ``YOUNG_GC_THRESHOLD`` allocations instead of 700: a page of records
    allocates hundreds of thousands of objects, nearly all freed by reference counting."""
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(thresholds[0], YOUNG_GC_THRESHOLD), *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def _run(db: Database, client: RegistryClient, report: CycleReport,
         subscriptions: Sequence[Subscription], only: Sequence[str] | None,
         last_ok_started: datetime | None, last_ok_stamp: str | None,
         clock: Callable[[], datetime]) -> None:
    report.data_timestamp = client.version().data_timestamp
    watch = watch_list(db, only)
    if (only is None and last_ok_stamp is not None and report.data_timestamp == last_ok_stamp
            and not watch.unfetched and not _has_unrun_query(db)):
        report.watched = watch.size
        report.strategy = "unchanged-data"  # the registry has loaded no new data since
        return
    new_matches: dict[str, str] = {}
    if only is None:
        queries_before = report.queries_run
        new_matches = run_queries(db, client, report, clock)
        for nct_id, name in pending_new_matches(db).items():
            new_matches.setdefault(nct_id, name)
        if report.queries_run > queries_before:  # they may have added watched trials
            watch = watch_list(db, only)
    report.watched = watch.size
    stamps, missing, states = list_moved(db, client, report, watch, only, last_ok_started)
    to_fetch = {nct_id: stamp for nct_id, stamp in stamps.items()
                if stamp.last_update_posted != states[nct_id].last_update
                or not states[nct_id].has_version}
    for nct_id in new_matches:
        to_fetch.setdefault(nct_id, StudyStamp(nct_id, None))
    fetch_and_record(db, client, report, to_fetch, new_matches, subscriptions, clock)
    confirm_missing(db, client, report, missing, subscriptions, clock)


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


def _has_unrun_query(db: Database) -> bool:
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


def fetch_and_record(db: Database, client: RegistryClient, report: CycleReport,
                     to_fetch: dict[str, StudyStamp], new_matches: dict[str, str],
                     subscriptions: Sequence[Subscription], clock: Callable[[], datetime],
                     guard: LeaseGuard | None = None) -> None:
    """Fetch full documents page by page (``monitor.fetching``: in a worker process when
    there are many pages); each page is recorded in one transaction (with a ``guard``, only
    the trials this worker still leases)."""
    ids = sorted(to_fetch)
    chunks = [ids[start:start + FETCH_PAGE] for start in range(0, len(ids), FETCH_PAGE)]
    pages = fetch_pages(client, chunks, page_size=FETCH_PAGE,
                        worker=worker_pays_off(client, len(chunks)))
    for page in pages:
        if page.error is not None:
            report.fail(page.nct_ids, "fetch", page.error)
            continue
        fetched_at = clock()
        with db.transaction() as session:
            if guard is not None:
                trials = guard.held(session, page.nct_ids)
            else:  # one query for the page, not one per trial
                trials = repo.trials_by_nct_id(session, page.nct_ids)
            repo.prefetch_page(session, trials.values())  # their versions, query matches
            for study in page.studies:
                if study.record is None:
                    report.failures.append(f"parse: {study.error}")
                    log.warning("cycle.bad_record", reason=study.error)
                    continue
                _record_fetched(session, report, study.record, study.compressed_raw, trials,
                                new_matches, subscriptions, fetched_at, guarded=guard is not None)


def _record_fetched(session: Session, report: CycleReport, record: TrialRecord,
                    compressed_raw: bytes, trials: dict[str, Trial],
                    new_matches: dict[str, str], subscriptions: Sequence[Subscription],
                    fetched_at: datetime, *, guarded: bool) -> None:
    if guarded and record.nct_id not in trials:
        log.warning("cycle.lease_lost", nct_id=record.nct_id)
        return
    extra = []
    if record.nct_id in new_matches:
        extra.append(ChangeEvent(
            nct_id=record.nct_id, kind="new_trial", field="query", old=None,
            new=new_matches[record.nct_id], severity="medium",
            summary=f"New trial matching query {new_matches[record.nct_id]}: "
                    f"{record.title or record.nct_id}"))
    observation = Observation(record=record, raw=b"", compressed_raw=compressed_raw,
                              raw_format="ctgov-json", source="ctgov", fetched_at=fetched_at)
    outcome = record_observation(session, observation, subscriptions=subscriptions,
                                 extra_events=extra)
    report.fetched += 1
    report.records.append(outcome)
    report.events.extend(outcome.events)
    report.changed += int(outcome.changed)
    trial = trials.get(record.nct_id) or repo.trial(session, record.nct_id)
    assert trial is not None
    trial.registry_last_update = record.last_update_posted
    trial.last_error = None
    if record.nct_id in new_matches:
        trial.watched = True  # its new_trial event is stored: no longer pending


def confirm_missing(db: Database, client: RegistryClient, report: CycleReport,
                    missing: Sequence[str], subscriptions: Sequence[Subscription],
                    clock: Callable[[], datetime], guard: LeaseGuard | None = None) -> None:
    for nct_id in missing:
        try:
            client.get_study(nct_id)
        except TrialNotFound:
            with db.transaction() as session:
                if guard is not None and not guard.held(session, [nct_id]):
                    continue
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
            report.fail([nct_id], "confirm", exc)
            continue
        # Served one by one but not listed: an alias or a listing hiccup. Next cycle retries.
        log.info("cycle.listing_gap", nct_id=nct_id)
