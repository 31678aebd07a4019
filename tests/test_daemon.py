"""``trialwatch run``: the real daemon as a subprocess against a local registry and webhook.

Each test starts ``python -m trialwatch.monitor.cli run`` on a temporary SQLite file with a 1 s
schedule, a ``FakeRegistry`` (tests/registry_server.py) serving a real API v2 document and
a ``WebhookReceiver`` thread; waits poll the daemon's JSON log lines with timeouts. The
in-process tests at the end pin down the lock, the metrics and the schedule helpers.
"""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from daemon_helpers import (
    FIXTURE_NCT,
    DaemonProcess,
    WebhookReceiver,
    base_env,
    http_get,
    poll,
    trialwatch,
    write_config,
)
from registry_server import FakeRegistry, Fault, load_fixture, make_study

from trialwatch.monitor.config.settings import ScheduleConfig
from trialwatch.monitor.service.daemon import cycle_trigger, next_fire_function
from trialwatch.monitor.service.lock import (
    AlreadyRunning,
    ServiceLock,
    lock_path_for,
    read_lock_state,
)
from trialwatch.monitor.service.metrics import Metrics

DOCUMENT = load_fixture(f"{FIXTURE_NCT}.json")  # overallStatus ACTIVE_NOT_RECRUITING
SECRET = "whsec_dGVzdCBzZWNyZXQga2V5IGZvciB0aGUgZGFlbW9uIHRlc3Rz"


@pytest.fixture
def registry() -> Iterator[FakeRegistry]:
    with FakeRegistry() as fake:
        fake.add(make_study(DOCUMENT, FIXTURE_NCT, "2025-04-10"))
        yield fake


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    hook = WebhookReceiver().start()
    yield hook
    hook.stop()


class Workspace:
    """A temporary config + SQLite database, and the daemons started on them."""

    def __init__(self, path: Path, registry: FakeRegistry, receiver: WebhookReceiver) -> None:
        self.path = path
        self.db_file = (path / "trialwatch.db").resolve()
        self.db_url = f"sqlite:///{self.db_file}"
        self.registry = registry
        self.config = write_config(path / "trialwatch.toml", registry_url=registry.base_url,
                                   hook_url=receiver.url)
        self.env = base_env(TRIALWATCH_CTGOV_URL=registry.base_url,
                            TW_TEST_WEBHOOK_SECRET=SECRET)
        self.daemons: list[DaemonProcess] = []

    def start(self, *args: str, name: str = "daemon", db_url: str | None = None,
              **env: str) -> DaemonProcess:
        command = trialwatch("--config", str(self.config), "--db", db_url or self.db_url,
                             "--log-format", "json", *(args or ("run",)))
        daemon = DaemonProcess(command, env={**self.env, **env}, workdir=self.path,
                               name=f"{name}{len(self.daemons)}")
        self.daemons.append(daemon)
        return daemon

    def command(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = trialwatch("--config", str(self.config), "--db", self.db_url, *args)
        return subprocess.run(command, env=self.env, capture_output=True, text=True,
                              timeout=30, check=False)

    def change_status(self, status: str = "COMPLETED") -> None:
        """A new registry version of the trial: new status, new last-update date."""
        self.registry.studies[FIXTURE_NCT] = make_study(DOCUMENT, FIXTURE_NCT, "2025-05-02",
                                                        overall_status=status)
        self.registry.data_timestamp = "2026-11-26T09:00:00"

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.db_file) as connection:
            return connection.execute(sql).fetchall()


@pytest.fixture
def workspace(tmp_path: Path, registry: FakeRegistry,
              receiver: WebhookReceiver) -> Iterator[Workspace]:
    space = Workspace(tmp_path, registry, receiver)
    yield space
    for daemon in space.daemons:
        daemon.kill()


def status_events(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in body["events"] if e["kind"] == "status"]


# ---------------------------------------------------------------------- the service


def test_record_change_is_alerted_once_within_the_next_cycle(
        workspace: Workspace, receiver: WebhookReceiver) -> None:
    daemon = workspace.start()
    daemon.wait_for_log("cycle.finished", where=lambda e: e["fetched"] == 1)  # version 1
    assert receiver.answered() == []
    workspace.change_status("COMPLETED")
    changed = daemon.wait_for_log("cycle.finished", where=lambda e: e["changed"] == 1,
                                  count=2, timeout=6)
    assert changed["events"] == 1
    delivery = poll(receiver.accepted, 5, "the alert")[0]
    quiet = len(daemon.events("cycle.finished"))
    daemon.wait_for_log("cycle.finished", count=quiet + 2)  # two more cycles: no repeat
    assert len(receiver.answered()) == 1
    assert delivery.body["nct_id"] == FIXTURE_NCT
    assert [(e["old"], e["new"]) for e in status_events(delivery.body)] == [
        ("ACTIVE_NOT_RECRUITING", "COMPLETED")]
    assert delivery.headers["webhook-signature"].startswith("v1,")
    assert SECRET not in daemon.stderr()


def test_sigterm_exits_zero_promptly_and_loses_no_alert(
        workspace: Workspace, receiver: WebhookReceiver) -> None:
    receiver.delay = 1.5  # the alert is in flight when SIGTERM arrives
    daemon = workspace.start()
    daemon.wait_for_log("cycle.finished", where=lambda e: e["fetched"] == 1)
    workspace.change_status()
    poll(lambda: receiver.arrived, 6, "the alert to be in flight")
    sent = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(timeout=5) == 0
    assert time.monotonic() - sent < 5
    names = [e["event"] for e in daemon.logs()]
    assert names.index("daemon.stopping") < names.index("daemon.stopped")
    assert len(receiver.accepted()) == 1
    assert workspace.query("select status, lease_until from outbox") == [("delivered", None)]
    assert workspace.query("pragma integrity_check") == [("ok",)]
    assert read_lock_state(Path(f"{workspace.db_file}.lock")) is None


def test_sigterm_abandons_a_slow_cycle_between_batches(
        workspace: Workspace, registry: FakeRegistry) -> None:
    slow = workspace.config.read_text().replace("requests_per_second = 0",
                                                "requests_per_second = 0.2")
    workspace.config.write_text(slow)  # 5 s between requests: the cycle takes > 10 s
    daemon = workspace.start()
    poll(lambda: registry.requests_to("/version"), 8, "the cycle's first request")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(timeout=3) == 0
    cycle = daemon.wait_for_log("cycle.finished", timeout=1)
    assert cycle["outcome"] != "ok" and cycle["fetched"] == 0
    assert len(registry.requests_to("/studies")) == 0  # abandoned before the listing
    assert workspace.query("select count(*) from versions") == [(0,)]


def test_second_signal_exits_at_once(workspace: Workspace, receiver: WebhookReceiver) -> None:
    receiver.delay = 30  # a delivery that would hold the graceful stop for long
    daemon = workspace.start()
    daemon.wait_for_log("cycle.finished", where=lambda e: e["fetched"] == 1)
    workspace.change_status()
    poll(lambda: receiver.arrived, 6, "the alert to be in flight")
    daemon.signal(signal.SIGTERM)
    daemon.wait_for_log("daemon.stopping")
    daemon.signal(signal.SIGINT)
    assert daemon.wait(timeout=2) == 128 + signal.SIGINT
    assert "exiting at once" in daemon.stderr()
    assert workspace.query("select status from outbox") == [("pending",)]  # sent again later


def test_second_daemon_on_the_same_database_refuses_to_start(workspace: Workspace) -> None:
    first = workspace.start()
    first.wait_for_log("daemon.started")
    # The same file through a relative URL (the daemons run in the workspace folder).
    second = workspace.start(db_url="sqlite:///trialwatch.db")
    assert second.wait(timeout=10) != 0
    assert second.stderr().splitlines() == [
        f"trialwatch: error: another trialwatch run is already running on "
        f"{workspace.db_file} (pid {first.pid})"]
    assert first.process.poll() is None


def test_kill_9_then_restart_recovers_the_lock_and_delivers_pending_alerts(
        workspace: Workspace, receiver: WebhookReceiver) -> None:
    receiver.status = 503  # the alert fails and stays pending
    # A 3 s retry delay: the first daemon does not claim the alert again before the kill.
    workspace.config.write_text(workspace.config.read_text().replace('backoff = "1s"',
                                                                     'backoff = "3s"'))
    first = workspace.start()
    first.wait_for_log("cycle.finished", where=lambda e: e["fetched"] == 1)
    workspace.change_status()
    first.wait_for_log("alert.retry")
    first.process.kill()  # SIGKILL: no clean-up at all
    first.process.wait(5)
    assert workspace.query("select status from outbox") == [("pending",)]
    receiver.status = 204
    second = workspace.start()
    second.wait_for_log("daemon.started")
    delivered = poll(receiver.accepted, 8, "the pending alert")
    failed = receiver.answered()[0]
    assert delivered[0].headers["webhook-id"] == failed.headers["webhook-id"]
    state = read_lock_state(Path(f"{workspace.db_file}.lock"))
    assert state is not None and state.pid == second.pid


def test_config_error_is_one_line_naming_the_key(workspace: Workspace) -> None:
    workspace.config.write_text(workspace.config.read_text().replace('interval = "1s"',
                                                                     'interval = "soon"', 1))
    result = workspace.command("run")
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "schedule.interval" in lines[0] and "soon" in lines[0]
    assert "Traceback" not in result.stderr


def test_outdated_schema_is_refused_naming_db_upgrade(workspace: Workspace) -> None:
    assert workspace.command("run", "--once").returncode == 0  # creates the schema
    with sqlite3.connect(workspace.db_file) as connection:
        connection.execute("update alembic_version set version_num = '0001'")
    result = workspace.command("run")
    assert result.returncode != 0
    assert len(result.stderr.splitlines()) == 1
    assert "trialwatch db upgrade" in result.stderr


def test_status_json_reflects_the_daemons_last_cycle(
        workspace: Workspace, receiver: WebhookReceiver) -> None:
    daemon = workspace.start()
    daemon.wait_for_log("cycle.finished", where=lambda e: e["fetched"] == 1)
    workspace.change_status()
    poll(receiver.accepted, 6, "the alert")
    daemon.signal(signal.SIGTERM)  # a stopped daemon: the last cycle no longer moves
    assert daemon.wait(timeout=5) == 0
    last = daemon.events("cycle.finished")[-1]
    result = workspace.command("status", "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    cycle = status["last_cycle"]
    assert {k: cycle[k] for k in ("outcome", "fetched", "changed", "events", "requests")} == {
        k: last[k] for k in ("outcome", "fetched", "changed", "events", "requests")}
    assert cycle["started_at"].endswith("Z") and cycle["finished_at"].endswith("Z")
    assert status["watched"] == 1 and status["queries"] == 0
    assert status["outbox"] == {"hook": {"pending": 0, "delivered": 1, "dead": 0}}
    assert status["next_cycle"] is None  # no daemon holds the database any more
    assert status["schema_version"]


def test_status_shows_the_running_daemons_next_cycle(workspace: Workspace) -> None:
    daemon = workspace.start()
    daemon.wait_for_log("cycle.finished")
    status = json.loads(workspace.command("status", "--json").stdout)
    next_cycle = datetime.fromisoformat(status["next_cycle"].replace("Z", "+00:00"))
    assert abs(next_cycle - datetime.now(UTC)) < timedelta(seconds=5)
    text = workspace.command("status").stdout
    assert f"pid {daemon.pid}" in text


def test_run_once_runs_one_cycle_delivers_and_exits(
        workspace: Workspace, receiver: WebhookReceiver) -> None:
    first = workspace.command("run", "--once")
    assert first.returncode == 0, first.stderr
    workspace.change_status()
    once = workspace.start("run", "--once", TRIALWATCH_LOG_LEVEL="debug")
    assert once.wait(timeout=10) == 0
    assert len(once.events("cycle.finished")) == 1
    assert once.events("ctgov.request")  # per-request debug logs
    assert len(receiver.accepted()) == 1
    assert read_lock_state(Path(f"{workspace.db_file}.lock")) is None


def test_run_once_exits_1_when_the_cycle_fails(
        workspace: Workspace, registry: FakeRegistry) -> None:
    registry.fault_hook = lambda _request: Fault(status=503)
    result = workspace.command("--log-format", "json", "run", "--once")
    assert result.returncode == 1
    assert '"outcome": "failed"' in result.stderr


def test_metrics_endpoint_serves_prometheus_counters(workspace: Workspace) -> None:
    daemon = workspace.start("run", "--metrics-port", "0")
    port = daemon.wait_for_log("daemon.started")["metrics_port"]
    daemon.wait_for_log("cycle.finished")
    status, text = http_get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    samples = dict(line.rsplit(" ", 1) for line in text.splitlines()
                   if line and not line.startswith("#"))
    assert int(samples['trialwatch_cycles_total{outcome="ok"}']) >= 1
    assert samples['trialwatch_cycles_total{outcome="failed"}'] == "0"
    assert 'trialwatch_deliveries_total{result="delivered"}' in samples
    assert "trialwatch_events_total" in samples
    assert float(samples["trialwatch_cycle_duration_seconds"]) >= 0
    assert float(samples["trialwatch_last_cycle_timestamp_seconds"]) > time.time() - 60
    assert http_get(f"http://127.0.0.1:{port}/healthz") == (200, "ok\n")


def test_healthz_turns_503_when_the_last_cycle_failed(
        workspace: Workspace, registry: FakeRegistry) -> None:
    daemon = workspace.start("run", "--metrics-port", "0")
    port = daemon.wait_for_log("daemon.started")["metrics_port"]
    daemon.wait_for_log("cycle.finished", where=lambda e: e["outcome"] == "ok")
    registry.fault_hook = lambda _request: Fault(status=503)
    daemon.wait_for_log("cycle.finished", where=lambda e: e["outcome"] == "failed")
    status, body = http_get(f"http://127.0.0.1:{port}/healthz")
    assert (status, body.strip()) == (503, "last cycle failed")


# ---------------------------------------------------------------------- in-process pieces


def test_lock_refuses_a_second_holder_naming_the_first_pid(tmp_path: Path) -> None:
    path = tmp_path / "x.db.lock"
    with ServiceLock.acquire(path, "x.db"), pytest.raises(AlreadyRunning) as refused:
        ServiceLock.acquire(path, "x.db", patience=0.1)
    assert refused.value.pid is not None
    assert str(refused.value) == (f"another trialwatch run is already running on x.db "
                                  f"(pid {refused.value.pid})")
    ServiceLock.acquire(path, "x.db").release()  # released: free again


def test_lock_file_tells_status_the_next_cycle_while_held(tmp_path: Path) -> None:
    path = tmp_path / "x.db.lock"
    due = datetime(2026, 11, 25, 18, 0, tzinfo=UTC)
    with ServiceLock.acquire(path, "x.db") as lock:
        lock.update(next_cycle=due)
        state = read_lock_state(path)
        assert state is not None and state.next_cycle == due and state.database == "x.db"
    assert read_lock_state(path) is None


def test_lock_is_only_for_sqlite_files() -> None:
    assert lock_path_for("sqlite:////var/lib/tw/tw.db") == Path("/var/lib/tw/tw.db.lock")
    assert lock_path_for("sqlite:///:memory:") is None
    assert lock_path_for("postgresql+psycopg://tw:pw@db/tw") is None


def test_metrics_health_is_overdue_after_three_missed_cycles() -> None:
    clock = [1_000_000.0]
    metrics = Metrics(next_fire=lambda t: t + timedelta(seconds=60), clock=lambda: clock[0])
    metrics.record_cycle("ok", events=0, failures=0, duration=1.0, finished_at=clock[0])
    assert metrics.health(now=clock[0] + 179) == (True, "ok")
    healthy, reason = metrics.health(now=clock[0] + 181)
    assert not healthy and reason.startswith("cycle overdue")


def test_cron_schedule_weekdays_count_from_sunday() -> None:
    schedule = ScheduleConfig(cron="0 7 * * 1-5", timezone="Europe/Paris")
    next_fire = next_fire_function(cycle_trigger(schedule))
    saturday = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    fire = next_fire(saturday)
    assert fire is not None
    assert (fire.strftime("%a %H:%M"), fire.utcoffset()) == ("Mon 07:00", timedelta(hours=1))


def test_sample_config_is_valid_with_every_setting_enabled() -> None:
    import tomllib

    from trialwatch.monitor.config.settings import parse_config
    from trialwatch.notifiers.registry import build_channels

    sample = (Path(__file__).parents[1] / "deploy" / "trialwatch.toml").read_text()
    assert parse_config(tomllib.loads(sample), env={}).channels == {}  # all commented out
    enabled = re.sub(r"(?m)^#(?=[\[a-z])", "", sample)
    env = {"TRIALWATCH_SMTP_PASSWORD": "pw-long-enough", "TRIALWATCH_WEBHOOK_SECRET": SECRET,
           "TRIALWATCH_CHAT_URLS": "json://127.0.0.1:9/hook, ntfy://ntfy.example.org/trials"}
    config = parse_config(tomllib.loads(enabled), env=env)
    assert set(config.channels) == {"team-mail", "ops-hook", "terminal", "chat"}
    assert config.subscriptions[0].queries == ("lupus-cart",)
    tables = {name: {"type": c.type, **c.settings} for name, c in config.channels.items()}
    assert set(build_channels(tables, env)) == set(config.channels)


def test_sample_config_shows_every_key() -> None:
    from pydantic import BaseModel

    from trialwatch.monitor.config import settings
    from trialwatch.notifiers.apprise import AppriseConfig
    from trialwatch.notifiers.console import ConsoleConfig
    from trialwatch.notifiers.email import EmailConfig
    from trialwatch.notifiers.webhook import WebhookConfig

    sample = (Path(__file__).parents[1] / "deploy" / "trialwatch.toml").read_text()
    models: list[type[BaseModel]] = [
        settings.DatabaseConfig, settings.CtgovConfig, settings.ScheduleConfig,
        settings.WatchConfig, settings.Subscription, settings.DeliveryConfig,
        settings.LoggingConfig, settings.AlertsConfig, settings.WebConfig, EmailConfig,
        WebhookConfig, ConsoleConfig, AppriseConfig]
    keys = {field.alias or name for model in models
            for name, field in model.model_fields.items()}
    assert sorted(k for k in keys if f"{k} = " not in sample) == []
