"""Recording a version: snapshot if the content moved, diff, store events, enqueue alerts.

This is the one path every source goes through (``ingest`` files, ``check`` cycles,
``backfill``). It runs inside the caller's transaction, so the version, its events and
their outbox rows are committed together or not at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy.orm import Session

from trialwatch.monitor.diff import diff_records
from trialwatch.monitor.events import ChangeEvent, iso_utc, sort_key
from trialwatch.monitor.record import SECTIONS, TrialRecord
from trialwatch.storage import repository as repo
from trialwatch.storage import watermarks
from trialwatch.storage.models import Trial, Version
from trialwatch.storage.raw_codec import compress_raw


class Subscription(Protocol):
    """Which events of which trials go to a channel (see ``trialwatch.monitor.config.settings``)."""

    channel: str

    def matches(self, event: Mapping[str, Any], *, nct_id: str, query_names: set[str]) -> bool:
        ...


def digest_key(subscription: Subscription) -> str | None:
    """The watermark key of a digest subscription (``digest`` set), else None: such a
    subscription gets no per-version alerts (``trialwatch.monitor.digests`` sends its events
    once per period). Subscriptions without a ``digest`` attribute are per-version ones."""
    if getattr(subscription, "digest", None) is None:
        return None
    return str(getattr(subscription, "key"))  # noqa: B009 - not part of the protocol


@dataclass(frozen=True)
class Observation:
    """One document as a source delivered it, before storage decides whether it is new."""

    record: TrialRecord
    raw: bytes
    raw_format: str  # "ctgov-json" | "text-page"
    source: str  # "file:/path", "ctgov", "backfill"
    fetched_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    registry_version: int | None = None
    # ``raw`` already compressed (``trialwatch.storage.raw_codec``), when the fetch pipeline did it
    # in
    # its worker process; ``raw`` itself may then be empty.
    compressed_raw: bytes | None = None

    def stored_raw(self) -> bytes:
        """``raw`` as ``versions.raw`` keeps it (compressed)."""
        return self.compressed_raw if self.compressed_raw is not None else compress_raw(self.raw)


@dataclass(frozen=True)
class RecordOutcome:
    nct_id: str
    version: int | None
    changed: bool
    events: list[ChangeEvent]
    alerts: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"nct_id": self.nct_id, "version": self.version, "changed": self.changed}


def record_observation(session: Session, observation: Observation, *,
                       subscriptions: Sequence[Subscription] = (),
                       extra_events: Sequence[ChangeEvent] = (),
                       historical: bool = False) -> RecordOutcome:
    """Store ``observation`` as a new version when it says something new; diff and alert."""
    record = observation.record
    if record.unread:  # stored all the same: the raw document keeps what was not read
        import structlog  # here: read-only commands import this module, and load no structlog

        structlog.get_logger(__name__).warning(
            "record.not_understood", nct_id=record.nct_id, fields=", ".join(record.unread),
            source=observation.source)
    trial_row = repo.get_or_create_trial(session, record.nct_id, observation.fetched_at)
    latest = repo.latest_version(session, trial_row)
    events: list[ChangeEvent] = []
    if latest is not None:
        if latest.content_hash == record.content_hash:  # the same content: nothing to do
            return RecordOutcome(record.nct_id, latest.version, False, [])
        if not historical and repo.has_version_with_hash(session, trial_row, record.content_hash):
            # a replay of an older version (an ingest run again): going "back" to it would
            # be a false alert, and going forward again another one
            return RecordOutcome(record.nct_id, latest.version, False, [])
        if not historical and _posted_before(record.last_update_posted, latest.last_update_posted):
            # older than the stored version (a slower process fetched it before another
            # stored a newer one, or an older file): a "change back" would be a false alert
            return RecordOutcome(record.nct_id, latest.version, False, [])
        previous = _known_state(session, trial_row, latest)
        if record.knows_less_or_equal(previous):
            return RecordOutcome(record.nct_id, latest.version, False, [])
        events = diff_records(previous, record)
    stored_version = repo.add_version(
        session, trial_row,
        fetched_at=observation.fetched_at, source=observation.source,
        raw_format=observation.raw_format, registry_version=observation.registry_version,
        last_update_posted=record.last_update_posted, content_hash=record.content_hash,
        canonical=record.to_canonical(), section_hashes=record.section_hashes,
        raw=observation.stored_raw(), historical=historical,
    )
    _refresh_trial_summary(trial_row, record)
    detected = observation.fetched_at.astimezone(UTC)
    from_version = latest.version if latest is not None else None
    stamped = [e.at(from_version=from_version if e.kind != "new_trial" else None,
                    to_version=stored_version, detected_at=iso_utc(detected))
               for e in sorted([*extra_events, *events], key=sort_key)]
    alerts = 0
    if stamped:
        ids = repo.add_events(session, trial_row, (e.to_json() for e in stamped),
                              detected_at=detected, posted=record.last_update_posted,
                              historical=historical)
        if not historical:
            alerts = enqueue_alerts(session, trial_row, stored_version,
                                    list(zip(stamped, ids, strict=True)), subscriptions,
                                    now=observation.fetched_at)
    return RecordOutcome(record.nct_id, stored_version, True, stamped, alerts)


def enqueue_alerts(session: Session, trial_row: Trial, version_number: int,
                   events: Sequence[tuple[ChangeEvent, int]],
                   subscriptions: Sequence[Subscription], *, now: datetime) -> int:
    """One outbox row per channel whose subscriptions select at least one of the events
    (given with their ids); returns how many. Written in the same transaction.

    Digest subscriptions get no row: their events wait for the digest. The first event one
    of them selects creates its watermark just before that event, if no digest pass has
    yet (so it is in the first digest, not taken for history)."""
    if not subscriptions:
        return 0
    query_names = repo.query_names_of(session, trial_row)
    chosen: dict[str, set[int]] = {}
    for subscription in subscriptions:
        key = digest_key(subscription)
        if key is not None:
            selected = [event_id for event, event_id in events
                        if subscription.matches(event.to_json(), nct_id=trial_row.nct_id,
                                                query_names=query_names)]
            if selected:
                watermarks.ensure(session, key=key, channel=subscription.channel,
                                  after=min(selected) - 1, now=now)
            continue
        for event, event_id in events:
            if subscription.matches(event.to_json(), nct_id=trial_row.nct_id,
                                    query_names=query_names):
                chosen.setdefault(subscription.channel, set()).add(event_id)
    for channel, ids in sorted(chosen.items()):
        repo.enqueue_alert(session, channel=channel, trial_row=trial_row,
                           version_number=version_number, event_ids=sorted(ids), now=now)
    return len(chosen)


def record_removal(session: Session, trial_row: Trial, *, now: datetime,
                   subscriptions: Sequence[Subscription] = ()) -> ChangeEvent | None:
    """The registry no longer serves a record we had seen: exactly one ``removed`` event."""
    if trial_row.removed_at is not None or not trial_row.latest_version:
        return None
    trial_row.removed_at = now
    event = ChangeEvent(
        nct_id=trial_row.nct_id, kind="removed", field="record", old=trial_row.overall_status,
        new=None, severity="high", summary="Record no longer served by the registry",
        from_version=trial_row.latest_version, to_version=trial_row.latest_version,
        detected_at=iso_utc(now))
    return _store_record_event(session, trial_row, event, now, subscriptions)


def record_restoration(session: Session, trial_row: Trial, *, now: datetime,
                       subscriptions: Sequence[Subscription] = ()) -> ChangeEvent | None:
    """The registry serves again a record it had stopped serving: one ``removed`` event
    saying so (its status as ``new``), and the trial is no longer marked removed."""
    if trial_row.removed_at is None or not trial_row.latest_version:
        return None
    trial_row.removed_at = None
    event = ChangeEvent(
        nct_id=trial_row.nct_id, kind="removed", field="record", old=None,
        new=trial_row.overall_status, severity="high",
        summary="Record served by the registry again",
        from_version=trial_row.latest_version, to_version=trial_row.latest_version,
        detected_at=iso_utc(now))
    return _store_record_event(session, trial_row, event, now, subscriptions)


def _store_record_event(session: Session, trial_row: Trial, event: ChangeEvent,
                        now: datetime, subscriptions: Sequence[Subscription]) -> ChangeEvent:
    """Store an event about the record as a whole (at its latest version) and queue its alerts."""
    latest = repo.latest_version(session, trial_row)
    (event_id,) = repo.add_events(session, trial_row, [event.to_json()], detected_at=now,
                                  posted=latest.last_update_posted if latest else None)
    enqueue_alerts(session, trial_row, trial_row.latest_version, [(event, event_id)],
                   subscriptions, now=now)
    return event


def _known_state(session: Session, trial_row: Trial, latest: Version) -> TrialRecord:
    """The latest version, plus what earlier versions knew of fields it does not carry.

    A partial version (a text page) stored between two full ones must not hide a change of
    a field only the full ones carry (the text page has no primary completion date, ...).
    """
    sections = {name: dict(body) for name, body in latest.canonical.items() if name != "nct_id"}
    if _knows_every_field(sections):  # a full version: its stored hashes describe it
        return TrialRecord.from_canonical(
            {"nct_id": trial_row.nct_id, **sections}, content_hash=latest.content_hash,
            section_hashes=latest.section_hashes)
    number = latest.version - 1
    while number >= 1 and not _knows_every_field(sections):
        older = repo.version(session, trial_row, number)
        for name, body in (older.canonical.items() if older is not None else ()):
            if name in SECTIONS:
                section = sections.setdefault(name, {})
                for key, value in body.items():
                    section.setdefault(key, value)
        number -= 1
    return TrialRecord.from_canonical({"nct_id": trial_row.nct_id, **sections})


def _knows_every_field(sections: Mapping[str, Mapping[str, Any]]) -> bool:
    return all(name in sections and sections[name].keys() >= keys
               for name, keys in _SECTION_KEYS)


_SECTION_KEYS = [(name, frozenset(keys)) for name, keys in SECTIONS.items()]


def _refresh_trial_summary(trial_row: Trial, record: TrialRecord) -> None:
    if record.title is not None:
        trial_row.title = record.title
    if record.overall_status is not None:
        trial_row.overall_status = record.overall_status
    trial_row.phases = ",".join(record.phases) or None
    trial_row.removed_at = None


def _posted_before(posted: str | None, latest: str | None) -> bool:
    """Whether a last-update date (ISO, as the registry posts it) is older than another."""
    return bool(posted and latest and posted < latest)
