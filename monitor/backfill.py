"""Backfill: import every past registry version of a trial, diffed, never alerted.

The registry's history (``monitor.sources.ctgov_history``) lists versions R0..RN. Each one
imported becomes a stored version with ``registry_version`` = its registry number,
``source="backfill"``, ``historical=True`` and ``fetched_at`` = its posting date (midnight
UTC); the events between consecutive versions are stored ``historical`` and are never put
in the outbox. Within the imported chain a registry version whose canonical content equals
the one before it is skipped (it changed nothing trialwatch keeps).

Local version numbers are append-only (events and alerts reference them) and the newest one
is what ``check`` diffs the next fetch against, so where the history goes depends on what
the trial already has. Each run picks one of four cases:

* **fresh** - no stored version: R0..RN become versions 1..N+1, in registry order.
* **continue** - the newest stored version came from a backfill: carry on from the registry
  version after the last one stored. This is both *resume* (an interrupted run keeps what it
  stored: every version is committed on its own, so a trial with 80 versions costs 81
  requests and a resumed one fewer) and *idempotency* (a complete trial costs one request
  and stores nothing).
* **merge** - the trial was watched or ingested before any backfill: the past cannot be
  numbered before the versions already stored, so it is appended after them as one
  self-contained chain R0..Rk, where Rk is the registry version whose content equals the
  current latest version (matched by content hash, or failing that by posting date).
  Ending the chain on Rk is deliberate: it is the one content duplicate a merge writes, and
  it keeps the newest local version equal to the registry's current record, so the next
  ``check`` stays quiet. When nothing older differs from the current content no version is
  written; the current version just learns its registry number. Registry versions newer
  than the latest stored one are left to ``check``, which alerts on them. A merge is
  written in one transaction: all or nothing (an interrupted merge starts again).
* **caught up** - ``check`` stored a version after an earlier backfill: the versions in
  between are already summarised by the events ``check`` stored; nothing is imported.

When the trial has versions from other sources, only registry versions posted on or before
the newest of those are imported (later ones are ``check``'s to alert on).

Failures: a history answer that fails its shape check, or a document the parser rejects,
undoes everything this run stored for the trial (nothing stored for it); an unreachable
registry (or Ctrl-C) keeps what was stored, and the next run resumes from there.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Literal, TypeVar

import orjson
import structlog
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from monitor.ingest import RAW_COMPRESSION_LEVEL, Observation, record_observation
from monitor.record import ParseError, TrialRecord
from monitor.sources.ctgov import BadRegistryResponse, RegistryError
from monitor.sources.ctgov_history import HistoricalStudy, HistoryClient, HistoryEntry
from monitor.sources.ctgov_json import parse_study
from storage import repository as repo
from storage.engine import Database
from storage.models import Event, Trial, Version

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
                               "events": self.events}
        if self.error is not None:
            row["error"] = self.error
        return row


class _Conflict(Exception):
    """Another writer changed the trial during a merge: nothing is written."""


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
             imported=result.imported, events=result.events, requests=result.requests,
             error=result.error)
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
        self.latest_hash: str | None = None
        self.latest_record: TrialRecord | None = None
        self.start_version = 0
        self.trial_existed = False
        self.summary: tuple[str | None, str | None] = (None, None)

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
                self.summary = (trial.title, trial.overall_status)
            mode, pending = _plan(entries, versions)
            latest = versions[-1] if versions else None
            if latest is not None:
                self.latest_hash = latest.content_hash
                self.latest_record = TrialRecord.from_canonical(latest.canonical)
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
        if self.result.mode != "merge" or not self.fetched:
            return
        chain = self._merge_chain()
        with self.db.transaction() as session:
            trial = repo.trial(session, self.nct_id)
            latest = repo.latest_version(session, trial) if trial is not None else None
            if trial is None or latest is None or latest.content_hash != self.latest_hash:
                raise _Conflict("the trial changed while its history was being fetched; "
                                "nothing stored, run backfill again")
            last = chain[-1]
            if len(chain) == 1 and last.record.content_hash == latest.content_hash:
                latest.registry_version = last.entry.version
                return
            _graft(session, trial, _observation(chain[0]))
            self.result.imported += 1
            for fetched in chain[1:]:
                outcome = record_observation(session, _observation(fetched), historical=True)
                if outcome.changed:
                    self.result.imported += 1
                    self.result.events += len(outcome.events)
            _refresh_summary(trial, last.record)

    def _merge_chain(self) -> list[_Fetched]:
        """R0..Rk: up to the last version equal to the current one (else the last fetched)."""
        current, latest = self.latest_hash, self.latest_record
        anchor = len(self.fetched) - 1
        for index in range(len(self.fetched) - 1, -1, -1):
            record = self.fetched[index].record
            if record.content_hash == current or (
                    latest is not None and latest.knows_less_or_equal(record)):
                anchor = index
                break
        chain: list[_Fetched] = []
        for fetched in self.fetched[: anchor + 1]:
            if chain and chain[-1].record.content_hash == fetched.record.content_hash:
                continue
            chain.append(fetched)
        return chain

    # ------------------------------------------------------------------ undo

    def undo(self) -> None:
        """Remove what this run stored for the trial (after a failed shape check)."""
        if self.result.mode != "merge" and self.result.imported:
            with self.db.transaction() as session:
                removed = self._remove_added(session)
            if not removed:
                return
            log.warning("backfill.undone", nct_id=self.nct_id, versions=self.result.imported)
        self.result.imported = self.result.events = 0

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
            trial.title, trial.overall_status = self.summary
        return True


# ---------------------------------------------------------------------- pure helpers


def _plan(entries: Sequence[HistoryEntry],
          versions: Sequence[Version]) -> tuple[Mode, list[HistoryEntry]]:
    """Which case applies, and which registry versions to fetch (see the module docstring)."""
    own = [v for v in versions if v.source != BACKFILL_SOURCE]
    limit = _posted_on_or_before(entries, own[-1].last_update_posted) if own else len(entries)
    candidates = list(entries[:limit])
    if not versions:
        return "fresh", candidates
    chain = [v.registry_version for v in versions if v.registry_version is not None]
    if versions[-1].registry_version is not None:
        last = max(chain)
        return "continue", [e for e in candidates if e.version > last]
    if chain:
        return "caught up", []
    return "merge", candidates


def _posted_on_or_before(entries: Sequence[HistoryEntry], posted: str | None) -> int:
    """How many registry versions were posted on or before ``posted`` (all when unknown)."""
    try:
        day = date.fromisoformat(posted[:10]) if posted else None
    except ValueError:
        day = None
    if day is None:
        return len(entries)
    count = sum(1 for e in entries if e.date <= day)
    return count or len(entries)


def _observation(fetched: _Fetched) -> Observation:
    return Observation(record=fetched.record, raw=orjson.dumps(fetched.study.study),
                       raw_format=RAW_FORMAT, source=BACKFILL_SOURCE,
                       fetched_at=fetched.entry.posted_at,
                       registry_version=fetched.entry.version)


def _graft(session: Session, trial: Trial, observation: Observation) -> Version:
    """Append a version that follows no stored one (the first of a merged chain): no diff."""
    record = observation.record
    return repo.add_version(
        session, trial,
        fetched_at=observation.fetched_at, source=observation.source,
        raw_format=observation.raw_format, registry_version=observation.registry_version,
        last_update_posted=record.last_update_posted, content_hash=record.content_hash,
        canonical=record.to_canonical(), section_hashes=record.section_hashes,
        raw=zlib.compress(observation.raw, RAW_COMPRESSION_LEVEL), historical=True,
    )


def _refresh_summary(trial: Trial, record: TrialRecord) -> None:
    if record.title is not None:
        trial.title = record.title
    if record.overall_status is not None:
        trial.overall_status = record.overall_status


def _one_line(nct_id: str, exc: Exception) -> str:
    message = " ".join(str(exc).split()) or type(exc).__name__
    return message if message.startswith(nct_id) else f"{nct_id}: {message}"
