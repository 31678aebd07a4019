"""Queries and writes over the models, one function per question; every one takes a Session.

Callers own the transaction (``with db.transaction() as session``), so a snapshot, its events
and their outbox rows are committed together or not at all.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import ColumnElement, any_, event, func, insert, inspect, literal, select, update
from sqlalchemy.orm import QueryableAttribute, Session, defer
from sqlalchemy.orm.attributes import flag_modified

from trialwatch.monitor.events import change_rank, iso_utc
from trialwatch.storage import deferred, event_ids
from trialwatch.storage.models import (
    Base,
    Cycle,
    Event,
    OutboxEntry,
    QueryMatch,
    SavedQuery,
    Trial,
    Version,
)

# Trials this session has loaded or created, by NCT ID (in ``session.info``): a cycle loads
# a page's trials in one query, then records each of them without one SELECT per trial.
_TRIALS_SEEN = "trialwatch.trials_by_nct_id"


def _seen(session: Session) -> dict[str, Trial]:
    seen: dict[str, Trial] = session.info.setdefault(_TRIALS_SEEN, {})
    return seen


@event.listens_for(Trial, "load")
def _remember_loaded_trial(target: Trial, context: Any) -> None:
    session = context.session
    if session is not None:
        _seen(session)[target.nct_id] = target


def trial(session: Session, nct_id: str) -> Trial | None:
    known = session.info.get(_TRIALS_SEEN, {}).get(nct_id)
    if known is not None and known in session and not inspect(known).deleted:
        return known
    return session.scalars(select(Trial).where(Trial.nct_id == nct_id)).one_or_none()


def among(session: Session, column: QueryableAttribute[Any], values: Iterable[Any]
          ) -> ColumnElement[bool]:
    """``column IN (values)`` with all the values in one bound parameter, however many: a
    JSON array read by ``json_each`` on SQLite, an array (``= ANY``) on PostgreSQL.

    An ``IN`` list binds every value separately; at the 3,600 IDs a changed-since listing
    names that took 5x longer than the lookup itself, and needed chunks of 500.
    """
    listed = list(values)
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import ARRAY

        return column == any_(literal(listed, ARRAY(column.type)))
    table = func.json_each(literal(orjson.dumps(listed).decode())).table_valued("value")
    return column.in_(select(table.c.value))


def trials_by_nct_id(session: Session, nct_ids: Iterable[str]) -> dict[str, Trial]:
    """The trials among ``nct_ids`` that exist, in one query (``trial`` then answers for
    them without a query)."""
    stmt = select(Trial).where(among(session, Trial.nct_id, nct_ids))
    return {t.nct_id: t for t in session.scalars(stmt)}


def get_or_create_trial(session: Session, nct_id: str, now: datetime) -> Trial:
    """The trial, created if new. Two processes creating the same trial at once (two
    daemons starting with the same ``[watch]`` list) both get it: the insert is
    ``ON CONFLICT DO NOTHING``, then the row is read back."""
    found = trial(session, nct_id)
    if found is None:
        session.execute(insert_or_ignore(session)(Trial).values(
            nct_id=nct_id, first_seen_at=now, latest_version=0, watched=False,
        ).on_conflict_do_nothing(index_elements=[Trial.nct_id]))
        found = session.scalars(select(Trial).where(Trial.nct_id == nct_id)).one()
        _seen(session)[nct_id] = found
    return found


def insert_or_ignore(session: Session) -> Any:
    """The dialect's ``insert``, which has ``on_conflict_do_nothing`` (imported for the one in
    use): rows two processes may both create at once (a trial, a digest watermark, a health
    subject) are inserted with it and the second insert leaves the first row alone."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert

        return postgresql_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert


def trials(session: Session, *, watched_only: bool = False) -> Sequence[Trial]:
    stmt = select(Trial).order_by(Trial.nct_id)
    if watched_only:
        stmt = stmt.where(Trial.watched.is_(True))
    return session.scalars(stmt).all()


def watched_ids(session: Session) -> list[str]:
    stmt = select(Trial.nct_id).where(Trial.watched.is_(True)).order_by(Trial.nct_id)
    return list(session.scalars(stmt))


def version(session: Session, trial_row: Trial, number: int) -> Version | None:
    stmt = select(Version).where(Version.trial_id == trial_row.id, Version.version == number)
    return session.scalars(stmt).one_or_none()


_LATEST_SEEN = "trialwatch.latest_versions"


def latest_version(session: Session, trial_row: Trial) -> Version | None:
    if not trial_row.latest_version:
        return None
    known = session.info.get(_LATEST_SEEN, {}).get((trial_row.id, trial_row.latest_version))
    if (known is not None and known in session and not inspect(known).deleted
            and known.version == trial_row.latest_version):  # not renumbered since
        return known
    return version(session, trial_row, trial_row.latest_version)


def prefetch_page(session: Session, trial_rows: Iterable[Trial]) -> None:
    """Load what recording a page of trials asks, a few queries for the whole page: the
    latest version of each trial (without the raw document), the content hashes of all its
    versions and the saved queries that matched it. ``latest_version``,
    ``has_version_with_hash`` and ``query_names_of`` then answer without a SELECT per
    trial, so nothing flushes the page's rows before its end (they go in bulk)."""
    _load_query_names(session)
    ids = [t.id for t in trial_rows if t.latest_version]
    seen: dict[tuple[int, int], Version] = session.info.setdefault(_LATEST_SEEN, {})
    hashes: dict[int, set[str]] = session.info.setdefault(_HASHES_SEEN, {})
    if not ids:
        return
    stmt = (select(Version)
            .join(Trial, (Trial.id == Version.trial_id)
                  & (Trial.latest_version == Version.version))
            .where(among(session, Trial.id, ids))
            .options(defer(Version.raw)))
    for row in session.scalars(stmt):
        seen[(row.trial_id, row.version)] = row
    found: dict[int, set[str]] = {trial_id: set() for trial_id in ids}
    for trial_id, content_hash in session.execute(
            select(Version.trial_id, Version.content_hash)
            .where(among(session, Version.trial_id, ids))):
        found[trial_id].add(content_hash)
    hashes.update(found)


_HASHES_SEEN = "trialwatch.version_hashes"
_QUERY_NAMES = "trialwatch.query_names"
_CACHES = (_TRIALS_SEEN, _LATEST_SEEN, _HASHES_SEEN, _QUERY_NAMES)


@event.listens_for(Session, "do_orm_execute")
def _forget_after_bulk_writes(state: Any) -> None:
    """An INSERT/UPDATE/DELETE statement may touch anything remembered: forget it all."""
    if (state.is_insert or state.is_update or state.is_delete) and not \
            state.execution_options.get(_QUEUED_ROWS):
        for key in _CACHES:
            state.session.info.pop(key, None)


@event.listens_for(Session, "before_flush")
def _forget_query_names(session: Session, _context: Any, _instances: Any) -> None:
    if _QUERY_NAMES in session.info and _touches_queries(session, dirty=True):
        del session.info[_QUERY_NAMES]


@event.listens_for(Session, "transient_to_pending")
def _forget_query_names_on_add(session: Session, instance: Any) -> None:
    if isinstance(instance, QueryMatch | SavedQuery):
        session.info.pop(_QUERY_NAMES, None)


def _touches_queries(session: Session, *, dirty: bool = False) -> bool:
    """Query matches or saved queries being deleted (or, at a flush, changed): new ones
    are caught as they are added (``_forget_query_names_on_add``)."""
    objects = (*session.deleted, *session.dirty) if dirty else session.deleted
    return any(isinstance(o, QueryMatch | SavedQuery) for o in objects)


def versions(session: Session, trial_row: Trial) -> Sequence[Version]:
    stmt = select(Version).where(Version.trial_id == trial_row.id).order_by(Version.version)
    return session.scalars(stmt).all()


def has_version_with_hash(session: Session, trial_row: Trial, content_hash: str) -> bool:
    known = session.info.get(_HASHES_SEEN, {}).get(trial_row.id)
    if known is not None:
        return content_hash in known
    stmt = select(Version.id).where(Version.trial_id == trial_row.id,
                                    Version.content_hash == content_hash).limit(1)
    return session.scalars(stmt).first() is not None


def add_version(session: Session, trial_row: Trial, **fields: Any) -> int:
    """Append the next version number for the trial and make it the latest; returns it.

    The row is not an ORM object: it is written with the other versions added since, in one
    INSERT (``trialwatch.storage.deferred``), just before the session's next statement or its
    commit.
    On SQLite the ORM inserts objects with server-generated keys one statement each (it
    cannot tell which RETURNING row belongs to which object in a multi-row INSERT): that
    was a third of storing a cold import. Nothing needs the row as an object; the trial's
    ``latest_version`` moves now, and its UPDATE goes with its next flush, with the same
    columns whatever changed (``_REWRITTEN_WITH_A_VERSION``).
    """
    number = trial_row.latest_version + 1
    deferred.add(session, _insert_versions, {"trial_id": trial_row.id, "version": number,
                                             **fields})
    trial_row.latest_version = number
    for key in _REWRITTEN_WITH_A_VERSION:
        flag_modified(trial_row, key)
    known = session.info.get(_HASHES_SEEN, {}).get(trial_row.id)
    if known is not None:
        known.add(fields["content_hash"])
    return number


# A new version rewrites these columns of its trial whether they changed or not: the ORM
# sends UPDATEs of one shape (the same columns) as one executemany, and UPDATEs of mixed
# shapes (the status moved on one trial, not on the next) one statement each.
_REWRITTEN_WITH_A_VERSION = ("latest_version", "title", "overall_status", "phases", "removed_at",
                             "registry_last_update", "last_error", "verified_data_at",
                             "last_change_version", "last_change_kind", "last_change_severity",
                             "last_change_date")


# An INSERT of rows queued here changes nothing the caches remember (add_version updated
# them already; events and alerts are not in them): it must not make them forget.
_QUEUED_ROWS = "trialwatch_queued_rows"


def _queued_insert(model: type[Base]) -> deferred.Writer:
    """The writer of ``model`` rows queued with ``deferred.add``: one INSERT for them all."""
    statement = insert(model).execution_options(**{_QUEUED_ROWS: True})

    def write(session: Session, rows: list[dict[str, Any]]) -> None:
        session.execute(statement, rows)

    return write


_insert_versions = _queued_insert(Version)
_insert_events = _queued_insert(Event)
_insert_alerts = _queued_insert(OutboxEntry)


def add_events(session: Session, trial_row: Trial, events: Iterable[dict[str, Any]],
               *, detected_at: datetime, posted: str | None, historical: bool = False) -> list[int]:
    """Store events; returns their ids, given now (``trialwatch.storage.event_ids``) so that alerts
    can name them. The rows are queued and written in bulk with the rest of the page.

    ``posted`` is the registry's posting date of the version the newest of them lead to
    (None if it has none): with it the trial's last change moves (``note_last_change``)."""
    listed = list(events)
    note_last_change(trial_row, listed, posted=posted, detected_at=detected_at)
    ids = event_ids.allocate(session, len(listed))
    for event_id, e in zip(ids, listed, strict=True):
        deferred.add(session, _insert_events, {
            "id": event_id, "trial_id": trial_row.id, "from_version": e["from_version"],
            "to_version": e["to_version"], "kind": e["kind"], "field": e["field"],
            "old": e["old"], "new": e["new"], "severity": e["severity"],
            "summary": e["summary"], "detected_at": detected_at, "historical": historical})
    return ids


def note_last_change(trial_row: Trial, events: Sequence[dict[str, Any]], *,
                     posted: str | None, detected_at: datetime) -> None:
    """The trial's last change (``trials.last_change_*``, what ``list`` shows) with
    ``events`` added: they move it when they lead to a newer version than it names, or rank
    above its kind at the same version; events of older versions (a backfill) leave it."""
    if not events:
        return
    newest = max(int(e["to_version"]) for e in events)
    best = min((e for e in events if e["to_version"] == newest),
               key=lambda e: change_rank(e["kind"], e["severity"]))
    day = posted[:10] if posted else iso_utc(detected_at)[:10]
    current = trial_row.last_change_version
    if current is not None and newest < current:
        return
    if current is None or newest > current or change_rank(best["kind"], best["severity"]) < \
            change_rank(trial_row.last_change_kind, trial_row.last_change_severity):
        trial_row.last_change_kind, trial_row.last_change_severity = best["kind"], best["severity"]
    if current is None or newest > current or posted or (trial_row.last_change_date or "") < day:
        trial_row.last_change_date = day
    trial_row.last_change_version = newest


def refresh_last_change(session: Session, trial_row: Trial) -> None:
    """Recompute the trial's last change from its stored events (after events were deleted
    or renumbered in ways ``note_last_change`` does not follow: a backfill undone)."""
    newest = session.scalar(select(func.max(Event.to_version))
                            .where(Event.trial_id == trial_row.id))
    trial_row.last_change_version = trial_row.last_change_kind = None
    trial_row.last_change_severity = trial_row.last_change_date = None
    if newest is None:
        return
    rows = session.execute(select(Event.to_version, Event.kind, Event.severity,
                                  Event.detected_at)
                           .where(Event.trial_id == trial_row.id, Event.to_version == newest))
    posted = session.scalar(select(Version.last_update_posted).where(
        Version.trial_id == trial_row.id, Version.version == newest))
    for row in rows:
        note_last_change(trial_row, [{"to_version": row.to_version, "kind": row.kind,
                                      "severity": row.severity}],
                         posted=posted, detected_at=row.detected_at)


def events(session: Session, trial_row: Trial, *, kinds: Sequence[str] | None = None,
           between: tuple[int, int] | None = None) -> Sequence[Event]:
    stmt = select(Event).where(Event.trial_id == trial_row.id)
    if kinds:
        stmt = stmt.where(Event.kind.in_(kinds))
    if between is not None:
        low, high = between
        stmt = stmt.where(Event.to_version > low, Event.to_version <= high)
    return session.scalars(stmt.order_by(Event.to_version, Event.id)).all()


def events_by_id(session: Session, ids: Sequence[int]) -> Sequence[Event]:
    return session.scalars(select(Event).where(Event.id.in_(ids)).order_by(Event.id)).all()


def enqueue_alert(session: Session, *, channel: str, trial_row: Trial, version_number: int,
                  event_ids: list[int], now: datetime) -> str:
    """Queue one alert in the outbox (written in bulk with the rest of the page); returns
    its id, which is also the webhook's ``webhook-id``."""
    alert_id = f"msg_{uuid.uuid4().hex}"
    deferred.add(session, _insert_alerts, {
        "id": alert_id, "channel": channel, "trial_id": trial_row.id,
        "version": version_number, "event_ids": event_ids, "status": "pending",
        "attempts": 0, "next_attempt_at": now, "created_at": now})
    return alert_id


def outbox_counts(session: Session, channels: Iterable[str] = ()) -> dict[str, dict[str, int]]:
    """Alerts pending, delivered and dead per channel: every channel that has rows, and each
    of ``channels`` (zeros when it has none)."""
    stmt = select(OutboxEntry.channel, OutboxEntry.status, func.count()).group_by(
        OutboxEntry.channel, OutboxEntry.status)
    counts: dict[str, dict[str, int]] = {
        channel: {"pending": 0, "delivered": 0, "dead": 0} for channel in channels}
    for channel, status, n in session.execute(stmt):
        counts.setdefault(channel, {"pending": 0, "delivered": 0, "dead": 0})[status] = n
    return counts


def saved_queries(session: Session) -> Sequence[SavedQuery]:
    return session.scalars(select(SavedQuery).order_by(SavedQuery.name)).all()


def saved_query(session: Session, name: str) -> SavedQuery | None:
    return session.scalars(select(SavedQuery).where(SavedQuery.name == name)).one_or_none()


def query_names_of(session: Session, trial_row: Trial) -> set[str]:
    """Names of the saved queries that matched the trial. The first call in a session asks
    for every trial the session holds at once (a fetched page), later calls are answered
    from that, until the session writes query matches."""
    names = session.info.get(_QUERY_NAMES)
    if names is None:
        names = _load_query_names(session)
    if names is not None and trial_row.id in names and not _touches_queries(session):
        return set(names[trial_row.id])
    one = (select(SavedQuery.name).join(QueryMatch, QueryMatch.query_id == SavedQuery.id)
           .where(QueryMatch.trial_id == trial_row.id))
    return set(session.scalars(one))


def _load_query_names(session: Session) -> dict[int, set[str]] | None:
    """Query names of every trial the session holds, in one query (None while the session
    is changing query matches: they would be stale)."""
    if _touches_queries(session):
        return None
    names: dict[int, set[str]] = {t.id: set() for t in _seen(session).values()
                                  if t.id is not None}
    stmt = (select(QueryMatch.trial_id, SavedQuery.name)
            .join(SavedQuery, QueryMatch.query_id == SavedQuery.id)
            .where(among(session, QueryMatch.trial_id, names)))
    for trial_id, name in session.execute(stmt):
        names[trial_id].add(name)
    session.info[_QUERY_NAMES] = names
    return names


def last_cycle(session: Session) -> Cycle | None:
    stmt = select(Cycle).where(Cycle.finished_at.is_not(None)).order_by(Cycle.id.desc())
    return session.scalars(stmt.limit(1)).first()


def last_successful_cycle(session: Session) -> Cycle | None:
    stmt = select(Cycle).where(Cycle.outcome == "ok").order_by(Cycle.id.desc())
    return session.scalars(stmt.limit(1)).first()


def set_watched(session: Session, nct_ids: Iterable[str], watched: bool) -> int:
    result = session.execute(update(Trial).where(Trial.nct_id.in_(list(nct_ids)))
                             .values(watched=watched))
    return int(getattr(result, "rowcount", 0) or 0)


def shift_versions(session: Session, trial_row: Trial, by: int) -> None:
    """Renumber every stored version of the trial upward by ``by``, with what refers to them.

    Moves ``versions.version``, ``events.from_version``/``to_version``, ``outbox.version``
    and ``trials.latest_version`` / ``last_change_version`` together (the caller's
    transaction makes it all or nothing); outbox ids, the alerts' stable ids, stay.
    Versions move in two statements, first to ``-version`` then to ``version + by``, so no
    row ever takes a number another still holds (the unique (trial_id, version) is checked
    row by row on SQLite and PostgreSQL alike). Flushes first and expires the session's
    objects afterwards, so versions already loaded show their new numbers on next access.
    """
    if by < 0:
        raise ValueError(f"versions only move upward, not by {by}")
    if by == 0:
        return
    session.flush()
    plain = {"synchronize_session": False}
    tid = trial_row.id
    session.execute(update(Version).where(Version.trial_id == tid)
                    .values(version=-Version.version), execution_options=plain)
    session.execute(update(Version).where(Version.trial_id == tid)
                    .values(version=by - Version.version), execution_options=plain)
    session.execute(update(Event).where(Event.trial_id == tid)
                    .values(from_version=Event.from_version + by,
                            to_version=Event.to_version + by), execution_options=plain)
    session.execute(update(OutboxEntry).where(OutboxEntry.trial_id == tid)
                    .values(version=OutboxEntry.version + by), execution_options=plain)
    session.execute(update(Trial).where(Trial.id == tid)
                    .values(latest_version=Trial.latest_version + by,
                            last_change_version=Trial.last_change_version + by),
                    execution_options=plain)
    session.expire_all()
