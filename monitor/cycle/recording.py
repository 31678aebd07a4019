"""The cycle's recording stage: fetch the moved trials in pages and record each version.

``fetch_and_record`` stores one page of fetched documents per transaction (a ``new_trial``
event for new query matches; a ``removed`` event "served again" for a trial marked removed
that the registry serves again), stamps every fetched trial with the data load it saw
(``verified_data_at``, for rolling re-verification) and returns the IDs the registry did not
serve; ``confirm_missing`` asks for each trial a successful listing lacked, one by one, and
records a ``removed`` event only for a 404 of a trial seen before; ``settle_unserved``
decides about re-verified trials a fetch did not return.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

import structlog
from sqlalchemy.orm import Session

from trialwatch.monitor.cycle.fetching import FETCH_PAGE, fetch_pages, worker_pays_off
from trialwatch.monitor.cycle.lease_guard import LeaseGuard
from trialwatch.monitor.cycle.report import CycleReport
from trialwatch.monitor.cycle.reverify import data_stamp
from trialwatch.monitor.events import ChangeEvent
from trialwatch.monitor.progress import ProgressLog
from trialwatch.monitor.record import TrialRecord
from trialwatch.monitor.sources.ctgov.client import (
    RegistryClient,
    RegistryError,
    StudyStamp,
    TrialNotFound,
)
from trialwatch.monitor.versioning import (
    Observation,
    Subscription,
    record_observation,
    record_removal,
    record_restoration,
)
from trialwatch.storage import repository as repo
from trialwatch.storage.engine import Database
from trialwatch.storage.models import Trial

log = structlog.get_logger(__name__)


def fetch_and_record(db: Database, client: RegistryClient, report: CycleReport,
                     to_fetch: dict[str, StudyStamp], new_matches: dict[str, str],
                     subscriptions: Sequence[Subscription], clock: Callable[[], datetime],
                     guard: LeaseGuard | None = None) -> set[str]:
    """Fetch full documents page by page (``trialwatch.monitor.cycle.fetching``: in a worker
    process when there are many pages); each page is recorded in one transaction (with a
    ``guard``, only the trials this worker still leases). Returns the IDs of successful
    pages the registry did not serve."""
    verified = data_stamp(report.data_timestamp)
    unserved: set[str] = set()
    ids = sorted(to_fetch)
    chunks = [ids[start:start + FETCH_PAGE] for start in range(0, len(ids), FETCH_PAGE)]
    pages = fetch_pages(client, chunks, page_size=FETCH_PAGE,
                        worker=worker_pays_off(client, len(chunks)))
    progress = ProgressLog("fetch", total=len(ids))  # a line every few seconds, not per page
    for page in pages:
        progress.advance(len(page.nct_ids), changed=report.changed)
        if page.error is not None:
            report.fail(page.nct_ids, "fetch", page.error)
            continue
        served = {study.record.nct_id for study in page.studies if study.record is not None}
        unserved.update(n for n in page.nct_ids if n not in served)
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
                                new_matches, subscriptions, fetched_at, verified,
                                guarded=guard is not None)
    return unserved


def settle_unserved(db: Database, report: CycleReport, rechecked: Sequence[str],
                    unserved: set[str], guard: LeaseGuard | None = None) -> list[str]:
    """Re-verified trials a fetch did not return: one marked removed is still gone (checked,
    stamped verified); the others are returned, to be confirmed one by one as missing."""
    asked = [n for n in rechecked if n in unserved]
    if not asked:
        return []
    with db.transaction() as session:
        trials = (guard.held(session, asked) if guard is not None
                  else repo.trials_by_nct_id(session, asked))
        missing = []
        for nct_id in asked:
            trial = trials.get(nct_id)
            if trial is None:
                continue
            if trial.removed_at is None:
                missing.append(nct_id)
            else:
                trial.verified_data_at = data_stamp(report.data_timestamp)
        return missing


def _record_fetched(session: Session, report: CycleReport, record: TrialRecord,
                    compressed_raw: bytes, trials: dict[str, Trial],
                    new_matches: dict[str, str], subscriptions: Sequence[Subscription],
                    fetched_at: datetime, verified: str | None, *, guarded: bool) -> None:
    if guarded and record.nct_id not in trials:
        log.warning("cycle.lease_lost", nct_id=record.nct_id)
        return
    extra = []
    if record.nct_id in new_matches:
        extra.append(ChangeEvent(
            nct_id=record.nct_id, kind="new_trial", field="query", old=None,
            new=new_matches[record.nct_id], severity="medium",
            summary=f'New trial matching "{new_matches[record.nct_id]}": '
                    f"{record.title or record.nct_id}"))
    known = trials.get(record.nct_id)
    if known is not None and known.removed_at is not None:  # served again: a change too
        restored = record_restoration(session, known, now=fetched_at,
                                      subscriptions=subscriptions)
        if restored is not None:
            report.events.append(restored)
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
    trial.verified_data_at = verified
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
