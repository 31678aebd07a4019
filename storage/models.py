"""SQLAlchemy 2.x models: trials, their versions, change events, alert outbox, queries, cycles.

``CycleRound`` and the trial lease columns let several workers share one PostgreSQL database
(see ``trialwatch.monitor.cycle.workers``): a round is one pass over the watched trials for one
registry data
load; each trial records the round it was last checked in.

Documents (canonical records, event values) are JSON on SQLite and JSONB on PostgreSQL.
The raw registry document is kept compressed (``trialwatch.storage.raw_codec``) beside its canonical
record, so a newer parser can re-derive records later.

No ``from __future__ import annotations`` here: SQLAlchemy would then evaluate every
``Mapped[...]`` annotation from its string at import, a fifth of this module's import time,
which every command pays (bench/oneshot.py).
"""

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeEngine

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use datetime.now(UTC)")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class JSONDocumentType(TypeDecorator[Any]):
    """JSON on SQLite, JSONB on PostgreSQL.

    The PostgreSQL dialect is imported only when a PostgreSQL connection needs it, so
    commands on the default SQLite database do not pay for importing it.
    """

    impl = JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import JSONB

            return dialect.type_descriptor(JSONB())
        return dialect.type_descriptor(JSON())


JSONDocument = JSONDocumentType()


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSONDocument,
    }


class Trial(Base):
    """A trial trialwatch knows: watched, matched by a query, or ingested from a file."""

    __tablename__ = "trials"

    id: Mapped[int] = mapped_column(primary_key=True)
    nct_id: Mapped[str] = mapped_column(String(32), unique=True)
    title: Mapped[str | None] = mapped_column(Text)
    overall_status: Mapped[str | None] = mapped_column(String(64))
    # The latest version's phase enums, comma-joined (``PHASE1,PHASE2``), for ``list``.
    phases: Mapped[str | None] = mapped_column(String(128))
    # The last change, for ``list``: the newest version that brought events, its most severe
    # event (kind, severity) and its day (the version's posting date, else the day it was
    # detected). Kept by ``repository.add_events``; ``refresh_last_change`` recomputes it.
    last_change_version: Mapped[int | None]
    last_change_kind: Mapped[str | None] = mapped_column(String(32))
    last_change_severity: Mapped[str | None] = mapped_column(String(16))
    last_change_date: Mapped[str | None] = mapped_column(String(10))
    latest_version: Mapped[int] = mapped_column(Integer, default=0)
    watched: Mapped[bool] = mapped_column(Boolean, default=False)
    first_seen_at: Mapped[datetime]
    removed_at: Mapped[datetime | None]
    # Last-update date the registry listing last reported (drives "fetch only what moved").
    registry_last_update: Mapped[str | None] = mapped_column(String(32))
    last_error: Mapped[str | None] = mapped_column(Text)
    # Multi-worker lease (PostgreSQL): who holds this trial for the current cycle, until when.
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None]
    # The round (``cycle_rounds.id``) this trial was last checked in; rounds only grow, so
    # "not checked in round R yet" is ``checked_round IS NULL OR checked_round < R``.
    checked_round: Mapped[int | None]
    # The registry data load (``dataTimestamp`` of ``/version``, normalized) of the trial's
    # last full fetch: rolling re-verification re-fetches the oldest (None: never, oldest).
    verified_data_at: Mapped[str | None] = mapped_column(String(32))

    __table_args__ = (
        Index("ix_trials_watched", "watched"),
        Index("ix_trials_checked_round", "checked_round"),
    )


class Version(Base):
    """One stored version (snapshot) of a trial; written only when the content hash moved."""

    __tablename__ = "versions"

    id: Mapped[int] = mapped_column(primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"))
    version: Mapped[int]
    fetched_at: Mapped[datetime]
    source: Mapped[str] = mapped_column(String(255))
    raw_format: Mapped[str] = mapped_column(String(32))
    registry_version: Mapped[int | None]
    last_update_posted: Mapped[str | None] = mapped_column(String(32))
    content_hash: Mapped[str] = mapped_column(String(64))
    canonical: Mapped[dict[str, Any]]
    section_hashes: Mapped[dict[str, Any]]
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    historical: Mapped[bool] = mapped_column(Boolean, default=False)

    __table_args__ = (
        UniqueConstraint("trial_id", "version"),
        Index("ix_versions_trial_hash", "trial_id", "content_hash"),
    )


class Event(Base):
    """One classified change between two versions of a trial (DESIGN.md event JSON)."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"))
    from_version: Mapped[int | None]
    to_version: Mapped[int | None]
    kind: Mapped[str] = mapped_column(String(32))
    field: Mapped[str] = mapped_column(String(128))
    old: Mapped[Any] = mapped_column(JSONDocument, nullable=True)
    new: Mapped[Any] = mapped_column(JSONDocument, nullable=True)
    severity: Mapped[str] = mapped_column(String(16))
    summary: Mapped[str] = mapped_column(Text)
    detected_at: Mapped[datetime]
    historical: Mapped[bool] = mapped_column(Boolean, default=False)

    __table_args__ = (
        Index("ix_events_trial_version", "trial_id", "to_version"),
        Index("ix_events_detected_at", "detected_at"),
        Index("ix_events_trial_detected_at", "trial_id", "detected_at"),
    )


class OutboxEntry(Base):
    """One alert waiting for (or done with) delivery to one channel.

    ``id`` is the alert's stable id (the ``webhook-id``). ``kind`` says what it carries
    (``trialwatch.notifiers.base.ALERT_KINDS``): ``trial`` — a trial version's events, the
    ``event_ids`` the channel's subscription selected when the row was written, in the same
    transaction; ``digest`` — the events after a subscription's digest watermark, frozen in
    ``payload`` with ``event_ids`` and ``subscription_key`` (no ``trial_id``); ``system`` — news
    about the monitor, in ``payload``. ``done_targets`` lists the destinations of a
    multi-target channel (Apprise URLs) that already have this alert, so a retry skips them.
    """

    __tablename__ = "outbox"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    channel: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16), default="trial")
    trial_id: Mapped[int | None] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"))
    version: Mapped[int]
    event_ids: Mapped[Any] = mapped_column(JSONDocument)
    payload: Mapped[Any] = mapped_column(JSONDocument, nullable=True)
    done_targets: Mapped[Any] = mapped_column(JSONDocument, nullable=True)
    subscription_key: Mapped[str | None] = mapped_column(String(160))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]
    lease_until: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_outbox_trial_version", "trial_id", "version"),
        Index("ix_outbox_due", "status", "next_attempt_at"),
    )


class SavedQuery(Base):
    """A saved search (``watch --query/--condition``): its matches become watched trials."""

    __tablename__ = "queries"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    term: Mapped[str | None] = mapped_column(Text)
    condition: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    last_success_at: Mapped[datetime | None]


class QueryMatch(Base):
    """Which trials a saved query has matched (for per-query subscriptions and feeds)."""

    __tablename__ = "query_matches"

    query_id: Mapped[int] = mapped_column(
        ForeignKey("queries.id", ondelete="CASCADE"), primary_key=True)
    trial_id: Mapped[int] = mapped_column(
        ForeignKey("trials.id", ondelete="CASCADE"), primary_key=True)
    matched_at: Mapped[datetime]


class Cycle(Base):
    """One fetch cycle's bookkeeping, shown by ``status``."""

    __tablename__ = "cycles"

    id: Mapped[int] = mapped_column(primary_key=True)
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    outcome: Mapped[str] = mapped_column(String(32), default="running")
    watched: Mapped[int] = mapped_column(Integer, default=0)
    fetched: Mapped[int] = mapped_column(Integer, default=0)
    changed: Mapped[int] = mapped_column(Integer, default=0)
    events: Mapped[int] = mapped_column(Integer, default=0)
    requests: Mapped[int] = mapped_column(Integer, default=0)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    data_timestamp: Mapped[str | None] = mapped_column(String(64))
    worker: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    # The shared round this worker's cycle took part in (PostgreSQL workers; None on SQLite).
    round_id: Mapped[int | None]


class CycleRound(Base):
    """One pass over the watched trials shared by every worker: "this cycle" on PostgreSQL.

    A round belongs to one registry data load (``data_timestamp`` from ``/version``): every
    worker that sees the same load joins the same round, leases batches of trials not yet
    checked in it, and checks each exactly once. A round that ended with failures is followed
    by a new round for the same load, so failed trials are retried next cycle. The
    *preparation* (saved queries, choice of listing strategy, the changed-since listing) is
    done once per round by whichever worker holds ``prep_owner``/``prep_until``.
    """

    __tablename__ = "cycle_rounds"

    id: Mapped[int] = mapped_column(primary_key=True)
    data_timestamp: Mapped[str | None] = mapped_column(String(64))
    opened_at: Mapped[datetime]
    opened_by: Mapped[str | None] = mapped_column(String(64))
    closed_at: Mapped[datetime | None]
    prep_owner: Mapped[str | None] = mapped_column(String(64))
    prep_until: Mapped[datetime | None]
    prepared_at: Mapped[datetime | None]
    strategy: Mapped[str | None] = mapped_column(String(32))
    # changed-since strategy: {nct_id: last update posted} of watched trials that moved.
    stamps: Mapped[Any] = mapped_column(JSONDocument, nullable=True)
    workers: Mapped[int] = mapped_column(Integer, default=0)
    checked: Mapped[int] = mapped_column(Integer, default=0)
    fetched: Mapped[int] = mapped_column(Integer, default=0)
    changed: Mapped[int] = mapped_column(Integer, default=0)
    events: Mapped[int] = mapped_column(Integer, default=0)
    requests: Mapped[int] = mapped_column(Integer, default=0)
    failures: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (Index("ix_cycle_rounds_data_timestamp", "data_timestamp"),)


class DigestWatermark(Base):
    """Where a digest subscription (``Subscription.key``) stands: events with an id above
    ``last_event_id`` are not yet in a delivered digest. ``pending_alert`` is the outbox row
    of a digest written but not yet delivered; the watermark moves to ``pending_until`` only
    when that row is delivered, so a crash or a failed delivery loses and repeats nothing."""

    __tablename__ = "digest_watermarks"

    subscription_key: Mapped[str] = mapped_column(String(160), primary_key=True)
    channel: Mapped[str] = mapped_column(String(128))
    last_event_id: Mapped[int] = mapped_column(Integer, default=0)
    last_sent_at: Mapped[datetime]
    pending_alert: Mapped[str | None] = mapped_column(String(64))
    pending_until: Mapped[int | None]


class MonitorHealth(Base):
    """The monitor's own health, one row per subject (``checks``, ``channel:<name>``):
    consecutive ``failures``, ``state`` ``ok``/``failing`` (a ``system`` alert is written when
    it flips), since when and why."""

    __tablename__ = "monitor_health"

    subject: Mapped[str] = mapped_column(String(160), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), default="ok")
    failures: Mapped[int] = mapped_column(Integer, default=0)
    since: Mapped[datetime | None]
    reason: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime]
