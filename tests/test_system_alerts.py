"""Alerts about the monitor itself (issue 19 §4): failing checks and failing channels.

The rule first, as pure decisions (``trialwatch.notifiers.health.decide``,
``trialwatch.monitor.health.cycle_failed``); then its storage edge on a real SQLite file
(and once on the real PostgreSQL); then end to end: ``trialwatch check`` against the local
registry (tests/registry_server.py) made to fail and recover, a signed webhook receiver and
a real SMTP server subscribed to ``kinds = ["system"]``, ``status --json`` and ``/healthz``.
"""

from __future__ import annotations

import base64
import json
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from daemon_helpers import http_get
from receivers import Mailbox, WebhookReceiver, smtp_mailbox, webhook_receiver
from registry_server import FakeRegistry, Fault, load_fixture, make_study, nct
from sqlalchemy import select
from standardwebhooks import Webhook
from starlette.testclient import TestClient

from trialwatch.monitor.cli import cli
from trialwatch.monitor.config.subscriptions import Subscription
from trialwatch.monitor.health import cycle_failed, record_cycle, system_channels
from trialwatch.monitor.service.daemon import stored_health
from trialwatch.monitor.service.metrics import Metrics, MetricsServer
from trialwatch.monitor.web.app import create_app
from trialwatch.notifiers.health import (
    CHECKS,
    FAILING,
    OK,
    Health,
    decide,
    health_rows,
    observe,
)
from trialwatch.notifiers.outbox import DeliveryPolicy, alert_from_payload, deliver_due
from trialwatch.notifiers.registry import build_channel
from trialwatch.storage.engine import Database, open_database
from trialwatch.storage.models import MonitorHealth, OutboxEntry
from trialwatch.storage.schema import ensure_schema

T0 = datetime(2026, 12, 3, 6, 0, tzinfo=UTC)
SECRET = "whsec_" + base64.b64encode(b"system alerts are signed as well!").decode()
ENV = {"HOOK_SECRET": SECRET, "TRIALWATCH_DB": None}
TEMPLATE = load_fixture("NCT03934567.json")
TRIAL = nct(1)


def run_failures(count: int, *, failing_after: int = 3,
                 start: Health | None = None) -> tuple[Health, list[Any]]:
    health, flips = start or Health(CHECKS), []
    for i in range(count):
        health, flip = decide(health, failed=True, at=T0 + timedelta(hours=i),
                              failing_after=failing_after, reason=f"registry: down {i}")
        if flip is not None:
            flips.append(flip)
    return health, flips


# --- The rule ------------------------------------------------------------------------------

def test_fewer_failures_than_failing_after_raise_no_alert() -> None:
    health, flips = run_failures(2, failing_after=3)
    assert flips == []
    assert (health.state, health.failures, health.since) == (OK, 2, T0)


def test_the_failing_after_th_failure_raises_one_alert_since_the_first_failure() -> None:
    health, flips = run_failures(3, failing_after=3)
    (flip,) = flips
    assert (health.state, flip.state) == (FAILING, FAILING)
    assert flip.since == T0
    assert flip.reason == "registry: down 2"
    assert flip.summary == "checks are failing since 2026-12-03T06:00:00Z: registry: down 2"


def test_failures_after_the_flip_raise_no_further_alert() -> None:
    health, flips = run_failures(3 + 5, failing_after=3)
    assert len(flips) == 1
    assert (health.state, health.failures, health.since) == (FAILING, 8, T0)
    assert health.reason == "registry: down 7"  # status shows the latest cause


def test_a_success_while_failing_raises_one_recovered_alert() -> None:
    failing, _ = run_failures(4)
    later = T0 + timedelta(days=1)
    recovered, flip = decide(failing, failed=False, at=later, failing_after=3)
    assert flip is not None
    assert (recovered.state, recovered.failures, recovered.since) == (OK, 0, later)
    assert flip.summary == "checks recovered (failing since 2026-12-03T06:00:00Z)"
    again, second = decide(recovered, failed=False, at=later + timedelta(hours=1),
                           failing_after=3)
    assert second is None and again == recovered


def test_a_success_ending_a_short_streak_raises_nothing_and_starts_the_count_again() -> None:
    streak, _ = run_failures(2)
    reset, flip = decide(streak, failed=False, at=T0 + timedelta(hours=5), failing_after=3)
    assert flip is None
    assert (reset.state, reset.failures) == (OK, 0)
    _, flips = run_failures(2, start=reset)
    assert flips == []


def test_a_failure_at_once_flips_without_waiting_for_failing_after() -> None:
    health, flip = decide(Health("channel:ops-hook"), failed=True, at=T0, failing_after=3,
                          reason="alert msg_1 dead after 8 attempts: HTTP 500", at_once=True)
    assert health.state == FAILING
    assert flip is not None
    assert flip.summary == ("channel ops-hook is failing since 2026-12-03T06:00:00Z: "
                            "alert msg_1 dead after 8 attempts: HTTP 500")


def test_one_flip_has_one_stable_alert_id_per_channel() -> None:
    _, (flip,) = run_failures(3)
    _, (same,) = run_failures(3)
    assert flip.alert_id("ops-hook") == same.alert_id("ops-hook")
    assert flip.alert_id("ops-hook") != flip.alert_id("team-mail")
    recovered = decide(run_failures(3)[0], failed=False, at=T0 + timedelta(days=1),
                       failing_after=3)[1]
    assert recovered is not None and recovered.alert_id("ops-hook") != flip.alert_id("ops-hook")


@pytest.mark.parametrize(("outcome", "covered", "counts_as"), [
    ("failed", 0, True),        # the registry as a whole unreachable
    ("partial", 0, True),       # every batch failed: nothing was checked
    ("partial", 7, False),      # some trials got through: the checks work
    ("ok", 10, False),
    ("stopped", 0, None),       # SIGTERM mid-cycle: neither a failure nor a success
])
def test_what_a_finished_cycle_counts_as(outcome: str, covered: int,
                                         counts_as: bool | None) -> None:
    assert cycle_failed(outcome, covered=covered) is counts_as


def test_only_subscriptions_naming_system_get_system_alerts() -> None:
    subscriptions = [Subscription(channel="a"), Subscription(channel="b", kinds=("all",)),
                     Subscription(channel="c", kinds=("system",)),
                     Subscription(channel="d", kinds=("status", "system"),
                                  trials=("NCT07328581",), min_severity="high"),
                     Subscription(channel="c", kinds=("system", "results"))]
    assert system_channels(subscriptions) == ("c", "d")


# --- The storage edge ----------------------------------------------------------------------

def cycle_outcome(db: Database, outcome: str, at: datetime, *, covered: int = 0,
                  channels: tuple[str, ...] = ("ops-hook",)) -> None:
    with db.transaction() as session:
        record_cycle(session, outcome=outcome, covered=covered,
                     failures=["registry: 503 Service Unavailable", "fetch NCT1: x"]
                     if outcome != "ok" else [],
                     started_at=at, failing_after=3, channels=channels)


def system_rows(db: Database) -> list[OutboxEntry]:
    with db.transaction() as session:
        rows = session.scalars(select(OutboxEntry).where(OutboxEntry.kind == "system")
                               .order_by(OutboxEntry.created_at)).all()
        session.expunge_all()
        return list(rows)


def test_a_flip_writes_one_system_row_per_channel_with_its_frozen_payload(db: Database) -> None:
    for i in range(5):
        cycle_outcome(db, "failed", T0 + timedelta(hours=i), channels=("ops-hook", "team-mail"))
    rows = system_rows(db)
    assert sorted(r.channel for r in rows) == ["ops-hook", "team-mail"]
    row = rows[0]
    assert (row.trial_id, row.status, row.version) == (None, "pending", 0)
    assert row.payload == {
        "subject": "checks", "state": "failing", "since": "2026-12-03T06:00:00Z",
        "reason": "registry: 503 Service Unavailable (+1 more)",
        "summary": "checks are failing since 2026-12-03T06:00:00Z: "
                   "registry: 503 Service Unavailable (+1 more)"}
    alert = alert_from_payload(row.id, row.channel, row.kind, row.payload)
    assert alert.payload() == {"id": row.id, "type": "monitor.system", **row.payload}


def test_a_stopped_cycle_neither_counts_nor_breaks_the_streak(db: Database) -> None:
    cycle_outcome(db, "failed", T0)
    cycle_outcome(db, "failed", T0 + timedelta(hours=1))
    cycle_outcome(db, "stopped", T0 + timedelta(hours=2))
    assert system_rows(db) == []
    cycle_outcome(db, "failed", T0 + timedelta(hours=3))
    (row,) = system_rows(db)
    assert row.payload["since"] == "2026-12-03T06:00:00Z"


def test_recovery_writes_one_recovered_row_after_a_raised_alert(db: Database) -> None:
    for i in range(3):
        cycle_outcome(db, "failed", T0 + timedelta(hours=i))
    cycle_outcome(db, "ok", T0 + timedelta(hours=4), covered=10)
    cycle_outcome(db, "ok", T0 + timedelta(hours=5), covered=10)
    assert [r.payload["state"] for r in system_rows(db)] == ["failing", "ok"]
    assert system_rows(db)[1].payload["summary"] == (
        "checks recovered (failing since 2026-12-03T06:00:00Z)")


def test_a_rolled_back_flip_leaves_neither_the_state_nor_its_alert(db: Database) -> None:
    cycle_outcome(db, "failed", T0)
    cycle_outcome(db, "failed", T0 + timedelta(hours=1))
    with pytest.raises(RuntimeError), db.transaction() as session:
        flip = observe(session, CHECKS, failed=True, at=T0 + timedelta(hours=2),
                       failing_after=3, reason="down", channels=["ops-hook"])
        assert flip is not None
        raise RuntimeError("killed before the commit")
    assert system_rows(db) == []
    with db.transaction() as session:
        (health,) = health_rows(session)
    assert (health.state, health.failures) == (OK, 2)


def test_a_success_of_a_subject_that_never_failed_writes_no_row(db: Database) -> None:
    with db.transaction() as session:
        assert observe(session, "channel:ops-hook", failed=False, at=T0, failing_after=3) is None
    with db.transaction() as session:
        assert session.scalars(select(MonitorHealth)).all() == []


def test_the_flip_and_its_alerts_are_written_once_on_postgresql(pg_url: str) -> None:
    db = open_database(pg_url)
    try:
        ensure_schema(db)
        for i in range(6):
            cycle_outcome(db, "failed", T0 + timedelta(hours=i), channels=("a", "b"))
        cycle_outcome(db, "ok", T0 + timedelta(hours=7), covered=1, channels=("a", "b"))
        states = sorted((r.channel, r.payload["state"]) for r in system_rows(db))
        assert states == [("a", "failing"), ("a", "ok"), ("b", "failing"), ("b", "ok")]
        with db.transaction() as session:
            (health,) = health_rows(session)
        assert (health.subject, health.state, health.failures) == ("checks", OK, 0)
    finally:
        db.close()


# --- End to end ----------------------------------------------------------------------------

class Monitor:
    """A config file, the database and the local registry; runs ``trialwatch`` in-process."""

    def __init__(self, tmp_path: Path, registry: FakeRegistry, *, channels: str,
                 subscriptions: str, max_attempts: int = 8) -> None:
        self.db_url = f"sqlite:///{tmp_path / 'tw.db'}"
        self.registry = registry
        self.config = tmp_path / "trialwatch.toml"
        self.config.write_text(textwrap.dedent(f"""\
            [database]
            url = "{self.db_url}"

            [ctgov]
            base_url = "{registry.base_url}"
            requests_per_second = 0
            max_retries = 0
            timeout = "5s"

            [watch]
            trials = ["{TRIAL}"]

            [alerts]
            failing_after = 3

            [delivery]
            max_attempts = {max_attempts}
            backoff = "1s"
            """) + textwrap.dedent(channels) + textwrap.dedent(subscriptions))
        self.config.chmod(0o600)
        registry.add(make_study(TEMPLATE, TRIAL, "2026-11-01", overall_status="RECRUITING"))

    def run(self, *args: str) -> Result:
        result = CliRunner().invoke(cli, ["--config", str(self.config), *args], env=ENV)
        assert result.exception is None or isinstance(result.exception, SystemExit), \
            result.output
        return result

    def check(self) -> Result:
        return self.run("check")

    def registry_down(self) -> None:
        self.registry.fault_hook = lambda _request: Fault.text(503, "Service Unavailable")

    def registry_up(self) -> None:
        self.registry.fault_hook = None

    def status(self) -> dict[str, Any]:
        result = self.run("status", "--json")
        assert result.exit_code == 0, result.output
        payload: dict[str, Any] = json.loads(result.stdout)
        return payload

    def database(self) -> Database:
        db = open_database(self.db_url)
        ensure_schema(db)
        return db


def hook_channel(name: str, hook: WebhookReceiver) -> str:
    return f"""
        [channels.{name}]
        type = "webhook"
        url = "{hook.url}"
        secret_env = "HOOK_SECRET"
        """


def mail_channel(name: str, mailbox: Mailbox) -> str:
    return f"""
        [channels.{name}]
        type = "email"
        host = "127.0.0.1"
        port = {mailbox.port}
        security = "none"
        from = "trialwatch <alerts@example.org>"
        to = ["ops@example.org"]
        """


def subscription(channel: str, kinds: list[str]) -> str:
    return f"""
        [[subscriptions]]
        channel = "{channel}"
        kinds = {json.dumps(kinds)}
        """


def system_bodies(hook: WebhookReceiver) -> list[dict[str, Any]]:
    bodies = []
    for received in hook.requests:
        body = Webhook(SECRET).verify(received.body, received.headers)  # signed like the rest
        assert isinstance(body, dict)
        if body["type"] == "monitor.system":
            bodies.append(body)
    return bodies


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    with smtp_mailbox() as box:
        yield box


def test_failing_checks_send_one_signed_alert_and_one_recovered_alert(
        tmp_path: Path, registry: FakeRegistry, hook: WebhookReceiver) -> None:
    monitor = Monitor(tmp_path, registry, channels=hook_channel("ops-hook", hook),
                      subscriptions=subscription("ops-hook", ["system"]))
    assert monitor.check().exit_code == 0
    monitor.registry_down()
    for _ in range(2):
        assert monitor.check().exit_code == 1
    assert system_bodies(hook) == []  # two failed cycles: not yet
    for _ in range(4):
        monitor.check()
    (failing,) = system_bodies(hook)  # the third failed cycle, and not again after it
    assert failing["subject"] == "checks" and failing["state"] == "failing"
    assert failing["summary"].startswith(f"checks are failing since {failing['since']}: ")
    assert "503" in failing["reason"]
    assert set(failing) == {"id", "type", "subject", "state", "since", "reason", "summary"}
    monitor.registry_up()
    assert monitor.check().exit_code == 0
    monitor.check()
    failing_again, recovered = system_bodies(hook)
    assert failing_again == failing
    assert (recovered["state"], recovered["reason"]) == ("ok", None)
    assert recovered["summary"] == f"checks recovered (failing since {failing['since']})"
    assert recovered["id"] != failing["id"]


def test_cycles_that_reach_the_registry_but_list_nothing_count_as_failed(
        tmp_path: Path, registry: FakeRegistry, hook: WebhookReceiver) -> None:
    monitor = Monitor(tmp_path, registry, channels=hook_channel("ops-hook", hook),
                      subscriptions=subscription("ops-hook", ["system"]))
    monitor.check()
    registry.fault_hook = lambda request: (Fault.html(502) if request.path.endswith("/studies")
                                           else None)
    for day in range(3):  # a new data load each time, so every cycle lists the trials
        registry.data_timestamp = f"2026-12-0{day + 1}T09:00:00"
        assert "cycle partial" in monitor.check().output
    (failing,) = system_bodies(hook)
    assert failing["reason"].startswith("listing ")


def test_system_alerts_reach_only_subscriptions_that_ask_for_them(
        tmp_path: Path, registry: FakeRegistry, hook: WebhookReceiver) -> None:
    with smtp_mailbox() as box:
        monitor = Monitor(
            tmp_path, registry,
            channels=hook_channel("ops-hook", hook) + mail_channel("team-mail", box),
            subscriptions=subscription("ops-hook", ["system"])
            + subscription("team-mail", ["all"]))
        monitor.registry_down()
        for _ in range(3):
            monitor.check()
        assert len(system_bodies(hook)) == 1
        assert box.envelopes == []


def test_status_json_and_its_text_show_failing_checks(
        tmp_path: Path, registry: FakeRegistry, hook: WebhookReceiver) -> None:
    monitor = Monitor(tmp_path, registry, channels=hook_channel("ops-hook", hook),
                      subscriptions=subscription("ops-hook", ["system"]))
    monitor.registry_down()
    for _ in range(3):
        monitor.check()
    (checks,) = monitor.status()["health"]
    assert checks["subject"] == "checks"
    assert (checks["state"], checks["failures"]) == ("failing", 3)
    assert checks["since"] == system_bodies(hook)[0]["since"]
    assert "503" in checks["reason"]
    text = monitor.run("status").output
    assert f"health       checks failing since {checks['since']} (3 failures): " in text


def test_a_dead_channel_is_reported_through_another_channel_then_its_recovery(
        tmp_path: Path, registry: FakeRegistry, hook: WebhookReceiver,
        mailbox: Mailbox) -> None:
    hook.fail_times = 1  # the first alert to ops-hook fails, and with one attempt goes dead
    monitor = Monitor(
        tmp_path, registry, max_attempts=1,
        channels=hook_channel("ops-hook", hook) + mail_channel("team-mail", mailbox),
        subscriptions=subscription("ops-hook", ["status", "system"])
        + subscription("team-mail", ["system"]))
    monitor.check()
    registry.data_timestamp = "2026-12-01T09:00:00"
    registry.add(make_study(TEMPLATE, TRIAL, "2026-12-01", overall_status="TERMINATED"))
    monitor.check()  # a status alert to ops-hook: HTTP 500, dead
    (message,) = mailbox.messages()
    assert message["Subject"].strip().startswith(
        "[trialwatch] channel ops-hook is failing since ")
    text = message.get_body(("plain",)).get_content()
    assert "dead after 1 attempts" in text and "500" in text
    assert [h["subject"] for h in monitor.status()["health"]] == ["channel:ops-hook"]
    result = monitor.run("outbox", "retry", "--all-dead")  # ops-hook answers again
    assert result.exit_code == 0, result.output
    _, recovered = mailbox.messages()
    # (strip: the stdlib folds a long unbreakable subject onto a continuation line)
    assert recovered["Subject"].strip().startswith("[trialwatch] channel ops-hook recovered")
    assert system_bodies(hook) == []  # ops-hook is never told about itself
    (entry,) = monitor.status()["health"]
    assert entry["state"] == "ok"


def queue_system_row(db: Database, channel: str, alert_id: str) -> None:
    now = datetime.now(UTC)
    with db.transaction() as session:
        session.add(OutboxEntry(
            id=alert_id, channel=channel, kind="system", trial_id=None, version=0,
            event_ids=[], payload={"subject": "checks", "state": "ok", "since": None,
                                   "reason": None, "summary": "a queued alert"},
            status="pending", attempts=0, next_attempt_at=now, created_at=now))


def test_failing_after_failed_attempts_in_a_row_flip_a_channel_before_anything_is_dead(
        db: Database, hook: WebhookReceiver) -> None:
    with webhook_receiver() as broken:
        broken.fail_times = 100
        channels = {name: build_channel(name, {"type": "webhook", "url": url}, {})
                    for name, url in (("ops-hook", broken.url), ("backup-hook", hook.url))}
        policy = DeliveryPolicy(backoff=timedelta(0), failing_after=3,
                                system_channels=("ops-hook", "backup-hook"))
        queue_system_row(db, "ops-hook", "msg_one")
        for _ in range(2):
            assert deliver_due(db, channels, policy).retried == 1
        assert hook.requests == []
        report = deliver_due(db, channels, policy)  # the third failed attempt in a row
        assert (report.dead, report.delivered) == (0, 1)  # the flip's alert, same run
    (received,) = hook.requests
    body = received.json()
    assert (body["type"], body["subject"], body["state"]) == (
        "monitor.system", "channel:ops-hook", "failing")
    assert "HTTP 500" in body["reason"]
    assert [r.channel for r in system_rows(db) if r.id != "msg_one"] == ["backup-hook"]


def test_healthz_is_503_while_the_checks_are_failing_and_200_after(
        tmp_path: Path, registry: FakeRegistry, hook: WebhookReceiver) -> None:
    monitor = Monitor(tmp_path, registry, channels=hook_channel("ops-hook", hook),
                      subscriptions=subscription("ops-hook", ["system"]))
    db = monitor.database()
    server = MetricsServer(Metrics(monitor_health=stored_health(db)), 0).start()
    url = f"http://127.0.0.1:{server.port}/healthz"
    try:
        assert http_get(url) == (200, "ok\n")
        monitor.registry_down()
        for _ in range(3):
            monitor.check()
        status, body = http_get(url)
        since = system_bodies(hook)[0]["since"]
        assert status == 503
        assert body.splitlines()[0] == "checks failing"
        assert body.splitlines()[1].startswith(f"checks failing since {since} (3 failures): ")
        monitor.registry_up()
        monitor.check()
        assert http_get(url) == (200, "ok\n")
    finally:
        server.stop()
        db.close()


def test_the_dashboards_healthz_names_a_failing_channel_but_stays_200(db: Database) -> None:
    with db.transaction() as session:
        observe(session, "channel:ops-hook", failed=True, at=T0, failing_after=3,
                reason="alert msg_1 dead after 8 attempts: HTTP 500", at_once=True)
    with TestClient(create_app(db)) as client:
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.text == ("ok\nchannel:ops-hook failing since 2026-12-03T06:00:00Z "
                             "(1 failure): alert msg_1 dead after 8 attempts: HTTP 500\n")


def test_the_dashboards_healthz_is_503_while_the_checks_are_failing(db: Database) -> None:
    for i in range(3):
        cycle_outcome(db, "failed", T0 + timedelta(hours=i))
    with TestClient(create_app(db)) as client:
        response = client.get("/healthz")
    assert response.status_code == 503
    assert response.text.startswith("checks failing\nchecks failing since 2026-12-03T06:00:00Z")
