"""Outbox delivery: at-least-once, with exponential backoff, leases and a dead letter.

Rows are written by ``trialwatch.monitor.versioning`` in the same transaction as the events they
carry; digest rows by ``trialwatch.monitor.digests``, whose watermark advances in the
transaction that marks the digest delivered.
Delivery is three short steps, so a crash anywhere loses nothing:

1. *claim* due rows (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so several workers never
   take the same row) by setting a lease; commit;
2. *send* each alert, outside any transaction;
3. *mark* it delivered, or schedule the retry (backoff doubles each attempt), or dead after
   ``max_attempts``; commit.

A process killed between 2 and 3 leaves the row pending with a lease; when the lease
expires the alert is sent again with the same id (``webhook-id``), so receivers de-duplicate.

Step 3 also tells ``trialwatch.notifiers.health`` how the channel fared, in the same
transaction: a failed attempt counts towards ``channel:<name>`` failing (``failing_after``
in a row, or at once when the alert goes dead), a delivery ends it. The flip's ``system``
alert goes to ``DeliveryPolicy.system_channels`` other than the failing channel itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import or_, select, update

from trialwatch.monitor.events import event_json
from trialwatch.notifiers import health
from trialwatch.notifiers.base import (
    Alert,
    DigestTrial,
    Notifier,
    PartialDelivery,
    dashboard_link,
)
from trialwatch.storage import repository as repo
from trialwatch.storage import watermarks
from trialwatch.storage.engine import Database
from trialwatch.storage.models import OutboxEntry, Trial

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class DeliveryPolicy:
    max_attempts: int = 8
    backoff: timedelta = timedelta(seconds=30)
    max_backoff: timedelta = timedelta(hours=6)
    lease: timedelta = timedelta(minutes=5)
    batch: int = 100
    #: consecutive failed attempts before a channel counts as failing (``[alerts]``)
    failing_after: int = health.DEFAULT_FAILING_AFTER
    #: the channels subscribed to ``system`` alerts (from the subscriptions)
    system_channels: tuple[str, ...] = ()

    def told_about(self, channel: str) -> tuple[str, ...]:
        """Who hears that ``channel`` fails or recovers: the other ``system`` channels (a
        failing channel telling only itself would be no use)."""
        return tuple(c for c in self.system_channels if c != channel)

    def retry_delay(self, attempts: int) -> timedelta:
        """Delay before attempt ``attempts + 1``: backoff, 2×backoff, 4×backoff, ... capped."""
        return min(self.backoff * (2 ** max(0, attempts - 1)), self.max_backoff)


@dataclass
class DeliveryReport:
    delivered: int = 0
    retried: int = 0
    dead: int = 0
    skipped_channels: set[str] = field(default_factory=set)
    #: channels that started failing or recovered during this delivery (``channel:<name>``)
    flips: list[health.Flip] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"delivered": self.delivered, "retried": self.retried, "dead": self.dead}


def deliver_due(db: Database, channels: Mapping[str, Notifier],
                policy: DeliveryPolicy = DeliveryPolicy(), *, now: datetime | None = None,
                base_url: str | None = None) -> DeliveryReport:
    """Send every due alert once; returns what happened. ``base_url`` (``[web] base_url``)
    makes every alert link to the dashboard's diff of its version."""
    report = DeliveryReport()
    while True:
        moment = now or datetime.now(UTC)
        claimed = _claim(db, list(channels), policy, moment, base_url)
        if not claimed:
            break
        flips = len(report.flips)
        for alert in claimed:
            _send_one(db, channels[alert.channel], alert, policy, report)
        # A channel's flip queued its system alert to the others: that is due now too.
        if (len(claimed) < policy.batch and len(report.flips) == flips) or now is not None:
            break
    return report


def _claim(db: Database, channel_names: list[str], policy: DeliveryPolicy,
           now: datetime, base_url: str | None = None) -> list[Alert]:
    if not channel_names:
        return []
    with db.transaction() as session:
        stmt = (
            select(OutboxEntry)
            .where(OutboxEntry.status == "pending", OutboxEntry.next_attempt_at <= now,
                   OutboxEntry.channel.in_(channel_names),
                   or_(OutboxEntry.lease_until.is_(None), OutboxEntry.lease_until <= now))
            .order_by(OutboxEntry.next_attempt_at, OutboxEntry.created_at)
            .limit(policy.batch)
            .with_for_update(skip_locked=True)
        )
        rows = session.scalars(stmt).all()
        alerts = []
        for row in rows:
            row.lease_until = now + policy.lease
            alerts.append(build_alert(session, row, base_url))
    return alerts


def build_alert(session: Any, row: OutboxEntry, base_url: str | None = None) -> Alert:
    """The ``Alert`` an outbox row stands for: a trial version's events read back by id, or
    (``digest``, ``system``) the content frozen in the row's ``payload``."""
    done = frozenset(row.done_targets or ())
    if row.kind != "trial":
        return alert_from_payload(row.id, row.channel, row.kind, row.payload or {}, done)
    trial = session.get(Trial, row.trial_id)
    events = [event_json(trial.nct_id, e) for e in repo.events_by_id(session, row.event_ids)]
    starts = [e["from_version"] for e in events if e.get("from_version") is not None]
    link = dashboard_link(base_url, trial.nct_id, min(starts) if starts else None, row.version)
    return Alert(id=row.id, channel=row.channel, nct_id=trial.nct_id, title=trial.title,
                 version=row.version, events=events, dashboard_url=link, done_targets=done)


def alert_from_payload(alert_id: str, channel: str, kind: str, payload: Mapping[str, Any],
                       done_targets: frozenset[str] = frozenset()) -> Alert:
    """A ``digest`` or ``system`` alert from the JSON its outbox row keeps: for a digest
    ``{"since", "until", "trials": [DigestTrial.payload(), ...]}``, for a system alert the
    ``Alert.system`` mapping itself."""
    if kind == "digest":
        trials = [DigestTrial(nct_id=t["nct_id"], title=t.get("title"), events=t["events"],
                              dashboard_url=t.get("dashboard_url"))
                  for t in payload.get("trials", ())]
        period = (str(payload["since"]), str(payload["until"])) \
            if payload.get("since") and payload.get("until") else None
        return Alert(id=alert_id, channel=channel, nct_id="", title=None, version=0,
                     events=[e for t in trials for e in t.events], kind="digest",
                     trials=trials, period=period, done_targets=done_targets)
    return Alert(id=alert_id, channel=channel, nct_id="", title=None, version=0, events=(),
                 kind="system", system=dict(payload), done_targets=done_targets)


def _send_one(db: Database, notifier: Notifier, alert: Alert, policy: DeliveryPolicy,
              report: DeliveryReport) -> None:
    bound = log.bind(alert_id=alert.id, channel=alert.channel, nct_id=alert.nct_id)
    try:
        notifier.send(alert)
    except Exception as exc:
        error = " ".join(str(exc).split()) or type(exc).__name__
        done = exc.done if isinstance(exc, PartialDelivery) else frozenset()
        if _mark_failed(db, alert.id, error, policy, report, done) == "dead":
            report.dead += 1
            bound.error("alert.dead", error=error)
        else:
            report.retried += 1
            bound.warning("alert.retry", error=error)
        return
    _mark_delivered(db, alert, policy, report)
    report.delivered += 1
    bound.info("alert.delivered")


def _mark_delivered(db: Database, alert: Alert, policy: DeliveryPolicy = DeliveryPolicy(),
                    report: DeliveryReport | None = None) -> None:
    """The row is delivered; a digest's watermark advances in the same transaction, so the
    events it carried are never in a later digest, and a digest not delivered leaves them
    for the next (``trialwatch.storage.watermarks``). A delivery also tells the channel's
    health that it works (``trialwatch.notifiers.health``)."""
    now = datetime.now(UTC)
    with db.transaction() as session:
        session.execute(update(OutboxEntry).where(OutboxEntry.id == alert.id).values(
            status="delivered", delivered_at=now, lease_until=None,
            attempts=OutboxEntry.attempts + 1, last_error=None))
        if alert.kind == "digest":
            row = session.get(OutboxEntry, alert.id)
            if row is not None:
                watermarks.advance(session, row, now)
        flip = health.observe(session, health.channel_subject(alert.channel), failed=False,
                              at=now, failing_after=policy.failing_after,
                              channels=policy.told_about(alert.channel))
    _note(flip, report)


def _mark_failed(db: Database, alert_id: str, error: str, policy: DeliveryPolicy,
                 report: DeliveryReport | None = None,
                 done: frozenset[str] = frozenset()) -> str:
    """Count the failed attempt; returns the row's new status ("pending" or "dead").

    ``done``: targets of a multi-target channel that have the alert now (``PartialDelivery``);
    added to the row's ``done_targets`` in this same transaction, so the retry skips them."""
    now = datetime.now(UTC)
    with db.transaction() as session:
        row = session.get(OutboxEntry, alert_id)
        if row is None:
            return "gone"
        row.attempts += 1
        row.last_error = error[:2000]
        row.lease_until = None
        if done:
            row.done_targets = sorted(set(row.done_targets or ()) | done)
        if row.attempts >= policy.max_attempts:
            row.status = "dead"
        else:
            row.next_attempt_at = now + policy.retry_delay(row.attempts)
        dead = row.status == "dead"
        reason = (f"alert {alert_id} dead after {row.attempts} attempts: {error}" if dead
                  else error)
        flip = health.observe(session, health.channel_subject(row.channel), failed=True,
                              at=now, failing_after=policy.failing_after, reason=reason,
                              at_once=dead, channels=policy.told_about(row.channel))
        status = row.status
    _note(flip, report)
    return status


def _note(flip: health.Flip | None, report: DeliveryReport | None) -> None:
    if flip is None:
        return
    log.warning("monitor.health", subject=flip.subject, state=flip.state, summary=flip.summary)
    if report is not None:
        report.flips.append(flip)


def retry_dead(db: Database, alert_id: str | None = None) -> int:
    """Put dead alerts (one, or all) back in the queue, due now, with a fresh attempt count."""
    now = datetime.now(UTC)
    with db.transaction() as session:
        stmt = update(OutboxEntry).where(OutboxEntry.status == "dead")
        if alert_id is not None:
            stmt = stmt.where(OutboxEntry.id == alert_id)
        result = session.execute(stmt.values(status="pending", attempts=0, next_attempt_at=now,
                                             lease_until=None))
        return int(getattr(result, "rowcount", 0) or 0)
