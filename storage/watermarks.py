"""Digest watermarks: where each digest subscription stands in the stream of stored events.

A watermark (``DigestWatermark``, one per ``Subscription.key``) says which events are already
in a delivered digest (ids up to ``last_event_id``) and which digest is on its way
(``pending_alert``, covering events up to ``pending_until``). It is created the first time a
subscription is seen, so a new digest subscription starts from "now", not from history; it
moves forward only when its digest is delivered (``advance``, called by the outbox in the
transaction that marks the row delivered), and never backwards.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from trialwatch.monitor.events import parse_iso_utc
from trialwatch.storage.models import DigestWatermark, Event, OutboxEntry
from trialwatch.storage.repository import insert_or_ignore

_KNOWN = "trialwatch.watermarks_known"  # in session.info: keys known to have a watermark


def max_event_id(session: Session) -> int:
    return int(session.scalar(select(func.max(Event.id))) or 0)


def ensure(session: Session, *, key: str, channel: str, after: int, now: datetime) -> None:
    """Create the watermark of ``key`` at ``after`` unless it exists (``ON CONFLICT DO
    NOTHING``: two processes seeing a new subscription at once keep the first).

    Runs on the session's connection, not through the ORM, so that a cycle recording a page
    does not write its queued rows early (``trialwatch.storage.deferred``)."""
    known: set[str] = session.info.setdefault(_KNOWN, set())
    if key in known:
        return
    session.connection().execute(insert_or_ignore(session)(DigestWatermark).values(
        subscription_key=key, channel=channel, last_event_id=after, last_sent_at=now,
        pending_alert=None, pending_until=None,
    ).on_conflict_do_nothing(index_elements=[DigestWatermark.subscription_key]))
    known.add(key)


def locked(session: Session, key: str) -> DigestWatermark | None:
    """The watermark of ``key``, locked for this transaction (PostgreSQL: ``FOR UPDATE``)."""
    return session.scalars(select(DigestWatermark)
                           .where(DigestWatermark.subscription_key == key)
                           .with_for_update()
                           .execution_options(populate_existing=True)).one_or_none()


def advance(session: Session, row: OutboxEntry, now: datetime) -> None:
    """``row`` (a digest) was delivered: its subscription's watermark moves to the last event
    it carried, its period restarts at the moment the digest was built, and it is no longer
    pending. Only forwards: a digest delivered late (an old dead one retried by hand after a
    newer one went out) never moves the watermark back."""
    if row.kind != "digest" or not row.subscription_key:
        return
    mark = locked(session, row.subscription_key)
    if mark is None:
        return
    payload: dict[str, Any] = row.payload or {}
    until = int(payload.get("until_event_id") or 0)
    built = parse_iso_utc(payload.get("until")) or now
    mark.last_event_id = max(mark.last_event_id, until)
    mark.last_sent_at = max(mark.last_sent_at, built)
    if mark.pending_alert == row.id:
        mark.pending_alert = None
        mark.pending_until = None
