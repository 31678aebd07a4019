"""Digests (issue 19 §2): one message per period from the stored events after a watermark.

Every test records real versions into a real SQLite file (one also on PostgreSQL), builds
digests with ``send_due_digests`` and delivers them through the real outbox to real local
receivers (HTTP webhook, aiosmtpd). Time is passed in (``now``), never slept through.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from docmaker import (
    SEED_JSON,
    Study,
    module,
    new_registry_day,
    record,
    set_date,
    set_enrollment,
    set_status,
    study,
)
from receivers import Mailbox, WebhookReceiver, smtp_mailbox
from sqlalchemy import select
from standardwebhooks import Webhook

from trialwatch.monitor.config.subscriptions import Subscription
from trialwatch.monitor.digests import DigestReport, send_due_digests
from trialwatch.monitor.versioning import Observation, record_observation
from trialwatch.notifiers.base import Notifier
from trialwatch.notifiers.outbox import DeliveryPolicy, DeliveryReport, deliver_due
from trialwatch.notifiers.registry import build_channel
from trialwatch.storage.engine import Database, open_database
from trialwatch.storage.models import DigestWatermark, Event, OutboxEntry
from trialwatch.storage.schema import ensure_schema

UTC_ZONE = ZoneInfo("UTC")
PARIS = ZoneInfo("Europe/Paris")
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
OTHER = "NCT00000002"


# --------------------------------------------------------------------------- helpers


def other_trial(doc: Study) -> Study:
    """The same document under another NCT ID: a second trial."""
    module(doc, "identificationModule")["nctId"] = OTHER
    return doc


def store(db: Database, doc: Study, subscriptions: Sequence[Any] = (), *,
          at: datetime = T0) -> None:
    observation = Observation(record=record(doc), raw=b"{}", raw_format="ctgov-json",
                              source="test", fetched_at=at)
    with db.transaction() as session:
        record_observation(session, observation, subscriptions=subscriptions)


def seed_both(db: Database, subscriptions: Sequence[Any] = ()) -> None:
    """Version 1 of the seed trial and of a second trial: no events yet."""
    store(db, study(SEED_JSON), subscriptions)
    store(db, other_trial(study(SEED_JSON)), subscriptions)


def change_seed(db: Database, subscriptions: Sequence[Any], *, day: str = "2026-03-01",
                status: str = "RECRUITING", at: datetime = T0) -> None:
    """The seed trial: status (high), enrollment (medium) and a date (medium) change."""
    doc = set_enrollment(set_date(set_status(study(SEED_JSON), status),
                                  "primaryCompletionDateStruct", "2030-01-01"), 500,
                         "ESTIMATED")
    store(db, new_registry_day(doc, day), subscriptions, at=at)


def change_other(db: Database, subscriptions: Sequence[Any], *, at: datetime = T0) -> None:
    """The second trial: one enrollment change (medium)."""
    doc = other_trial(set_enrollment(study(SEED_JSON), 90, "ESTIMATED"))
    store(db, new_registry_day(doc, "2026-03-02"), subscriptions, at=at)


def digest_sub(channel: str = "ops-hook", **options: Any) -> Subscription:
    return Subscription(**{"channel": channel, "kinds": ("all",), "digest": "daily", **options})


def webhook(hook: WebhookReceiver, name: str = "ops-hook") -> dict[str, Notifier]:
    return {name: build_channel(name, {"type": "webhook", "url": hook.url,
                                       "secret_env": "HOOK_SECRET"}, {"HOOK_SECRET": SECRET})}


def send(db: Database, subs: Sequence[Subscription], now: datetime, *, tz: ZoneInfo = UTC_ZONE,
         force: bool = False, base_url: str | None = None) -> DigestReport:
    return send_due_digests(db, subs, tz, now=now, force=force, base_url=base_url)


def deliver(db: Database, channels: dict[str, Notifier], now: datetime,
            **policy: Any) -> DeliveryReport:
    return deliver_due(db, channels, DeliveryPolicy(**policy), now=now)


def after_backoff() -> datetime:
    """A moment when a failed attempt is due again (the outbox schedules retries on the
    real clock)."""
    return datetime.now(UTC) + timedelta(hours=1)


def states(report: DigestReport) -> list[str]:
    return [o.state for o in report.outcomes]


def watermark(db: Database, sub: Subscription) -> DigestWatermark:
    with db.transaction() as session:
        mark = session.get(DigestWatermark, sub.key)
        assert mark is not None
        session.expunge(mark)
        return mark


def outbox_rows(db: Database) -> list[tuple[str, str, str]]:
    with db.transaction() as session:
        return [(r.channel, r.kind, r.status) for r in
                session.scalars(select(OutboxEntry).order_by(OutboxEntry.created_at))]


def stored_events(db: Database) -> set[tuple[int, str, str, int | None]]:
    with db.transaction() as session:
        return {(e.trial_id, e.kind, e.field, e.to_version)
                for e in session.scalars(select(Event))}


def digest_events(payload: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(t["nct_id"], e["kind"], e["severity"]) for t in payload["trials"]
            for e in t["events"]]


@pytest.fixture
def started(db: Database) -> tuple[Database, Subscription]:
    """Two trials stored, a daily digest subscription seen for the first time at T0."""
    sub = digest_sub()
    seed_both(db, [sub])
    assert states(send(db, [sub], T0)) == ["started"]
    return db, sub


# --------------------------------------------------------------------------- who gets what


def test_a_digest_subscription_gets_no_alert_per_version_while_others_still_do(db):
    every_version = Subscription(channel="team-mail", kinds=("all",))
    seed_both(db)
    change_seed(db, [every_version, digest_sub()])
    assert outbox_rows(db) == [("team-mail", "trial", "pending")]


def test_a_new_digest_subscription_starts_from_now_and_sends_no_history(db):
    seed_both(db)
    change_seed(db, [])  # stored before the subscription existed
    sub = digest_sub()
    assert states(send(db, [sub], T0)) == ["started"]
    assert states(send(db, [sub], T0 + timedelta(days=2))) == ["empty"]
    assert outbox_rows(db) == []


def test_events_recorded_before_the_first_digest_pass_are_in_the_first_digest(db):
    sub = digest_sub()
    seed_both(db, [sub])
    change_seed(db, [sub])  # the daemon's first cycle ran before its first digest pass
    report = send(db, [sub], T0 + timedelta(days=1))
    assert states(report) == ["queued"] and report.outcomes[0].events == 3


# --------------------------------------------------------------------------- when


def test_a_daily_digest_without_digest_at_is_due_one_day_after_the_last(started, hook):
    db, sub = started
    change_seed(db, [sub])
    assert states(send(db, [sub], T0 + timedelta(hours=23, minutes=59))) == ["not_due"]
    assert states(send(db, [sub], T0 + timedelta(days=1))) == ["queued"]


def test_digest_at_is_a_wall_clock_time_in_the_schedule_timezone(db):
    sub = digest_sub(digest_at="08:00")
    seed_both(db, [sub])
    assert states(send(db, [sub], T0, tz=PARIS)) == ["started"]  # 13:00 in Paris
    change_seed(db, [sub])
    # 2 December, 07:59 in Paris (06:59 UTC): not yet; 08:00 Paris is 07:00 UTC
    assert states(send(db, [sub], datetime(2026, 12, 2, 6, 59, tzinfo=UTC), tz=PARIS)) == [
        "not_due"]
    assert states(send(db, [sub], datetime(2026, 12, 2, 7, 0, tzinfo=UTC), tz=PARIS)) == [
        "queued"]


def test_a_weekly_digest_at_a_time_goes_out_on_mondays(db):
    sub = digest_sub(digest="weekly", digest_at="08:00")
    seed_both(db, [sub])
    send(db, [sub], T0, tz=PARIS)  # Tuesday 1 December 2026
    change_seed(db, [sub])
    sunday = datetime(2026, 12, 6, 7, 0, tzinfo=UTC)
    assert states(send(db, [sub], sunday, tz=PARIS)) == ["not_due"]
    assert states(send(db, [sub], sunday + timedelta(days=1), tz=PARIS)) == ["queued"]


def test_a_period_without_matching_changes_sends_nothing_and_restarts(started):
    db, sub = started
    assert states(send(db, [sub], T0 + timedelta(days=1))) == ["empty"]
    assert outbox_rows(db) == []
    assert watermark(db, sub).last_sent_at == T0 + timedelta(days=1)
    change_seed(db, [sub])
    assert states(send(db, [sub], T0 + timedelta(days=1, hours=23))) == ["not_due"]


def test_now_sends_a_digest_that_is_not_due(started):
    db, sub = started
    change_seed(db, [sub])
    assert states(send(db, [sub], T0 + timedelta(minutes=5), force=True)) == ["queued"]


# --------------------------------------------------------------------------- what


def test_a_digest_groups_events_by_trial_most_severe_first(started, hook):
    db, sub = started
    change_other(db, [sub])  # medium only
    change_seed(db, [sub])  # high + 2 medium, recorded later
    send(db, [sub], T0 + timedelta(days=1))
    deliver(db, webhook(hook), T0 + timedelta(days=1))
    payload = Webhook(SECRET).verify(hook.requests[0].body, hook.requests[0].headers)
    assert digest_events(payload) == [
        ("NCT07328581", "status", "high"), ("NCT07328581", "enrollment", "medium"),
        ("NCT07328581", "dates", "medium"), (OTHER, "enrollment", "medium")]


def test_a_digest_selects_events_by_the_subscription_filters(started, hook):
    db, _ = started
    only_status = digest_sub(kinds=("status",), trials=("NCT07328581",))
    send(db, [only_status], T0)
    change_other(db, [only_status])
    change_seed(db, [only_status])
    send(db, [only_status], T0 + timedelta(days=1))
    deliver(db, webhook(hook), T0 + timedelta(days=1))
    assert digest_events(hook.requests[0].json()) == [("NCT07328581", "status", "high")]


def test_a_digest_links_each_trial_to_the_registry_and_to_the_dashboard_diff(started, hook):
    db, sub = started
    change_seed(db, [sub])
    send(db, [sub], T0 + timedelta(days=1), base_url="https://trials.example.org/")
    deliver(db, webhook(hook), T0 + timedelta(days=1))
    (trial,) = hook.requests[0].json()["trials"]
    assert trial["url"] == "https://clinicaltrials.gov/study/NCT07328581"
    assert trial["dashboard_url"] == "https://trials.example.org/trials/NCT07328581?from=1&to=2"


def test_a_webhook_digest_is_a_signed_trials_digest_body(started, hook):
    db, sub = started
    change_seed(db, [sub])
    report = send(db, [sub], T0 + timedelta(days=1))
    deliver(db, webhook(hook), T0 + timedelta(days=1))
    (request,) = hook.requests
    payload = Webhook(SECRET).verify(request.body, request.headers)
    assert payload["type"] == "trials.digest"
    assert payload["id"] == request.headers["webhook-id"] == report.outcomes[0].alert_id
    assert (payload["since"], payload["until"]) == ("2026-12-01T12:00:00Z",
                                                     "2026-12-02T12:00:00Z")
    assert payload["trials"][0]["title"].startswith("BCMA-CD19 cCAR T")


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    with smtp_mailbox() as box:
        yield box


def test_an_email_digest_has_a_plain_text_and_an_html_part(db, mailbox):
    sub = digest_sub("team-mail")
    seed_both(db, [sub])
    send(db, [sub], T0)
    change_seed(db, [sub])
    change_other(db, [sub])
    send(db, [sub], T0 + timedelta(days=1), base_url="https://trials.example.org")
    mail = build_channel("team-mail", {"type": "email", "host": "127.0.0.1",
                                       "port": mailbox.port, "security": "none",
                                       "from": "tw <a@example.org>", "to": ["t@example.org"]},
                         {})
    assert deliver(db, {"team-mail": mail}, T0 + timedelta(days=1)).delivered == 1
    (message,) = mailbox.messages()
    assert message["Subject"] == "[trialwatch] Digest: 4 changes in 2 trials"
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    for part in (text, html):
        assert part.index("NCT07328581") < part.index(OTHER)
        assert "Recruitment status: Not yet recruiting → Recruiting" in part
        assert "https://clinicaltrials.gov/study/NCT00000002" in part
    assert "See the changes: https://trials.example.org/trials/NCT07328581?from=1&to=2" in text
    assert '<a href="https://clinicaltrials.gov/study/NCT07328581">' in html
    assert '<a href="https://trials.example.org/trials/NCT07328581?from=1&amp;to=2">' in html


# --------------------------------------------------------------------------- the watermark


def test_the_watermark_advances_only_when_the_digest_is_delivered(started, hook):
    db, sub = started
    start = watermark(db, sub).last_event_id
    change_seed(db, [sub])
    send(db, [sub], T0 + timedelta(days=1))
    hook.fail_times = 1
    assert deliver(db, webhook(hook), T0 + timedelta(days=1)).retried == 1
    assert watermark(db, sub).last_event_id == start
    assert watermark(db, sub).pending_alert is not None
    assert deliver(db, webhook(hook), after_backoff()).delivered == 1
    mark = watermark(db, sub)
    assert mark.last_event_id == start + 3 and mark.pending_alert is None


def test_a_failed_digest_is_retried_with_the_same_id_and_no_second_digest_is_built(
        started, hook):
    db, sub = started
    change_seed(db, [sub])
    first = send(db, [sub], T0 + timedelta(days=1)).outcomes[0].alert_id
    hook.fail_times = 1
    deliver(db, webhook(hook), T0 + timedelta(days=1))
    change_other(db, [sub])  # while the digest waits for its retry
    assert states(send(db, [sub], T0 + timedelta(days=3), force=True)) == ["pending"]
    deliver(db, webhook(hook), after_backoff())
    assert [r.headers["webhook-id"] for r in hook.requests] == [first, first]
    assert hook.requests[0].body == hook.requests[1].body


def test_the_next_digest_carries_only_the_events_after_the_delivered_one(started, hook):
    db, sub = started
    change_seed(db, [sub])
    send(db, [sub], T0 + timedelta(days=1))
    hook.fail_times = 1
    deliver(db, webhook(hook), T0 + timedelta(days=1))
    change_other(db, [sub], at=T0 + timedelta(days=1, hours=2))
    deliver(db, webhook(hook), after_backoff())  # the retry goes out
    assert states(send(db, [sub], T0 + timedelta(days=2))) == ["queued"]
    deliver(db, webhook(hook), T0 + timedelta(days=2))
    bodies = [r.json() for r in hook.requests]
    assert len({b["id"] for b in bodies}) == 2
    assert [t["nct_id"] for t in bodies[-1]["trials"]] == [OTHER]


def test_a_dead_digest_leaves_its_events_to_the_next_one(started, hook):
    db, sub = started
    change_seed(db, [sub])
    dead = send(db, [sub], T0 + timedelta(days=1)).outcomes[0].alert_id
    hook.fail_times = 1
    assert deliver(db, webhook(hook), T0 + timedelta(days=1), max_attempts=1).dead == 1
    change_other(db, [sub])
    # the period restarted when the dead digest was built: due again a day later
    assert states(send(db, [sub], T0 + timedelta(days=1, hours=12))) == ["not_due"]
    report = send(db, [sub], T0 + timedelta(days=2))
    assert states(report) == ["queued"] and report.outcomes[0].alert_id != dead
    deliver(db, webhook(hook), T0 + timedelta(days=2))
    assert [t["nct_id"] for t in hook.requests[-1].json()["trials"]] == ["NCT07328581", OTHER]
    assert watermark(db, sub).pending_alert is None


def test_a_dead_digest_retried_by_hand_after_a_newer_one_never_moves_the_watermark_back(
        started, hook):
    from trialwatch.notifiers.outbox import retry_dead

    db, sub = started
    change_seed(db, [sub])
    send(db, [sub], T0 + timedelta(days=1))
    hook.fail_times = 1
    deliver(db, webhook(hook), T0 + timedelta(days=1), max_attempts=1)
    change_other(db, [sub])
    send(db, [sub], T0 + timedelta(days=2))
    deliver(db, webhook(hook), T0 + timedelta(days=2))
    newest = watermark(db, sub).last_event_id
    assert retry_dead(db) == 1
    deliver(db, webhook(hook), after_backoff())
    assert watermark(db, sub).last_event_id == newest


@pytest.mark.postgres
def test_digests_on_postgresql_are_queued_delivered_and_advance_the_watermark(pg_url, hook):
    db = open_database(pg_url)
    try:
        ensure_schema(db)
        sub = digest_sub()
        seed_both(db, [sub])
        assert states(send(db, [sub], T0)) == ["started"]
        change_seed(db, [sub])
        change_other(db, [sub])
        hook.fail_times = 1
        assert states(send(db, [sub], T0 + timedelta(days=1))) == ["queued"]
        assert deliver(db, webhook(hook), T0 + timedelta(days=1)).retried == 1
        assert states(send(db, [sub], T0 + timedelta(days=1), force=True)) == ["pending"]
        assert deliver(db, webhook(hook), after_backoff()).delivered == 1
        assert hook.requests[0].headers["webhook-id"] == hook.requests[1].headers["webhook-id"]
        assert len(digest_events(hook.requests[1].json())) == len(stored_events(db)) == 4
        assert states(send(db, [sub], T0 + timedelta(days=2))) == ["empty"]
    finally:
        db.close()
