"""Backfill: import every past registry version of a trial, diffed, never alerted.

The registry's history (``trialwatch.monitor.sources.ctgov.history``) lists versions R0..RN. Each
one
imported becomes a stored version with ``registry_version`` = its registry number,
``source="backfill"``, ``historical=True`` and ``fetched_at`` = its posting date (midnight
UTC); the events between consecutive versions are stored ``historical`` and are never put
in the outbox. A registry version whose canonical content equals the one before it is
skipped (it changed nothing trialwatch keeps).

Local version numbers always follow the registry's order: ``history`` lists the past before
the present and a status event reads "Not yet recruiting → Recruiting", never the reverse.
Each run picks one of four cases:

* **fresh** - no stored version: R0..RN become versions 1..N+1, in registry order.
* **continue** - every stored version came from a backfill: carry on from the registry
  version after the last one stored. This is both *resume* (an interrupted run keeps what it
  stored: every version is committed on its own, so a trial with 80 versions costs 81
  requests and a resumed one fewer) and *idempotency* (a complete trial costs one request
  and stores nothing).
* **merge** - the trial was watched or ingested before any backfill (its first version has
  no registry number): fetch the registry versions posted on or before its newest version,
  then, in ONE transaction (all or nothing; an interrupted merge starts again):

  - a registry version whose content hash equals a stored version is not stored again: it
    only gives that version its ``registry_version`` (when unset);
  - the registry versions older than the first stored version (the one its content matches,
    or failing that those posted before it) that are not stored already become versions
    1..k: every stored version is renumbered k up first (``repository.shift_versions``:
    versions, events' from/to versions, outbox rows' versions - outbox ids, the alerts'
    stable ids, stay - and the trial's latest version), then the k are inserted, with the
    historical events between them and between version k and the old first version, now
    k+1. None of them gets an outbox row;
  - registry versions posted between two stored versions and equal to neither are left out
    (the events stored then already summarise them), and those newer than the newest stored
    version are left to ``check``, which alerts on them.

  Afterwards the first version has a registry number, so the next run is "caught up".
* **caught up** - the trial has versions from other sources and its first version already
  has a registry number (an earlier merge, or ``check`` after a backfill): nothing is
  imported; one request.

Renumbering moves the numbers users may have noted (``diff --from 3``) and the numbers of
alerts still waiting in the outbox; the content behind each event does not change.

Failures: a history answer that fails its shape check, or a document the parser rejects,
undoes everything this run stored for the trial (nothing stored for it); an unreachable
registry (or Ctrl-C) keeps what was stored, and the next run resumes from there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Literal, TypeVar

import orjson
import structlog
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from trialwatch.monitor.diff import diff_records
from trialwatch.monitor.events import iso_utc, sort_key
from trialwatch.monitor.record import ParseError, TrialRecord
from trialwatch.monitor.sources.ctgov.client import BadRegistryResponse, RegistryError
from trialwatch.monitor.sources.ctgov.history import HistoricalStudy, HistoryClient, HistoryEntry
from trialwatch.monitor.sources.ctgov.parser import parse_study
from trialwatch.monitor.versioning import Observation, record_observation
from trialwatch.storage import repository as repo
from trialwatch.storage.engine import Database
from trialwatch.storage.models import Event, Trial, Version

__all__ = ["BACKFILL_SOURCE", "RAW_FORMAT", "TrialBackfill", "backfill_trial"]

log = structlog.get_logger(__name__)

BACKFILL_SOURCE = "backfill"
RAW_FORMAT = "ctgov-history"  # the study as the history endpoint sent it: normalize_study first
Mode = Literal["fresh", "continue", "merge", "caught up"]
T = TypeVar("T")
Progress = Callable[[Sequence[T], str], AbstractContextManager[Iterable[T]]]


@dataclass
class TrialBackfill:
    """What one trial's backfill did: the ``backfill --json`` summary row."""

    nct_id: str
    versions_total: int = 0  # registry versions the history lists
    imported: int = 0  # stored as new versions by this run
    events: int = 0  # historical events stored by this run
    renumbered: int = 0  # how far up the trial's stored versions moved (merge: k)
    mode: Mode | None = None
    requests: int = 0
    error: str | None = None

    @property
    def skipped(self) -> int:
        """Listed but not stored by this run: already stored, unchanged, or left to check."""
        return max(0, self.versions_total - self.imported)

    def to_json(self) -> dict[str, Any]:
        row: dict[str, Any] = {"nct_id": self.nct_id, "versions_total": self.versions_total,
                               "imported": self.imported, "skipped": self.skipped,
                               "events": self.events, "renumbered": self.renumbered}
        if self.error is not None:
            row["error"] = self.error
        return row


class _Conflict(Exception):
    """Another writer changed the trial while its history was fetched: nothing is written."""


@dataclass(frozen=True)
class _Fetched:
    entry: HistoryEntry
    study: HistoricalStudy
    record: TrialRecord


@contextmanager
def _no_progress(items: Sequence[T], label: str) -> Iterator[Iterable[T]]:
    yield items


def backfill_trial(db: Database, client: HistoryClient, nct_id: str, *,
                   progress: Progress[HistoryEntry] = _no_progress,
                   now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> TrialBackfill:
    """Import the trial's registry history into ``db`` (see the module docstring).

    Registry and parse failures are returned in ``.error`` (one line), never raised.
    """
    job = _Job(db, client, nct_id, now)
    started = client.requests_made
    try:
        job.plan()
        with progress(job.pending, f"Backfilling {nct_id}") as entries:
            for entry in entries:
                job.fetch(entry)
        job.finish()
    except (BadRegistryResponse, ParseError, _Conflict) as exc:
        job.undo()
        job.result.error = _one_line(nct_id, exc)
    except RegistryError as exc:
        job.result.error = _one_line(nct_id, exc)
    finally:
        job.result.requests = client.requests_made - started
    result = job.result
    log.info("backfill.trial", nct_id=nct_id, mode=result.mode, versions=result.versions_total,
             imported=result.imported, events=result.events, renumbered=result.renumbered,
             requests=result.requests, error=result.error)
    return result


class _Job:
    """One trial's backfill: plan the case, fetch what is missing, store it."""

    def __init__(self, db: Database, client: HistoryClient, nct_id: str,
                 now: Callable[[], datetime]) -> None:
        self.db = db
        self.client = client
        self.nct_id = nct_id
        self.now = now
        self.result = TrialBackfill(nct_id)
        self.pending: list[HistoryEntry] = []
        self.fetched: list[_Fetched] = []
        self.planned: list[tuple[int, str]] = []  # the stored (version, hash)s a merge saw
        self.start_version = 0
        self.trial_existed = False
        self.summary: tuple[str | None, str | None, str | None] = (None, None, None)

    # ------------------------------------------------------------------ plan

    def plan(self) -> None:
        entries = self.client.history(self.nct_id)
        self.result.versions_total = len(entries)
        with self.db.transaction() as session:
            trial = repo.trial(session, self.nct_id)
            versions = list(repo.versions(session, trial)) if trial is not None else []
            if trial is not None:
                self.trial_existed = True
                self.start_version = trial.latest_version
                self.summary = (trial.title, trial.overall_status, trial.phases)
            mode, pending = _plan(entries, versions)
            self.planned = [(v.version, v.content_hash) for v in versions]
        self.result.mode = mode
        self.pending = pending
        log.debug("backfill.plan", nct_id=self.nct_id, mode=mode, pending=len(pending))

    # ------------------------------------------------------------------ fetch and store

    def fetch(self, entry: HistoryEntry) -> None:
        study = self.client.study_version(self.nct_id, entry.version)
        try:
            record = parse_study(study.document)
        except ParseError as exc:
            raise ParseError(f"history version {entry.version}: {exc} [{study.url}]") from None
        fetched = _Fetched(entry, study, record)
        if self.result.mode == "merge":
            self.fetched.append(fetched)  # written at the end, in one transaction
            return
        with self.db.transaction() as session:
            repo.get_or_create_trial(session, self.nct_id, self.now())
            outcome = record_observation(session, _observation(fetched), historical=True)
        if outcome.changed:
            self.result.imported += 1
            self.result.events += len(outcome.events)

    def finish(self) -> None:
        """Merge: number the past before the stored versions, in one transaction."""
        if self.result.mode != "merge" or not self.fetched:
            return
        with self.db.transaction() as session:
            trial = session.scalars(select(Trial).where(Trial.nct_id == self.nct_id)
                                    .with_for_update()).one_or_none()
            versions = list(repo.versions(session, trial)) if trial is not None else []
            if trial is None or [(v.version, v.content_hash) for v in versions] != self.planned:
                raise _Conflict("the trial changed while its history was being fetched; "
                                "nothing stored, run backfill again")
            _match_registry_versions(versions, self.fetched)
            first = versions[0]
            first_record = TrialRecord.from_canonical(first.canonical)
            chain, anchor = _older_chain(versions, first_record, self.fetched)
            if anchor is not None and first.registry_version is None:
                first.registry_version = anchor.entry.version
            if not chain:
                return
            bridge_at = anchor.entry.posted_at if anchor is not None else first.fetched_at
            k = len(chain)
            repo.shift_versions(session, trial, k)  # the old first version is now k + 1
            previous: TrialRecord | None = None
            for number, fetched in enumerate(chain, start=1):
                _insert(session, trial, number, _observation(fetched))
                if previous is not None:
                    self.result.events += _add_historical_events(
                        session, trial, previous, fetched.record, number,
                        fetched.entry.posted_at)
                previous = fetched.record
            assert previous is not None
            self.result.events += _add_historical_events(
                session, trial, previous, first_record, k + 1, bridge_at)
            self.result.imported += k
            self.result.renumbered = k
            log.info("backfill.renumbered", nct_id=self.nct_id, by=k)

    # ------------------------------------------------------------------ undo

    def undo(self) -> None:
        """Remove what this run stored for the trial (after a failed shape check)."""
        if self.result.mode != "merge" and self.result.imported:
            with self.db.transaction() as session:
                removed = self._remove_added(session)
            if not removed:
                return
            log.warning("backfill.undone", nct_id=self.nct_id, versions=self.result.imported)
        self.result.imported = self.result.events = self.result.renumbered = 0

    def _remove_added(self, session: Session) -> bool:
        trial = repo.trial(session, self.nct_id)
        if trial is None:
            return True
        added = Version.trial_id == trial.id, Version.version > self.start_version
        if any(source != BACKFILL_SOURCE
               for source in session.scalars(select(Version.source).where(*added))):
            log.warning("backfill.not_undone", nct_id=self.nct_id,
                        reason="another writer stored versions meanwhile")
            return False
        session.execute(delete(Event).where(Event.trial_id == trial.id,
                                            Event.to_version > self.start_version))
        session.execute(delete(Version).where(*added))
        if not self.trial_existed:
            session.delete(trial)
        else:
            trial.latest_version = self.start_version
            trial.title, trial.overall_status, trial.phases = self.summary
            repo.refresh_last_change(session, trial)
        return True


# ---------------------------------------------------------------------- pure helpers


def _plan(entries: Sequence[HistoryEntry],
          versions: Sequence[Version]) -> tuple[Mode, list[HistoryEntry]]:
    """Which case applies, and which registry versions to fetch (see the module docstring)."""
    if not versions:
        return "fresh", list(entries)
    own = [v for v in versions if v.source != BACKFILL_SOURCE]
    stored = {v.registry_version for v in versions if v.registry_version is not None}
    if not own:
        last = max(stored, default=-1)
        return "continue", [e for e in entries if e.version > last]
    if versions[0].registry_version is not None:
        return "caught up", []
    limit = _posted_on_or_before(entries, own[-1].last_update_posted)
    return "merge", [e for e in entries[:limit] if e.version not in stored]


def _posted_on_or_before(entries: Sequence[HistoryEntry], posted: str | None) -> int:
    """How many registry versions were posted on or before ``posted`` (all when unknown)."""
    day = _day(posted)
    if day is None:
        return len(entries)
    count = sum(1 for e in entries if e.date <= day)
    return count or len(entries)


def _day(posted: str | None) -> date | None:
    try:
        return date.fromisoformat(posted[:10]) if posted else None
    except ValueError:
        return None


def _match_registry_versions(versions: Sequence[Version], fetched: Sequence[_Fetched]) -> None:
    """Give each stored version without a registry number the one whose content it has.

    Among registry versions with the same content hash, the newest posted on or before the
    stored version (content can come back: A, B, A), each registry version used once.
    """
    used = {v.registry_version for v in versions if v.registry_version is not None}
    for row in versions:
        if row.registry_version is not None:
            continue
        same = [f for f in fetched
                if f.record.content_hash == row.content_hash and f.entry.version not in used]
        day = _day(row.last_update_posted)
        dated = [f for f in same if day is None or f.entry.date <= day]
        if same:
            row.registry_version = (dated or same)[-1].entry.version
            used.add(row.registry_version)


def _older_chain(versions: Sequence[Version], first_record: TrialRecord,
                 fetched: Sequence[_Fetched]) -> tuple[list[_Fetched], _Fetched | None]:
    """The registry versions to number before the first stored one, and its registry twin.

    The twin (anchor) is the newest registry version posted on or before the first stored
    version whose content equals it or tells at least as much (a text page knows less);
    without one, the registry versions posted before the first stored one are the older
    ones. Versions whose content is already stored, or equal to the one before, are dropped.
    """
    first = versions[0]
    day = _day(first.last_update_posted)
    matches = [i for i, f in enumerate(fetched)
               if f.record.content_hash == first.content_hash
               or first_record.knows_less_or_equal(f.record)]
    dated = [i for i in matches if day is None or fetched[i].entry.date <= day]
    anchor: _Fetched | None = None
    if matches:
        cut = dated[-1] if dated else matches[0]
        anchor = fetched[cut]
    else:
        before = day or first.fetched_at.date()
        cut = sum(1 for f in fetched if f.entry.date < before)
    stored = {v.content_hash for v in versions}
    chain: list[_Fetched] = []
    for item in fetched[:cut]:
        if item.record.content_hash in stored:
            continue
        if chain and (chain[-1].record.content_hash == item.record.content_hash
                      or item.record.knows_less_or_equal(chain[-1].record)):
            continue
        chain.append(item)
    return chain, anchor


def _observation(fetched: _Fetched) -> Observation:
    return Observation(record=fetched.record, raw=orjson.dumps(fetched.study.study),
                       raw_format=RAW_FORMAT, source=BACKFILL_SOURCE,
                       fetched_at=fetched.entry.posted_at,
                       registry_version=fetched.entry.version)


def _insert(session: Session, trial: Trial, number: int, observation: Observation) -> Version:
    """Store a historical version under ``number`` (a free number: versions were shifted)."""
    record = observation.record
    row = Version(
        trial_id=trial.id, version=number,
        fetched_at=observation.fetched_at, source=observation.source,
        raw_format=observation.raw_format, registry_version=observation.registry_version,
        last_update_posted=record.last_update_posted, content_hash=record.content_hash,
        canonical=record.to_canonical(), section_hashes=record.section_hashes,
        raw=observation.stored_raw(), historical=True,
    )
    session.add(row)
    return row


def _add_historical_events(session: Session, trial: Trial, old: TrialRecord,
                           new: TrialRecord, to_version: int, detected: datetime) -> int:
    """The events from version ``to_version - 1`` to ``to_version``: historical, no outbox."""
    stamp = iso_utc(detected.astimezone(UTC))
    stamped = [e.at(from_version=to_version - 1, to_version=to_version, detected_at=stamp)
               for e in sorted(diff_records(old, new), key=sort_key)]
    if stamped:
        repo.add_events(session, trial, (e.to_json() for e in stamped),
                        detected_at=detected, posted=new.last_update_posted, historical=True)
    return len(stamped)


def _one_line(nct_id: str, exc: Exception) -> str:
    message = " ".join(str(exc).split()) or type(exc).__name__
    return message if message.startswith(nct_id) else f"{nct_id}: {message}"
