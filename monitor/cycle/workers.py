"""Several workers, one cycle: the shared-round path of ``run_cycle`` on PostgreSQL.

    join the round of this data load ─► prepare it (one worker: queries, strategy)
        ─► lease a batch (FOR UPDATE SKIP LOCKED) ─► list it ─► stamp the unmoved checked
        ─► keep the moved ones, fetch them a full page (100) at a time ─► lease again ...
        ─► none left: fetch the last page; (changed-since) stamp every unmoved trial checked;
           wait for other workers' leases (taking over expired ones) until the round is
           complete, then close it

A batch is sized to one request. With the ``ids`` strategy it is as many trials as one
``filter.ids`` listing request carries (~600, the URL limit). With ``changed-since`` the
round's listing is already known, so only the trials it says moved (and those never fetched)
are leased, a fetch page at a time, and all the others are stamped checked by one set-based
UPDATE (``leases.stamp_unmoved``). Moved trials are gathered across batches, still leased,
until they fill a fetch page: 100 changed trials spread over the watch list cost one fetch
request, not one per batch.

The steps themselves (listing, fetching, recording, removals, queries) are the ones the
single-process cycle uses, called with a ``LeaseGuard`` so only leased trials are written;
the SQL is ``trialwatch.storage.leases``; README.md ("Running on PostgreSQL") tells users.

How a round works. On SQLite a cycle is one process's pass over every watched trial (the
daemon holds a file lock, so there is one). On PostgreSQL every ``run_cycle`` without
``only`` takes part in a shared *round* instead, so several ``trialwatch run`` processes
split the work:

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

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from trialwatch.monitor.cycle import reverify
from trialwatch.monitor.cycle.fetching import FETCH_PAGE
from trialwatch.monitor.cycle.lease_guard import LeaseGuard
from trialwatch.monitor.cycle.listing import (
    CHANGED_SINCE_OVERLAP,
    list_by_ids,
    moved,
    switched_to_unknown,
)
from trialwatch.monitor.cycle.queries import pending_new_matches, run_queries
from trialwatch.monitor.cycle.recording import confirm_missing, fetch_and_record, settle_unserved
from trialwatch.monitor.cycle.report import CycleReport
from trialwatch.monitor.sources.ctgov.client import RegistryClient, RegistryError, StudyStamp
from trialwatch.monitor.versioning import Subscription
from trialwatch.storage import leases
from trialwatch.storage import repository as repo
from trialwatch.storage.engine import Database
from trialwatch.storage.models import Cycle, Trial

log = structlog.get_logger(__name__)

MAX_POLL_SECONDS = 0.5


@dataclass(frozen=True)
class Plan:
    """How the round lists its trials: ``ids`` per batch, or the round's changed-since stamps."""

    strategy: str
    stamps: dict[str, str | None] | None


def run_round(db: Database, client: RegistryClient, report: CycleReport,
              subscriptions: Sequence[Subscription], clock: Callable[[], datetime], *,
              cycle_id: int, owner: str, lease: timedelta, batch: int,
              should_stop: Callable[[], bool] | None,
              reverify_every: timedelta = timedelta(0), previous_stamp: str | None = None
              ) -> None:
    """This worker's share of the round for the registry's current data load (the worker
    that prepares the round also re-verifies its budget of trials, ``reverify_every``
    counted from the data load ``previous_stamp`` of the last successful cycle)."""
    report.data_timestamp = client.version().data_timestamp
    with db.transaction() as session:
        state = leases.join_round(session, data_timestamp=report.data_timestamp, owner=owner,
                                  now=report.started_at)
        cycle_row = session.get(Cycle, cycle_id)
        assert cycle_row is not None
        cycle_row.round_id = state.id
        unrun_query = leases.has_unrun_query(session)
    report.round_id = state.id
    worker = _RoundWorker(db, client, report, subscriptions, clock, state.id, owner, lease,
                          batch, should_stop)
    worker.reverify_every, worker.previous_stamp = reverify_every, previous_stamp
    log.info("cycle.round_joined", round=state.id, owner=owner, closed=state.closed)
    try:
        plan = worker.prepare(state, needed=state.prepared_at is None or unrun_query)
        if plan is not None:
            report.strategy = plan.strategy
            worker.check_all(plan)
    finally:
        worker.release()
    if state.closed and report.watched == 0:
        report.strategy = "unchanged-data"  # the round for this data load was already done


class _RoundWorker:
    def __init__(self, db: Database, client: RegistryClient, report: CycleReport,
                 subscriptions: Sequence[Subscription], clock: Callable[[], datetime],
                 round_id: int, owner: str, lease: timedelta, batch: int,
                 should_stop: Callable[[], bool] | None) -> None:
        self.db, self.client, self.report = db, client, report
        self.subscriptions, self.clock = subscriptions, clock
        self.round_id, self.owner, self.lease, self.batch = round_id, owner, lease, batch
        self.should_stop = should_stop or (lambda: False)
        self.guard = LeaseGuard(owner, lease)
        self.poll = min(MAX_POLL_SECONDS, lease.total_seconds() / 4)
        self._counted = (0, 0, 0, 0, client.requests_made)
        # Leased trials listed as moved, not fetched yet: gathered up to a full fetch page.
        self._moved: dict[str, StudyStamp] = {}
        # Every lease this worker holds was taken or last renewed after this moment.
        self._renewed_at = time.monotonic()
        self.reverify_every = timedelta(0)
        self.previous_stamp: str | None = None

    # ------------------------------------------------------------- preparation

    def prepare(self, state: leases.RoundState, *, needed: bool) -> Plan | None:
        """The round's plan: prepared by this worker, or by another one we wait for."""
        if not needed:
            return Plan(state.strategy or "ids", state.stamps)
        while True:
            with self.db.transaction() as session:
                outcome = leases.claim_preparation(session, self.round_id, self.owner,
                                                   self.lease, seen_prepared_at=state.prepared_at)
                current = leases.round_state(session, self.round_id)
            if outcome == "claimed":
                return self._prepare(current)
            if outcome == "done":
                return Plan(current.strategy or "ids", current.stamps)
            if self.should_stop():
                return None
            time.sleep(self.poll)

    def _prepare(self, state: leases.RoundState) -> Plan:
        def renew() -> None:
            with self.db.transaction() as session:
                leases.renew_preparation(session, self.round_id, self.owner, self.lease)

        new_matches = run_queries(self.db, self.client, self.report, self.clock,
                                  guard=self.guard, renew=renew)
        pending = {n: q for n, q in pending_new_matches(self.db).items() if n not in new_matches}
        if pending:  # matches whose first fetch failed in an earlier round: fetched again here
            with self.db.transaction() as session:
                self.guard.claim(session, list(repo.trials_by_nct_id(session, pending).values()))
            new_matches.update(pending)
        if state.strategy is None:
            strategy, stamps = self._choose_strategy()
        else:
            strategy, stamps = state.strategy, state.stamps
        with self.db.transaction() as session:
            leases.finish_preparation(session, self.round_id, self.owner,
                                      strategy=strategy, stamps=stamps)
            self._add_counts(session)  # a failed query makes the round "partial"
            state = leases.round_state(session, self.round_id)
        log.info("cycle.round_prepared", round=self.round_id, strategy=state.strategy,
                 new_matches=len(new_matches))
        if new_matches:  # leased to us by run_queries: fetched here, with new_trial events
            to_fetch = {nct_id: StudyStamp(nct_id, None) for nct_id in new_matches}
            self.report.watched += len(to_fetch)
            fetch_and_record(self.db, self.client, self.report, to_fetch, new_matches,
                             self.subscriptions, self.clock, guard=self.guard)
            self._finish(sorted(to_fetch))
        self._reverify(exclude=new_matches.keys())
        return Plan(state.strategy or strategy, state.stamps)

    def _reverify(self, *, exclude: Collection[str]) -> None:
        """The round's rolling re-verification (once, by the preparing worker): lease the
        budget of least recently verified trials, fetch them whole, stamp them checked."""
        due = reverify.due(self.db, self.report.data_timestamp, self.previous_stamp,
                           self.reverify_every, exclude=exclude)
        if not due:
            return
        with self.db.transaction() as session:
            trials = repo.trials_by_nct_id(session, due)
            self.guard.claim(session, list(trials.values()))
        self.report.reverified += len(due)
        self.report.watched += len(due)
        to_fetch = {nct_id: StudyStamp(nct_id, None) for nct_id in due}
        unserved = fetch_and_record(self.db, self.client, self.report, to_fetch, {},
                                    self.subscriptions, self.clock, guard=self.guard)
        missing = settle_unserved(self.db, self.report, due, unserved, guard=self.guard)
        confirm_missing(self.db, self.client, self.report, missing, self.subscriptions,
                        self.clock, guard=self.guard)
        self._finish(sorted(due))

    def _choose_strategy(self) -> tuple[str, dict[str, str | None] | None]:
        """``ids`` (one listing page per batch) unless one changed-since listing is cheaper."""
        with self.db.transaction() as session:
            count = leases.unchecked_count(session, self.round_id)
            last_ok = leases.last_ok_round_opened(session, self.round_id)
            if last_ok is None and (cycle := repo.last_successful_cycle(session)) is not None:
                last_ok = cycle.started_at  # history from before the shared rounds
        batch = self._batch_size("ids")
        full, rest = divmod(count, batch)
        by_ids_cost = full * self.client.listing_requests(batch) + (
            self.client.listing_requests(rest) if rest else 0)
        if last_ok is None or by_ids_cost <= 2:
            return "ids", None
        since = (last_ok - CHANGED_SINCE_OVERLAP).date()
        try:
            changes = self.client.changed_since(since)  # its first page tells the cost
            if not changes.cheaper_than(by_ids_cost):
                return "ids", None
            with self.db.transaction() as session:
                # every known trial, not only the watched ones: one watched during the round
                # is judged by this listing too (``leases.stamp_unmoved``)
                known = leases.known_ids(session)
            stamps = {s.nct_id: s.last_update_posted
                      for s in changes if s.nct_id in known}
            # Switched to UNKNOWN by the registry, its date unchanged: a stamp of None
            # (unlike any stored date) has the round fetch those whose status moved.
            switched = {s.nct_id: s for s in switched_to_unknown(self.client, self.report,
                                                                  since)
                        if s.nct_id in known and s.nct_id not in stamps}
            with self.db.transaction() as session:
                stored = dict(session.execute(
                    select(Trial.nct_id, Trial.overall_status)
                    .where(repo.among(session, Trial.nct_id, switched))).all())
            stamps.update({n: None for n, s in switched.items()
                           if stored.get(n) not in (None, s.overall_status)})
        except RegistryError as exc:  # the per-batch listing still works: fall back to it
            log.warning("cycle.changed_since_unavailable", reason=str(exc))
            return "ids", None
        return "changed-since", stamps

    # ------------------------------------------------------------- the trials

    def check_all(self, plan: Plan) -> None:
        """Lease and check batches until the round is complete (or waiting is pointless)."""
        batch = self._batch_size(plan.strategy)
        deadline: float | None = None
        while not self.should_stop():
            leased = self._lease(plan, batch)
            if leased:
                self._check_batch(leased, plan)
                self._fetch_moved(full_pages_only=True)
                deadline = None
                continue
            self._fetch_moved()  # nothing more to lease: the last, partial page
            if plan.strategy == "changed-since" and self._stamp_unmoved():
                continue  # look again: someone may have added trials meanwhile
            with self.db.transaction() as session:
                if leases.close_round(session, self.round_id):
                    log.info("cycle.round_closed", round=self.round_id)
                    return
            # Others hold the rest: wait for them, or for their leases to expire (a worker
            # that died). A live worker renews its leases; after one lease period without
            # getting anything, leave the rest to it (or to the next cycle).
            moment = time.monotonic()
            if deadline is None:
                deadline = moment + self.lease.total_seconds() + self.poll
            elif moment >= deadline:
                log.info("cycle.round_left_to_others", round=self.round_id)
                return
            time.sleep(self.poll)
        self._fetch_moved()  # stopping: what is listed as moved and leased is finished first

    def _batch_size(self, strategy: str) -> int:
        """Trials per lease: what one request handles. Every trial a changed-since round
        leases is fetched, so a fetch page; with ``ids`` a batch is listed, so as many as one
        listing request carries (``lease_batch`` stays the upper bound)."""
        if strategy == "changed-since":
            return min(self.batch, FETCH_PAGE)
        return min(self.batch, self.client.ids_per_listing_request())

    def _lease(self, plan: Plan, batch: int) -> list[leases.LeasedTrial]:
        with self.db.transaction() as session:
            self._keep_moved_leased(session)
            if plan.strategy == "changed-since":
                return leases.lease_trials_to_fetch(session, self.round_id, self.owner,
                                                    self.lease, batch)
            return leases.lease_trials(session, self.round_id, self.owner, self.lease, batch)

    def _keep_moved_leased(self, session: Session) -> None:
        """Moved trials wait, leased, for a full fetch page: renew the leases once a third of
        the lease period has gone by (not on every batch: each renewal rewrites them)."""
        moment = time.monotonic()
        if self._moved and moment - self._renewed_at > self.lease.total_seconds() / 3:
            leases.renew(session, self.owner, self.lease)
            self._renewed_at = moment

    def _check_batch(self, leased: Sequence[leases.LeasedTrial], plan: Plan) -> None:
        """List the batch (``ids``), confirm the trials the listing lacked, stamp the unmoved
        ones checked and keep the moved ones for ``_fetch_moved``."""
        self.report.watched += len(leased)
        missing: list[str] = []
        if plan.strategy == "changed-since":  # leased because they need a fetch: all of them
            known = plan.stamps or {}
            moved_now = {t.nct_id: StudyStamp(t.nct_id, known.get(t.nct_id)) for t in leased}
        else:  # a trial marked removed is not listed: re-verification asks for it
            trials = {t.nct_id: t for t in leased if not t.removed}
            stamps, missing = list_by_ids(self.client, self.report, list(trials))
            moved_now = {n: s for n, s in stamps.items() if _moved(s, trials[n])}
        confirm_missing(self.db, self.client, self.report, missing, self.subscriptions,
                        self.clock, guard=self.guard)
        self._moved.update(moved_now)
        self._finish([t.nct_id for t in leased if t.nct_id not in moved_now])

    def _fetch_moved(self, *, full_pages_only: bool = False) -> None:
        """Fetch and record the gathered moved trials (only whole pages, while leasing goes
        on), then stamp them checked."""
        count = len(self._moved)
        if full_pages_only:
            count -= count % FETCH_PAGE
        if not count:
            return
        to_fetch = {n: self._moved.pop(n) for n in sorted(self._moved)[:count]}
        fetch_and_record(self.db, self.client, self.report, to_fetch, {}, self.subscriptions,
                         self.clock, guard=self.guard)
        self._finish(list(to_fetch))

    def _stamp_unmoved(self) -> int:
        """Changed-since: stamp checked, in one UPDATE, every trial the round need not fetch."""
        with self.db.transaction() as session:
            stamped = leases.stamp_unmoved(session, self.round_id)
            self._add_counts(session, stamped)
        self.report.watched += stamped
        return stamped

    def _finish(self, nct_ids: Sequence[str]) -> None:
        """Stamp the trials checked in the round; add what this worker did to its totals."""
        with self.db.transaction() as session:
            checked = 0
            if nct_ids:
                checked = leases.mark_checked(session, self.round_id, self.owner, nct_ids)
            self._add_counts(session, checked)

    def _add_counts(self, session: Session, checked: int = 0) -> None:
        report = self.report
        now = (report.fetched, report.changed, len(report.events), len(report.failures),
               self.client.requests_made)
        fetched, changed, events, failures, requests = (
            a - b for a, b in zip(now, self._counted, strict=True))
        self._counted = now
        leases.add_counts(session, self.round_id, checked=checked, fetched=fetched,
                          changed=changed, events=events, failures=failures,
                          requests=requests)

    def release(self) -> None:
        """Give back whatever this worker still leases (stopping, or an error)."""
        try:
            with self.db.transaction() as session:
                leases.release(session, self.owner)
        except Exception as exc:  # the database itself failed; the leases will expire
            log.warning("cycle.release_failed", reason=str(exc))


def _moved(stamp: StudyStamp, trial: leases.LeasedTrial) -> bool:
    return moved(stamp, last_update=trial.registry_last_update,
                 overall_status=trial.overall_status, has_version=trial.has_version)
