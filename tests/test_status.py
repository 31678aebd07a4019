"""``trialwatch status [--json]`` on a real SQLite file seeded through the storage models.

The command runs in-process (click's ``CliRunner``); the daemon's side of ``next_cycle`` is
played by holding the real ``ServiceLock`` the daemon holds. ``tests/test_daemon.py``
checks the same output against a running daemon.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import update

from trialwatch.monitor.cli import cli
from trialwatch.monitor.service.lock import ServiceLock
from trialwatch.storage import repository as repo
from trialwatch.storage.engine import Database, open_database
from trialwatch.storage.models import Cycle, OutboxEntry, SavedQuery
from trialwatch.storage.schema import ensure_schema, head_revision

HOOK_TOKEN = "tok-3f9a1c77e2"
SECRET = "whsec_c3RhdHVzIG11c3QgbmV2ZXIgcHJpbnQgdGhpcw=="
CONFIG = f"""\
[channels.ops-hook]
type = "webhook"
url = "https://hooks.example.org/trialwatch/{HOOK_TOKEN}"
secret_env = "TW_STATUS_SECRET"

[channels.console]
type = "console"
"""
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


class Setup:
    def __init__(self, path: Path) -> None:
        self.db_file = path / "trialwatch.db"
        self.db_url = f"sqlite:///{self.db_file}"
        self.config = path / "trialwatch.toml"
        self.config.write_text(CONFIG)

    def status(self, *args: str) -> Result:
        return CliRunner().invoke(
            cli, ["--config", str(self.config), "--db", self.db_url, "status", *args],
            env={"TW_STATUS_SECRET": SECRET, "TRIALWATCH_DB": None})

    def status_json(self) -> dict[str, Any]:
        result = self.status("--json")
        assert result.exit_code == 0, result.output
        payload: dict[str, Any] = json.loads(result.stdout)
        return payload

    def database(self) -> Database:
        db = open_database(self.db_url)
        ensure_schema(db)
        return db


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    yield Setup(tmp_path)


def add_cycle(db: Database, started: datetime, *, finished: bool = True,
              outcome: str = "ok", **counts: int) -> None:
    with db.transaction() as session:
        session.add(Cycle(started_at=started, outcome=outcome if finished else "running",
                          finished_at=started + timedelta(seconds=3) if finished else None,
                          **counts))


def add_alerts(db: Database, channel: str, *statuses: str) -> None:
    with db.transaction() as session:
        trial = repo.get_or_create_trial(session, "NCT03934567", NOW)
        for status in statuses:
            alert_id = repo.enqueue_alert(session, channel=channel, trial_row=trial,
                                          version_number=1, event_ids=[], now=NOW)
            session.execute(update(OutboxEntry).where(OutboxEntry.id == alert_id)
                            .values(status=status))


def test_status_json_of_a_new_database_has_no_cycle_and_zeroed_channels(setup: Setup) -> None:
    assert setup.status_json() == {
        "watched": 0, "queries": 0, "last_cycle": None, "next_cycle": None,
        "outbox": {"console": {"pending": 0, "delivered": 0, "dead": 0},
                   "ops-hook": {"pending": 0, "delivered": 0, "dead": 0}},
        "health": [], "schema_version": head_revision()}


def test_status_json_reports_the_last_finished_cycle_in_utc(setup: Setup) -> None:
    db = setup.database()
    add_cycle(db, NOW - timedelta(hours=6), outcome="failed")
    paris = timezone(timedelta(hours=1))
    add_cycle(db, datetime(2026, 11, 25, 13, 0, tzinfo=paris), outcome="partial", fetched=7,
              changed=2, events=3, requests=4)
    add_cycle(db, NOW + timedelta(minutes=5), finished=False)  # still running: not "last"
    db.close()
    assert setup.status_json()["last_cycle"] == {
        "started_at": "2026-11-25T12:00:00Z", "finished_at": "2026-11-25T12:00:03Z",
        "outcome": "partial", "fetched": 7, "changed": 2, "events": 3, "requests": 4}


def test_status_json_counts_outbox_rows_per_channel(setup: Setup) -> None:
    db = setup.database()
    add_alerts(db, "ops-hook", "pending", "delivered", "delivered", "dead")
    add_alerts(db, "retired-channel", "dead")  # no longer configured: its rows still show
    db.close()
    assert setup.status_json()["outbox"] == {
        "console": {"pending": 0, "delivered": 0, "dead": 0},
        "ops-hook": {"pending": 1, "delivered": 2, "dead": 1},
        "retired-channel": {"pending": 0, "delivered": 0, "dead": 1}}


def test_status_json_counts_watched_trials_and_saved_queries(setup: Setup) -> None:
    db = setup.database()
    with db.transaction() as session:
        repo.get_or_create_trial(session, "NCT00000001", NOW).watched = True
        repo.get_or_create_trial(session, "NCT00000002", NOW).watched = True
        repo.get_or_create_trial(session, "NCT00000003", NOW)  # ingested, not watched
        session.add(SavedQuery(name="lupus-cart", term="CAR-T", condition="lupus",
                               created_at=NOW))
    db.close()
    payload = setup.status_json()
    assert (payload["watched"], payload["queries"]) == (2, 1)


def test_status_next_cycle_comes_from_the_running_daemons_lock(setup: Setup) -> None:
    setup.database().close()
    lock_path = Path(f"{setup.db_file.resolve()}.lock")
    with ServiceLock.acquire(lock_path, str(setup.db_file)) as lock:
        lock.update(next_cycle=NOW + timedelta(hours=6))
        assert setup.status_json()["next_cycle"] == "2026-11-25T18:00:00Z"
        running = setup.status().stdout
    assert "2026-11-25T18:00:00Z" in running
    assert setup.status_json()["next_cycle"] is None  # released: nothing is scheduled


def test_status_text_is_readable_for_people(setup: Setup) -> None:
    db = setup.database()
    add_cycle(db, NOW, fetched=12, changed=1, events=2, requests=3)
    add_alerts(db, "ops-hook", "pending", "dead")
    db.close()
    result = setup.status()
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[1] == "watching     0 trials, 0 saved queries"
    assert lines[2] == ("last cycle   ok, 2026-11-25T12:00:00Z → 2026-11-25T12:00:03Z: "
                        "12 fetched, 1 changed, 2 events, 3 requests")
    assert lines[3].startswith("next cycle   none scheduled")
    assert lines[4:] == ["outbox       channel   pending  delivered  dead",
                         "             console         0          0     0",
                         "             ops-hook        1          0     1",
                         "health       ok (no failed cycle or delivery yet)"]


def test_status_never_prints_secrets(setup: Setup) -> None:
    for args in ((), ("--json",)):
        result = setup.status(*args)
        assert result.exit_code == 0
        assert SECRET not in result.output and HOOK_TOKEN not in result.output


def test_status_refuses_an_outdated_schema_naming_db_upgrade(setup: Setup) -> None:
    setup.database().close()
    with sqlite3.connect(setup.db_file) as connection:
        connection.execute("update alembic_version set version_num = '0001'")
    result = setup.status("--json")
    assert result.exit_code != 0
    assert "trialwatch db upgrade" in result.output and result.stdout == ""
