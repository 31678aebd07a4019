"""What ``trialwatch export`` reads: events, trials or versions as a stream of flat rows.

Each table is one Core ``SELECT`` read in one read-only transaction (a consistent
snapshot; on SQLite a plain ``BEGIN`` that never holds up the daemon's writes) and fetched
in batches of ``BATCH_ROWS`` (a server-side cursor on PostgreSQL), so memory does not grow
with the number of rows. Rows are dicts of plain Python values in ``COLUMNS`` order;
formatting them (CSV, JSON) is the caller's business.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, exists, select

from trialwatch.storage.engine import Database
from trialwatch.storage.models import Event, Trial, Version

BATCH_ROWS = 1000

COLUMNS: dict[str, tuple[str, ...]] = {
    "events": ("nct_id", "kind", "field", "old", "new", "severity", "from_version",
               "to_version", "detected_at", "summary", "historical"),
    "trials": ("nct_id", "title", "status", "latest_version", "watched", "removed",
               "first_seen_at", "removed_at", "last_update_posted"),
    "versions": ("nct_id", "version", "fetched_at", "last_update_posted", "source",
                 "content_hash", "registry_version", "historical"),
}
RECORD_COLUMN = "record"  # versions: the canonical record, with ``with_records``


@dataclass(frozen=True)
class ExportFilter:
    """``--since`` (UTC), ``--kind`` (events) and ``--trial``; empty means no filter.

    ``since`` selects events detected, versions fetched, and trials with a version
    fetched at or after that moment; ``kinds`` selects events of those kinds.
    """

    since: datetime | None = None
    kinds: Sequence[str] = ()
    nct_ids: Sequence[str] = ()


def _events(filters: ExportFilter) -> Select[Any]:
    columns: list[Any] = [Trial.nct_id, Event.kind, Event.field, Event.old, Event.new,
                          Event.severity, Event.from_version, Event.to_version,
                          Event.detected_at, Event.summary, Event.historical]
    statement = (select(*columns).join(Trial, Trial.id == Event.trial_id)
                 .order_by(Event.detected_at, Event.id))
    if filters.since is not None:
        statement = statement.where(Event.detected_at >= filters.since)
    if filters.kinds:
        statement = statement.where(Event.kind.in_(filters.kinds))
    return statement


def _trials(filters: ExportFilter) -> Select[Any]:
    columns: list[Any] = [Trial.nct_id, Trial.title, Trial.overall_status.label("status"),
                          Trial.latest_version, Trial.watched,
                          Trial.removed_at.is_not(None).label("removed"), Trial.first_seen_at,
                          Trial.removed_at,
                          Trial.registry_last_update.label("last_update_posted")]
    statement = select(*columns).order_by(Trial.nct_id)
    if filters.since is not None:
        statement = statement.where(exists().where(Version.trial_id == Trial.id,
                                                   Version.fetched_at >= filters.since))
    return statement


def _versions(filters: ExportFilter, with_records: bool) -> Select[Any]:
    columns: list[Any] = [Trial.nct_id, Version.version, Version.fetched_at,
                          Version.last_update_posted, Version.source, Version.content_hash,
                          Version.registry_version, Version.historical]
    if with_records:
        columns.append(Version.canonical.label(RECORD_COLUMN))
    statement = (select(*columns).join(Trial, Trial.id == Version.trial_id)
                 .order_by(Trial.nct_id, Version.version))
    if filters.since is not None:
        statement = statement.where(Version.fetched_at >= filters.since)
    return statement


def columns_of(table: str, *, with_records: bool = False) -> tuple[str, ...]:
    extra = (RECORD_COLUMN,) if with_records and table == "versions" else ()
    return COLUMNS[table] + extra


def export_rows(db: Database, table: str, filters: ExportFilter = ExportFilter(), *,
                with_records: bool = False) -> Iterator[dict[str, Any]]:
    """Every row of ``table`` (``events``, ``trials``, ``versions``) that ``filters`` keep,
    oldest event / first trial / first version first, fetched ``BATCH_ROWS`` at a time."""
    if table == "events":
        statement = _events(filters)
    elif table == "trials":
        statement = _trials(filters)
    elif table == "versions":
        statement = _versions(filters, with_records)
    else:
        raise ValueError(f"unknown export table {table!r} (use events, trials or versions)")
    if filters.nct_ids:
        statement = statement.where(Trial.nct_id.in_(filters.nct_ids))
    names = columns_of(table, with_records=with_records)
    with (db.engine.connect().execution_options(read_only=True) as connection,
          connection.begin()):
        result = connection.execution_options(yield_per=BATCH_ROWS).execute(statement)
        for row in result:
            yield dict(zip(names, row, strict=True))
