"""``trialwatch notify digest`` (cron), console digests, digests surviving ``kill -9``, and
the ordering of event ids with digests on PostgreSQL.

The CLI runs for real (click's runner, or a ``trialwatch`` subprocess for the crash test)
on a SQLite file, delivering to a real local webhook receiver.
"""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from docmaker import (
    SEED_JSON,
    new_registry_day,
    record,
    set_enrollment,
    set_status,
    study,
    write,
)
from receivers import WebhookReceiver
from sqlalchemy import select
from standardwebhooks import Webhook
from test_crash import kill_when

from trialwatch.monitor.cli import cli
from trialwatch.monitor.config.subscriptions import Subscription
from trialwatch.monitor.digests import send_due_digests
from trialwatch.monitor.versioning import Observation, record_observation
from trialwatch.notifiers.outbox import DeliveryPolicy, deliver_due
from trialwatch.notifiers.registry import build_channel
from trialwatch.storage.engine import open_database
from trialwatch.storage.models import Event, OutboxEntry, Trial
from trialwatch.storage.schema import ensure_schema

REPO = Path(__file__).resolve().parents[1]
SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
UTC_ZONE = ZoneInfo("UTC")
ENV = {"HOOK_SECRET": SECRET, "TRIALWATCH_LOG_LEVEL": "error"}


def write_config(tmp_path: Path, hook: WebhookReceiver, *, digest: bool = True,
                 console: bool = False) -> Path:
    text = textwrap.dedent(f"""
        [database]
        url = "sqlite:///{tmp_path / 'tw.db'}"

        [channels.ops-hook]
        type = "webhook"
        url = "{hook.url}"
        secret_env = "HOOK_SECRET"

        [channels.team-chat]
        type = "console"

        [[subscriptions]]
        channel = "team-chat"
        """)
    if digest:
        text += textwrap.dedent(f"""
            [[subscriptions]]
            channel = "{'team-chat' if console else 'ops-hook'}"
            kinds = "all"
            digest = "daily"
            digest_at = "08:00"
            """)
    path = tmp_path / "trialwatch.toml"
    path.write_text(text)
    path.chmod(0o600)
    return path


def trialwatch(config: Path, *args: str) -> Any:
    return CliRunner().invoke(cli, ["--config", str(config), *args], env=ENV)


def ingest_changes(config: Path, tmp_path: Path) -> None:
    """Version 1 of the seed trial, then version 2: recruiting, enrollment 500."""
    first = write(study(SEED_JSON), tmp_path / "v1.json")
    second = write(new_registry_day(set_enrollment(set_status(study(SEED_JSON), "RECRUITING"),
                                                   500, "ESTIMATED"), "2026-02-01"),
                   tmp_path / "v2.json")
    for path in (first, second):
        result = trialwatch(config, "ingest", "--no-notify", str(path))
        assert result.exit_code == 0, result.output


def digest_rows(tmp_path: Path) -> list[OutboxEntry]:
    db = open_database(f"sqlite:///{tmp_path / 'tw.db'}")
    try:
        with db.transaction() as session:
            rows = list(session.scalars(select(OutboxEntry).where(OutboxEntry.kind == "digest")))
            session.expunge_all()
            return rows
    finally:
        db.close()


# --------------------------------------------------------------------------- notify digest


def test_notify_digest_now_sends_the_waiting_changes_and_prints_one_line(tmp_path, hook):
    config = write_config(tmp_path, hook)
    ingest_changes(config, tmp_path)
    result = trialwatch(config, "notify", "digest", "--now")
    assert result.exit_code == 0, result.output
    (row,) = digest_rows(tmp_path)
    assert result.output == (f"ops-hook: digest {row.id} (2 changes in 1 trial) sent\n")
    (request,) = hook.requests
    assert Webhook(SECRET).verify(request.body, request.headers)["type"] == "trials.digest"


def test_notify_digest_json_reports_each_digest_and_the_delivery(tmp_path, hook):
    config = write_config(tmp_path, hook)
    ingest_changes(config, tmp_path)
    result = trialwatch(config, "notify", "digest", "ops-hook", "--now", "--json")
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    (digest,) = body["digests"]
    assert {k: digest[k] for k in ("channel", "state", "status", "trials", "events")} == {
        "channel": "ops-hook", "state": "queued", "status": "delivered", "trials": 1,
        "events": 2}
    assert digest["id"] == hook.requests[0].headers["webhook-id"]
    assert body["delivery"] == {"delivered": 1, "retried": 0, "dead": 0}


def test_notify_digest_sends_nothing_before_it_is_due(tmp_path, hook):
    config = write_config(tmp_path, hook)
    ingest_changes(config, tmp_path)
    result = trialwatch(config, "notify", "digest")
    assert result.exit_code == 0, result.output
    assert result.output == "ops-hook: digest not due yet (--now sends it anyway)\n"
    assert hook.requests == [] and digest_rows(tmp_path) == []


def test_notify_digest_again_right_after_says_there_is_nothing_new(tmp_path, hook):
    config = write_config(tmp_path, hook)
    ingest_changes(config, tmp_path)
    assert trialwatch(config, "notify", "digest", "--now").exit_code == 0
    result = trialwatch(config, "notify", "digest", "--now")
    assert result.output == (
        "ops-hook: no matching changes since the last digest; nothing sent\n")
    assert len(hook.requests) == 1


def test_notify_digest_exits_1_when_the_digest_could_not_be_delivered(tmp_path, hook):
    config = write_config(tmp_path, hook)
    ingest_changes(config, tmp_path)
    hook.fail_times = 1
    result = trialwatch(config, "notify", "digest", "--now")
    assert result.exit_code == 1
    assert "not delivered yet, will retry: webhook" in result.output
    assert "HTTP 500" in result.output


def test_notify_digest_of_an_unknown_channel_is_a_one_line_error(tmp_path, hook):
    result = trialwatch(write_config(tmp_path, hook), "notify", "digest", "nope")
    assert result.exit_code != 0
    assert result.output == ("trialwatch: error: channel nope: not configured "
                             "(have: ops-hook, team-chat)\n")


def test_notify_digest_of_a_channel_without_digest_subscription_says_so(tmp_path, hook):
    result = trialwatch(write_config(tmp_path, hook), "notify", "digest", "team-chat")
    assert result.exit_code != 0
    assert result.output.startswith(
        "trialwatch: error: channel team-chat: no [[subscriptions]] with digest")
    assert result.output.count("\n") == 1


def test_a_console_digest_prints_the_digest_text(tmp_path, hook):
    config = write_config(tmp_path, hook, console=True)
    ingest_changes(config, tmp_path)
    result = trialwatch(config, "notify", "digest", "team-chat", "--now")
    assert result.exit_code == 0, result.output
    assert "[trialwatch] Digest: 2 changes in 1 trial" in result.output
    assert "Recruitment status: Not yet recruiting → Recruiting" in result.output
    assert "View the trial: https://clinicaltrials.gov/study/NCT07328581" in result.output
    assert result.output.rstrip().endswith("sent")


# --------------------------------------------------------------------------- kill -9


def notify_digest_process(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "trialwatch.monitor.cli", "--config", str(config), "notify",
         "digest", "--now"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env={**os.environ, **ENV})


def kill_after(process: subprocess.Popen[bytes], seconds: float) -> bool:
    """SIGKILL ``process`` after ``seconds`` unless it ended first (0, or 1 when a digest
    was left waiting for a retry: the killed run before it still holds its lease)."""
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        return True
    finally:
        if process.stderr is not None:
            process.stderr.close()
    assert process.returncode in (0, 1)
    return False


def resume_after_lease(tmp_path: Path, hook: WebhookReceiver) -> None:
    """Deliver what is due an hour from now (leases of killed processes have expired)."""
    db = open_database(f"sqlite:///{tmp_path / 'tw.db'}")
    try:
        delay, hook.delay = hook.delay, 0.0
        later = datetime.now(UTC) + timedelta(hours=1)
        deliver_due(db, webhook_channels(hook), DeliveryPolicy(), now=later)
        hook.delay = delay
    finally:
        db.close()


def stored_event_keys(db: Any) -> set[tuple[str, str, str, int | None]]:
    with db.transaction() as session:
        return {(nct_id, kind, field, version) for nct_id, kind, field, version in
                session.execute(select(Trial.nct_id, Event.kind, Event.field,
                                       Event.to_version).join(Trial))}


def delivered_event_keys(hook: WebhookReceiver) -> list[tuple[str, str, str, int | None]]:
    """The events of every distinct digest the receiver got (de-duplicated by id)."""
    unique = {r.headers["webhook-id"]: r.json() for r in hook.requests}
    return [(t["nct_id"], e["kind"], e["field"], e["to_version"])
            for body in unique.values() for t in body["trials"] for e in t["events"]]


def webhook_channels(hook: WebhookReceiver) -> dict[str, Any]:
    return {"ops-hook": build_channel("ops-hook", {
        "type": "webhook", "url": hook.url, "secret_env": "HOOK_SECRET"}, ENV)}


def test_kill_9_during_digest_delivery_sends_it_once_more_with_the_same_id(tmp_path, hook):
    config = write_config(tmp_path, hook)
    ingest_changes(config, tmp_path)
    hook.delay = 5.0  # the receiver has the digest; the sender waits for its answer
    process = notify_digest_process(config)
    assert kill_when(process, lambda: bool(hook.requests), random.Random(19))
    hook.delay = 0.0
    (row,) = digest_rows(tmp_path)
    assert row.status == "pending" and hook.requests[0].headers["webhook-id"] == row.id

    # restarted while the killed process's lease holds: no second digest is built
    again = trialwatch(config, "notify", "digest", "--now")
    assert again.exit_code == 1 and "not delivered yet" in again.output
    assert len(digest_rows(tmp_path)) == 1 and len(hook.requests) == 1

    # the lease expires: the same digest goes out once more, under the same id
    db = open_database(f"sqlite:///{tmp_path / 'tw.db'}")
    try:
        later = datetime.now(UTC) + timedelta(hours=1)
        assert deliver_due(db, webhook_channels(hook), DeliveryPolicy(), now=later).delivered == 1
        stored = stored_event_keys(db)
    finally:
        db.close()
    assert trialwatch(config, "notify", "digest", "--now").output.endswith("nothing sent\n")
    assert [r.headers["webhook-id"] for r in hook.requests] == [row.id, row.id]
    assert hook.requests[0].body == hook.requests[1].body
    assert set(delivered_event_keys(hook)) == stored


@pytest.mark.slow
def test_kill_9_at_random_moments_of_digest_runs_loses_and_repeats_no_event(tmp_path, hook):
    """Rounds of: a new version stored, ``notify digest --now`` killed at a random moment
    (building, sending, marking). Then everything is let through: every stored event is in
    exactly one distinct digest, and a digest sent twice was sent with the same body."""
    config = write_config(tmp_path, hook)
    ingest_changes(config, tmp_path)
    rng = random.Random(2026)
    hook.delay = 1.0  # a send takes a second: kills land before, during and after it
    kills = 0
    for day in range(10, 22):
        doc = new_registry_day(set_enrollment(study(SEED_JSON), 100 + day, "ESTIMATED"),
                               f"2026-02-{day}")
        result = trialwatch(config, "ingest", "--no-notify", str(write(doc, tmp_path / "v.json")))
        assert result.exit_code == 0, result.output
        process = notify_digest_process(config)
        if kill_after(process, rng.uniform(0.2, 3.0)):
            kills += 1
            resume_after_lease(tmp_path, hook)  # a restart once the killed run's lease ran out
    assert kills >= 3
    hook.delay = 0.0
    db = open_database(f"sqlite:///{tmp_path / 'tw.db'}")
    try:
        later = datetime.now(UTC) + timedelta(hours=1)
        deliver_due(db, webhook_channels(hook), DeliveryPolicy(), now=later)
        while True:  # what the killed runs left pending is out; now the rest
            report = send_due_digests(db, [Subscription(channel="ops-hook", kinds=("all",),
                                                        digest="daily", digest_at="08:00")],
                                      UTC_ZONE, now=later, force=True)
            deliver_due(db, webhook_channels(hook), DeliveryPolicy(), now=later)
            if [o.state for o in report.outcomes] == ["empty"]:
                break
        stored = stored_event_keys(db)
    finally:
        db.close()
    delivered = delivered_event_keys(hook)
    assert sorted(delivered) == sorted(stored)  # each exactly once
    bodies: dict[str, bytes] = {}
    for request in hook.requests:
        assert bodies.setdefault(request.headers["webhook-id"], request.body) == request.body


# --------------------------------------------------------------------------- PostgreSQL


@pytest.mark.postgres
def test_a_digest_waits_for_events_whose_ids_were_handed_out_before_it(pg_url):
    """A transaction handed event ids but not yet committed: a digest built meanwhile must
    not advance past them (they would never be in any digest)."""
    db = open_database(pg_url)
    try:
        ensure_schema(db)
        sub = Subscription(channel="ops-hook", kinds=("all",), digest="daily")
        at = datetime(2026, 12, 1, tzinfo=UTC)

        def observe(doc: dict[str, Any]) -> Observation:
            return Observation(record=record(doc), raw=b"{}",
                               raw_format="ctgov-json", source="test", fetched_at=at)

        with db.transaction() as session:
            record_observation(session, observe(study(SEED_JSON)), subscriptions=[sub])
        send_due_digests(db, [sub], UTC_ZONE, now=at)
        holding, release = threading.Event(), threading.Event()

        def slow_writer() -> None:
            with db.transaction() as session:
                doc = new_registry_day(set_status(study(SEED_JSON), "RECRUITING"), "2026-02-01")
                record_observation(session, observe(doc), subscriptions=[sub])
                session.flush()
                holding.set()
                release.wait(30)

        writer = threading.Thread(target=slow_writer)
        writer.start()
        assert holding.wait(30)
        outcome: list[Any] = []
        digest = threading.Thread(target=lambda: outcome.append(send_due_digests(
            db, [sub], UTC_ZONE, now=at + timedelta(days=1))))
        digest.start()
        digest.join(1.0)
        assert digest.is_alive()  # waiting for the writer, not building without its events
        release.set()
        writer.join(30)
        digest.join(30)
        (result,) = outcome[0].outcomes
        assert (result.state, result.events) == ("queued", 1)
    finally:
        db.close()



# --------------------------------------------------------------------------- the daemon


def test_the_daemon_sends_a_due_digest_beside_the_per_version_alerts(tmp_path, hook):
    from daemon_helpers import FIXTURE_NCT, DaemonProcess, base_env, poll
    from daemon_helpers import trialwatch as command
    from daemon_helpers import write_config as daemon_config
    from registry_server import FakeRegistry, load_fixture, make_study

    document = load_fixture(f"{FIXTURE_NCT}.json")
    with FakeRegistry() as registry:
        registry.add(make_study(document, FIXTURE_NCT, "2025-04-10"))
        config = daemon_config(tmp_path / "trialwatch.toml", registry_url=registry.base_url,
                               hook_url=hook.url, extra=textwrap.dedent("""
                                   [[subscriptions]]
                                   channel = "hook"
                                   kinds = "all"
                                   digest = "1s"
                                   """))
        env = base_env(TRIALWATCH_CTGOV_URL=registry.base_url, TW_TEST_WEBHOOK_SECRET=SECRET)
        daemon = DaemonProcess(command("--config", str(config), "--db",
                                       f"sqlite:///{tmp_path / 'tw.db'}", "--log-format",
                                       "json", "run"), env=env, workdir=tmp_path)
        try:
            daemon.wait_for_log("cycle.finished")
            registry.studies[FIXTURE_NCT] = make_study(document, FIXTURE_NCT, "2025-05-02",
                                                       overall_status="COMPLETED")
            registry.data_timestamp = "2026-11-26T09:00:00"
            queued = daemon.wait_for_log("digest.queued", timeout=20)
            bodies = poll(lambda: [r.json() for r in hook.requests] if len(hook.requests) >= 2
                          else None, 20, "the per-version alert and the digest")
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(timeout=20) == 0
        finally:
            daemon.kill()
    by_type = {b["type"]: b for b in bodies}
    assert set(by_type) == {"trial.changed", "trials.digest"}
    assert by_type["trials.digest"]["id"] == queued["alert_id"]
    assert [e["kind"] for t in by_type["trials.digest"]["trials"] for e in t["events"]] == [
        "status"]
