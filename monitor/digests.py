"""Digests: one message per period listing every matching event since the last digest.

A subscription with ``digest`` set gets no per-version alert (``versioning.enqueue_alerts``
skips it). Instead ``send_due_digests`` — run by the daemon before each delivery pass and
by ``trialwatch notify digest`` — writes, for each digest subscription that is due, one
outbox row of kind ``digest`` holding the frozen digest (``payload``): the stored events
after the subscription's watermark that it selects, grouped by trial, each trial's events
most severe first, the trials ordered by their most severe event. The outbox then delivers
it like any alert (retries, dead letter, same id on every attempt).

Watermark rules (``trialwatch.storage.watermarks``):

* first sight of a subscription: the watermark starts at the newest stored event and the
  period at ``now`` (a new digest subscription does not send history);
* a due digest is built, queued and marked pending in ONE transaction; its id is derived
  from the subscription key, the event range and the period start, so it never changes;
* the watermark advances only when the outbox marks the digest delivered (same transaction);
  while a digest is pending no new one is built: later events wait for the next digest;
* nothing selected in a period: no message, the period restarts (and the watermark skips
  the events it looked at, none of which was selected);
* a digest that went dead: the watermark did not move, so the next period's digest carries
  those events again, with the newer ones; ``outbox retry`` can still send the dead one
  (the watermark then only moves forward).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from trialwatch.monitor.config.subscriptions import Subscription, digest_due
from trialwatch.monitor.events import change_rank, event_json, iso_utc
from trialwatch.notifiers.base import DigestTrial, dashboard_link
from trialwatch.storage import event_ids, watermarks
from trialwatch.storage import repository as repo
from trialwatch.storage.engine import Database
from trialwatch.storage.models import DigestWatermark, Event, OutboxEntry, Trial

log = structlog.get_logger(__name__)

@dataclass(frozen=True)
class DigestOutcome:
    """One digest subscription's result: ``queued`` (a digest row written, ``alert_id``),
    ``empty`` (due, nothing selected: no message), ``not_due``, ``pending`` (its previous
    digest is not delivered yet) or ``started`` (seen for the first time)."""

    subscription_key: str
    channel: str
    state: str
    alert_id: str | None = None
    trials: int = 0
    events: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"subscription": self.subscription_key, "channel": self.channel,
                "state": self.state, "id": self.alert_id, "trials": self.trials,
                "events": self.events}


@dataclass
class DigestReport:
    """What one ``send_due_digests`` pass did, per digest subscription."""

    outcomes: list[DigestOutcome] = field(default_factory=list)


def digest_subscriptions(subscriptions: Sequence[Any],
                         channel: str | None = None) -> list[Subscription]:
    """The subscriptions with ``digest`` set (of ``channel`` only, when given)."""
    return [s for s in subscriptions if isinstance(s, Subscription) and s.digest is not None
            and (channel is None or s.channel == channel)]


def send_due_digests(db: Database, subscriptions: Sequence[Any], tz: ZoneInfo, *,
                     now: datetime, force: bool = False, channel: str | None = None,
                     base_url: str | None = None) -> DigestReport:
    """Queue the digest of every digest subscription that is due at ``now`` (all of them
    with ``force``), one transaction each; the outbox delivers them."""
    report = DigestReport()
    for subscription in digest_subscriptions(subscriptions, channel):
        with db.transaction() as session:
            outcome = _one(session, subscription, tz, now=now, force=force, base_url=base_url)
        report.outcomes.append(outcome)
        if outcome.state in ("queued", "empty"):
            log.info(f"digest.{outcome.state}", channel=outcome.channel,
                     subscription=outcome.subscription_key, alert_id=outcome.alert_id,
                     trials=outcome.trials, events=outcome.events)
    return report


def _one(session: Session, sub: Subscription, tz: ZoneInfo, *, now: datetime, force: bool,
         base_url: str | None) -> DigestOutcome:
    key = sub.key
    period = sub.digest_period
    assert period is not None
    seen = session.get(DigestWatermark, key)  # a cheap look first: most passes end here
    if seen is not None and seen.pending_alert is not None and _row_status(
            session, seen.pending_alert) == "pending":
        return DigestOutcome(key, sub.channel, "pending", seen.pending_alert)
    if seen is not None and seen.pending_alert is None and not force and not digest_due(
            period, sub.digest_at, tz, last=seen.last_sent_at, now=now):
        return DigestOutcome(key, sub.channel, "not_due")
    event_ids.settle(session)  # PostgreSQL: no event below max(id) is still to be committed
    mark = watermarks.locked(session, key)
    if mark is None:
        watermarks.ensure(session, key=key, channel=sub.channel,
                          after=watermarks.max_event_id(session), now=now)
        return DigestOutcome(key, sub.channel, "started")
    if mark.pending_alert is not None and _still_pending(session, mark):
        return DigestOutcome(key, sub.channel, "pending", mark.pending_alert)
    if not force and not digest_due(period, sub.digest_at, tz, last=mark.last_sent_at,
                                    now=now):
        return DigestOutcome(key, sub.channel, "not_due")
    until = watermarks.max_event_id(session)
    trials = _selected(session, sub, after=mark.last_event_id, until=until, base_url=base_url)
    if not trials:
        mark.last_event_id = max(mark.last_event_id, until)
        mark.last_sent_at = now
        return DigestOutcome(key, sub.channel, "empty")
    since = iso_utc(mark.last_sent_at)
    alert_id = digest_id(key, mark.last_event_id, until, since)
    payload = {"since": since, "until": iso_utc(now), "after_event_id": mark.last_event_id,
               "until_event_id": until, "trials": [t.payload() for t in trials]}
    ids = sorted(int(e["id"]) for t in trials for e in t.events)
    if session.get(OutboxEntry, alert_id) is None:
        session.add(OutboxEntry(
            id=alert_id, channel=sub.channel, kind="digest", trial_id=None, version=0,
            event_ids=ids, payload=_without_ids(payload), subscription_key=key,
            status="pending", attempts=0, next_attempt_at=now, created_at=now))
    mark.pending_alert = alert_id
    mark.pending_until = until
    return DigestOutcome(key, sub.channel, "queued", alert_id, len(trials), len(ids))


def digest_id(key: str, after: int, until: int, since: str) -> str:
    """The digest's outbox id (its ``webhook-id``): the same inputs, the same id."""
    body = f"{key}|{after}|{until}|{since}".encode()
    return f"dig_{hashlib.sha256(body).hexdigest()[:32]}"


def _row_status(session: Session, alert_id: str) -> str | None:
    return session.scalar(select(OutboxEntry.status).where(OutboxEntry.id == alert_id))


def _still_pending(session: Session, mark: DigestWatermark) -> bool:
    """Is the digest ``mark`` waits for still on its way? A delivered one (its watermark
    already moved) or a dead / vanished one releases the subscription; a dead one restarts
    the period from when it was built, and its events go into the next digest."""
    row = session.get(OutboxEntry, mark.pending_alert)
    if row is not None and row.status == "pending":
        return True
    if row is not None and row.status == "dead":
        log.warning("digest.dead", channel=mark.channel, alert_id=row.id,
                    subscription=mark.subscription_key, error=row.last_error)
        mark.last_sent_at = max(mark.last_sent_at, row.created_at)
    if row is not None and row.status == "delivered":
        watermarks.advance(session, row, row.delivered_at or row.created_at)
    mark.pending_alert = None
    mark.pending_until = None
    return False


def _selected(session: Session, sub: Subscription, *, after: int, until: int,
              base_url: str | None) -> list[DigestTrial]:
    """The events in ``(after, until]`` that ``sub`` selects, as digest trials."""
    rows = session.execute(
        select(Event, Trial).join(Trial, Trial.id == Event.trial_id)
        .where(Event.id > after, Event.id <= until, Event.historical.is_(False))
        .order_by(Event.id)).all()
    by_trial: dict[str, tuple[Trial, list[dict[str, Any]]]] = {}
    query_names: dict[int, set[str]] = {}  # per trial, read once however many events it has
    for event_row, trial in rows:
        event = {**event_json(trial.nct_id, event_row), "id": event_row.id}
        if trial.id not in query_names:
            query_names[trial.id] = repo.query_names_of(session, trial)
        if sub.matches(event, nct_id=trial.nct_id, query_names=query_names[trial.id]):
            by_trial.setdefault(trial.nct_id, (trial, []))[1].append(event)
    digest = []
    for nct_id, (trial, events) in by_trial.items():
        events.sort(key=severity_order)
        starts = [e["from_version"] for e in events if e.get("from_version") is not None]
        ends = [e["to_version"] for e in events if e.get("to_version") is not None]
        link = dashboard_link(base_url, nct_id, min(starts) if starts else None,
                              max(ends) if ends else None)
        digest.append(DigestTrial(nct_id=nct_id, title=trial.title, events=events,
                                  dashboard_url=link))
    digest.sort(key=lambda t: (severity_order(t.events[0]), t.nct_id))
    return digest


def severity_order(event: Mapping[str, Any]) -> tuple[int, int, int, str]:
    """Most severe first, then by kind (``events.change_rank``), then oldest first."""
    return (*change_rank(event.get("kind"), event.get("severity")),
            int(event.get("id") or 0), str(event.get("field") or ""))


def _without_ids(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload as the outbox keeps it: events as DESIGN.md event JSON (their ids are in
    the row's ``event_ids``)."""
    trials = [{**t, "events": [{k: v for k, v in e.items() if k != "id"} for e in t["events"]]}
              for t in payload["trials"]]
    return {**payload, "trials": trials}
