"""One fetch cycle: ask the registry what moved, fetch only that, record it, count everything.

    version  ─► list stamps (``trialwatch.monitor.cycle.listing``: by watched IDs, or "changed
    since") ─► moved?
    saved queries ─► new matches (``new_trial``)                                        │
    fetch full documents in pages, parse (``trialwatch.monitor.cycle.fetching``) ─►
    ``record_observation`` ◄┘

Failure rules (a bad answer never becomes a false alert):
* a listing or fetch batch that fails (unavailable, blocked, bad answer) is recorded as a
  failure for those trials and skipped: no version, no event, and the trial's last-known
  update date is left alone so the next cycle tries again;
* a trial missing from a *successful* listing is confirmed one by one with ``get_study``;
  only a 404 for a trial seen before gives (exactly one) ``removed`` event; the trial is
  then marked removed, left out of the listings and asked for again only at the pace of
  re-verification (served again: another ``removed`` event, "served again").

Changes without a new ``lastUpdatePostDate``: a status change is seen in the listing (it
lists ``OverallStatus``), any other one by rolling re-verification
(``trialwatch.monitor.cycle.reverify``): each cycle re-fetches its budget of the least
recently verified watched trials with the moved ones, in the same pages.

Several workers (PostgreSQL): on PostgreSQL every ``run_cycle`` without ``only`` takes part in a
shared *round* of the registry data load instead; ``trialwatch.monitor.cycle.workers`` says how.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import structlog

from trialwatch.monitor import health
from trialwatch.monitor.cycle import reverify
from trialwatch.monitor.cycle.listing import list_moved, moved, watch_list
from trialwatch.monitor.cycle.queries import has_unrun_query, pending_new_matches, run_queries
from trialwatch.monitor.cycle.recording import confirm_missing, fetch_and_record, settle_unserved
from trialwatch.monitor.cycle.report import CycleReport
from trialwatch.monitor.sources.ctgov.client import RegistryClient, RegistryError, StudyStamp
from trialwatch.monitor.versioning import Subscription
from trialwatch.notifiers.health import DEFAULT_FAILING_AFTER
from trialwatch.storage import leases
from trialwatch.storage import repository as repo
from trialwatch.storage.engine import Database
from trialwatch.storage.models import Cycle

log = structlog.get_logger(__name__)

# Several workers (PostgreSQL): trials per leased batch, and how long a lease lives unrenewed.
LEASE_BATCH = 1000
DEFAULT_LEASE = timedelta(minutes=5)
DEFAULT_REVERIFY_EVERY = timedelta(days=7)  # ``ctgov.reverify_every``
YOUNG_GC_THRESHOLD = 20_000  # during a cycle (see _gc_frozen)


def run_cycle(db: Database, client: RegistryClient, *,
              subscriptions: Sequence[Subscription] = (), only: Sequence[str] | None = None,
              worker: str | None = None, now: Callable[[], datetime] | None = None,
              shared: bool | None = None, lease: timedelta = DEFAULT_LEASE,
              lease_batch: int = LEASE_BATCH, should_stop: Callable[[], bool] | None = None,
              reverify_every: timedelta = DEFAULT_REVERIFY_EVERY,
              failing_after: int = DEFAULT_FAILING_AFTER) -> CycleReport:
    """One cycle over the watched trials (or just ``only``); never raises for registry faults.

    ``shared`` (default: on PostgreSQL, unless ``only`` is given) makes the cycle take part
    in the shared round of several workers, leasing ``lease_batch`` trials at a time for
    ``lease``; ``should_stop`` is polled while waiting for other workers' leases.
    ``reverify_every`` paces rolling re-verification (``timedelta(0)``: off).
    ``failing_after`` consecutive failed cycles make one ``system`` alert "checks are
    failing" to the subscriptions asking for ``system`` (``trialwatch.monitor.health``),
    written with the cycle's outcome; a successful cycle after it, one "checks recovered".
    """
    clock = now or (lambda: datetime.now(UTC))
    if shared is None:
        shared = not db.is_sqlite and only is None
    report = CycleReport(started_at=clock(), stopping=should_stop or (lambda: False))
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
                from trialwatch.monitor.cycle.workers import run_round

                run_round(db, client, report, subscriptions, clock, cycle_id=cycle_id,
                          owner=leases.lease_owner(worker), lease=lease, batch=lease_batch,
                          should_stop=should_stop, reverify_every=reverify_every,
                          previous_stamp=last_ok_stamp)
            else:
                _run(db, client, report, subscriptions, only, last_ok_started, last_ok_stamp,
                     clock, reverify_every)
    except RegistryError as exc:  # the registry as a whole is unreachable / blocked
        if report.skip_if_stopping(max(report.watched, 1), "registry"):
            report.outcome = "stopped"
        else:
            report.failures.append(f"registry: {exc}")
            report.outcome = "failed"
    report.requests = client.requests_made - requests_before
    if report.outcome == "running":
        report.outcome = ("stopped" if report.skipped else
                          "partial" if report.failures else "ok")
    report.finished_at = clock()
    with db.transaction() as session:
        row = session.get(Cycle, cycle_id)
        assert row is not None
        row.finished_at, row.outcome = report.finished_at, report.outcome
        row.watched, row.fetched, row.changed = report.watched, report.fetched, report.changed
        row.events, row.requests = len(report.events), report.requests
        row.failures, row.data_timestamp = len(report.failures), report.data_timestamp
        row.error = "; ".join(report.failures)[:4000] or None
        flip = health.record_cycle(session, outcome=report.outcome, covered=report.covered,
                                   failures=report.failures, started_at=report.started_at,
                                   failing_after=failing_after,
                                   channels=health.system_channels(subscriptions))
    if flip is not None:
        log.warning("monitor.health", subject=flip.subject, state=flip.state,
                    summary=flip.summary)
    why = {"error": "; ".join(report.failures[:3]) + (
        f" (+{len(report.failures) - 3} more)" if len(report.failures) > 3 else "")
           } if report.failures else {}
    level = log.warning if report.outcome in ("failed", "partial") else log.info
    level("cycle.finished", outcome=report.outcome, strategy=report.strategy,
          round=report.round_id, reverified=report.reverified,
          watched=report.watched, covered=report.covered, skipped=report.skipped,
          fetched=report.fetched, changed=report.changed,
          events=len(report.events), requests=report.requests,
          failures=len(report.failures), **why,
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
         clock: Callable[[], datetime], reverify_every: timedelta) -> None:
    report.data_timestamp = client.version().data_timestamp
    watch = watch_list(db, only)
    if (only is None and last_ok_stamp is not None and report.data_timestamp == last_ok_stamp
            and not watch.unfetched and not has_unrun_query(db)):
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
                if moved(stamp, last_update=states[nct_id].last_update,
                         overall_status=states[nct_id].overall_status,
                         has_version=states[nct_id].has_version)}
    for nct_id in new_matches:
        to_fetch.setdefault(nct_id, StudyStamp(nct_id, None))
    rechecked: list[str] = []
    if only is None:
        rechecked = reverify.due(db, report.data_timestamp, last_ok_stamp, reverify_every,
                                 exclude=to_fetch.keys() | set(missing))
        report.reverified = len(rechecked)
        for nct_id in rechecked:
            to_fetch[nct_id] = StudyStamp(nct_id, None)
    unserved = fetch_and_record(db, client, report, to_fetch, new_matches, subscriptions, clock)
    missing = [*missing, *settle_unserved(db, report, rechecked, unserved)]
    confirm_missing(db, client, report, missing, subscriptions, clock)


