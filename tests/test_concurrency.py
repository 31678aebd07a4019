"""Several processes on one SQLite file: they wait for each other (busy timeout) or fail with
one clear line — never a corrupted file, a traceback or a half-written change.

* a short write transaction held by another process: ``check`` and ``ingest`` wait for it;
* one held longer than the busy timeout: a one-line "database is busy" error, exit 2;
* four ``ingest`` of the same folder at once: every one succeeds, each version stored once;
* ``check`` and ``ingest`` while ``trialwatch run`` cycles every second on the same file.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from registry_server import FakeRegistry, load_fixture, make_study, nct

from trialwatch.monitor.cli import cli

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = load_fixture("NCT03934567.json")


def env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("TRIALWATCH_")}
    return {**base, **extra}


def run(*args: str, timeout: float = 120, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "trialwatch.monitor.cli", *args],
                          cwd=REPO, text=True,
                          capture_output=True, timeout=timeout, env=env(**extra))


def start(*args: str, **extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "trialwatch.monitor.cli", *args],
                            cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env(**extra))


def hold_write_lock(db_path: Path, seconds: float) -> subprocess.Popen[str]:
    """Another process holding a write transaction on the file for ``seconds``."""
    script = textwrap.dedent(f"""
        import sqlite3, sys, time
        c = sqlite3.connect({str(db_path)!r}, isolation_level=None)
        c.execute("BEGIN IMMEDIATE")
        c.execute("UPDATE trials SET title = title")
        print("locked", flush=True)
        time.sleep({seconds})
        c.execute("COMMIT")
        """)
    holder = subprocess.Popen([sys.executable, "-c", script], text=True,
                              stdout=subprocess.PIPE)
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "locked"
    return holder


def assert_intact(db_path: Path) -> None:
    connection = sqlite3.connect(db_path, timeout=60)
    try:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        duplicated = connection.execute(
            "SELECT trial_id, version FROM versions GROUP BY trial_id, version "
            "HAVING count(*) > 1").fetchall()
        assert duplicated == []
        gaps = connection.execute(
            "SELECT t.nct_id FROM trials t WHERE t.latest_version != "
            "(SELECT count(*) FROM versions v WHERE v.trial_id = t.id)").fetchall()
        assert gaps == []
    finally:
        connection.close()


def assert_one_line_error(stderr: str) -> None:
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("trialwatch: ")]
    assert len(lines) == 1 and lines[0].startswith("trialwatch: error: "), stderr


def assert_refused_as_busy(exit_code: int, stderr: str, db_path: Path) -> None:
    """Exit 2, one error line saying the database is busy, and nothing half-written."""
    assert exit_code == 2, stderr
    assert_one_line_error(stderr)
    assert "database is busy" in stderr
    assert_intact(db_path)


@pytest.fixture
def registry() -> Iterator[FakeRegistry]:
    with FakeRegistry() as fake:
        for i in range(1, 6):
            fake.add(make_study(TEMPLATE, nct(i), "2026-11-01", overall_status="RECRUITING"))
        yield fake


@pytest.fixture
def workspace(tmp_path: Path, registry: FakeRegistry) -> Path:
    config = tmp_path / "trialwatch.toml"
    config.write_text(textwrap.dedent(f"""
        [database]
        url = "sqlite:///{tmp_path / 'tw.db'}"
        [ctgov]
        base_url = "{registry.base_url}"
        requests_per_second = 0
        max_retries = 0
        [schedule]
        interval = "1s"
        [watch]
        trials = {orjson.dumps([nct(i) for i in range(1, 6)]).decode()}
        """))
    records = tmp_path / "records"
    records.mkdir()
    for i in range(1, 101):
        for version, status in ((1, "NOT_YET_RECRUITING"), (2, "RECRUITING")):
            doc = make_study(TEMPLATE, nct(1000 + i), f"2026-0{version}-01",
                             overall_status=status)
            (records / f"{nct(1000 + i)}-{version}.json").write_bytes(orjson.dumps(doc))
    first = run("--config", str(config), "check")
    assert first.returncode == 0, first.stderr
    return tmp_path


def test_check_and_ingest_wait_for_a_short_write_transaction(workspace: Path) -> None:
    config, db_path = str(workspace / "trialwatch.toml"), workspace / "tw.db"
    holder = hold_write_lock(db_path, 1.5)
    started = time.monotonic()
    checked = run("--config", config, "check")
    ingested = run("--config", config, "ingest", str(workspace / "records"))
    holder.wait(timeout=30)
    assert checked.returncode == 0, checked.stderr
    assert ingested.returncode == 0, ingested.stderr
    assert time.monotonic() - started >= 1.0  # it waited, it did not fail
    assert_intact(db_path)


@pytest.mark.parametrize("args", [
    ("check",), ("ingest", "records"), ("watch", "--offline", "NCT00000042"), ("list",),
    ("status", "--json"), ("history", "NCT00000001"), ("outbox", "list"),
], ids=lambda a: a[0])
def test_a_lock_held_past_the_busy_timeout_is_a_one_line_busy_error(
        workspace: Path, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...]) -> None:
    import trialwatch.storage.engine

    monkeypatch.setattr(trialwatch.storage.engine, "SQLITE_BUSY_TIMEOUT_MS", 300)
    db_path = workspace / "tw.db"
    holder = sqlite3.connect(db_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        argv = [a if a != "records" else str(workspace / "records") for a in args]
        result = CliRunner().invoke(cli, ["--config", str(workspace / "trialwatch.toml"),
                                          *argv], env=env())
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert_refused_as_busy(result.exit_code, result.stderr, db_path)


@pytest.mark.slow
def test_the_real_busy_timeout_then_one_line_error_from_the_installed_command(
        workspace: Path) -> None:
    db_path = workspace / "tw.db"
    holder = hold_write_lock(db_path, 25)
    try:
        result = run("--config", str(workspace / "trialwatch.toml"), "check")
    finally:
        holder.kill()
        holder.wait()
    assert_refused_as_busy(result.returncode, result.stderr, db_path)


def test_four_ingests_of_one_folder_at_once_all_succeed_and_store_each_version_once(
        workspace: Path) -> None:
    config, records = str(workspace / "trialwatch.toml"), str(workspace / "records")
    processes = [start("--config", config, "ingest", "--no-notify", records) for _ in range(4)]
    for process in processes:
        _out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
    assert_intact(workspace / "tw.db")
    connection = sqlite3.connect(workspace / "tw.db")
    try:
        counts = connection.execute(
            "SELECT count(*), count(DISTINCT trial_id) FROM versions "
            "WHERE trial_id IN (SELECT id FROM trials WHERE nct_id >= 'NCT00001000')").fetchone()
        events = connection.execute("SELECT count(*) FROM events WHERE kind = 'status'").fetchone()
    finally:
        connection.close()
    assert counts == (200, 100)
    assert events == (100,)


def test_check_and_ingest_while_the_daemon_runs_on_the_same_file(
        workspace: Path, registry: FakeRegistry) -> None:
    config, db_path = str(workspace / "trialwatch.toml"), workspace / "tw.db"
    daemon = start("--config", config, "--log-format", "json", "run")
    try:
        for day in range(2, 8):
            registry.studies[nct(1)] = make_study(
                registry.studies[nct(1)], nct(1), f"2026-11-0{day}",
                overall_status="COMPLETED" if day % 2 else "RECRUITING")
            registry.data_timestamp = f"2026-11-0{day}T09:00:00"
            checked = run("--config", config, "check")
            assert checked.returncode in (0, 1), checked.stderr  # 1: a cycle failure, reported
            assert "Traceback" not in checked.stderr and "internal error" not in checked.stderr
        ingested = run("--config", config, "ingest", str(workspace / "records"))
        assert ingested.returncode == 0, ingested.stderr
        assert daemon.poll() is None, "the daemon died"
    finally:
        daemon.terminate()
        _out, err = daemon.communicate(timeout=60)
    assert daemon.returncode == 0, err
    assert "Traceback" not in err
    assert_intact(db_path)
    connection = sqlite3.connect(db_path)
    try:
        statuses = [row[0] for row in connection.execute(
            "SELECT e.new FROM events e JOIN trials t ON t.id = e.trial_id "
            "WHERE t.nct_id = ? AND e.kind = 'status' ORDER BY e.to_version", (nct(1),))]
    finally:
        connection.close()
    # each of the five status changes seen once, whoever (daemon or check) recorded it
    assert [orjson.loads(s) for s in statuses] == ["COMPLETED", "RECRUITING"] * 2 + ["COMPLETED"]


def test_a_lock_taken_in_the_middle_of_an_ingest_stops_it_cleanly_and_a_rerun_finishes(
        workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import trialwatch.storage.engine
    from trialwatch.monitor.sources import files

    monkeypatch.setattr(trialwatch.storage.engine, "SQLITE_BUSY_TIMEOUT_MS", 300)
    db_path, config = workspace / "tw.db", str(workspace / "trialwatch.toml")
    holder = sqlite3.connect(db_path, isolation_level=None)
    read = files.read_record_file
    calls = []

    def read_then_lock(path: Path) -> Any:
        calls.append(path)
        if len(calls) == 30:  # another process starts a long write while we ingest
            holder.execute("BEGIN IMMEDIATE")
        return read(path)

    monkeypatch.setattr(files, "read_record_file", read_then_lock)
    try:
        result = CliRunner().invoke(cli, ["--config", config, "ingest", "--no-notify",
                                          str(workspace / "records")], env=env())
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert_refused_as_busy(result.exit_code, result.stderr, db_path)
    monkeypatch.setattr(files, "read_record_file", read)
    again = CliRunner().invoke(cli, ["--config", config, "ingest", "--no-notify",
                                     str(workspace / "records")], env=env())
    assert again.exit_code == 0, again.output
    assert_intact(db_path)


def test_an_older_document_stored_after_a_newer_one_is_no_change_back(tmp_path: Path) -> None:
    """``run`` and ``check`` fetch the same trial; the slower one commits the older document
    last. That is not the trial changing back (a false alert): it is stale, and ignored."""
    from trialwatch.monitor.sources.ctgov.parser import parse_study
    from trialwatch.monitor.versioning import Observation, record_observation
    from trialwatch.storage.engine import open_database
    from trialwatch.storage.schema import ensure_schema

    db = open_database(f"sqlite:///{tmp_path / 'tw.db'}")
    ensure_schema(db)
    older = make_study(TEMPLATE, nct(1), "2026-11-03", overall_status="RECRUITING")
    newer = make_study(TEMPLATE, nct(1), "2026-11-04", overall_status="COMPLETED")
    outcomes = []
    for doc in (older, newer, older):
        with db.transaction() as session:
            outcomes.append(record_observation(session, Observation(
                record=parse_study(doc), raw=orjson.dumps(doc), raw_format="ctgov-json",
                source="ctgov")))
    db.close()
    assert [(o.version, o.changed, [e.kind for e in o.events]) for o in outcomes] == [
        (1, True, []), (2, True, ["status"]), (2, False, [])]


def test_two_processes_delivering_at_once_send_each_alert_once(workspace: Path) -> None:
    """Without a crash nothing is sent twice: two deliverers never claim the same alert."""
    from receivers import webhook_receiver

    config = workspace / "hooked.toml"
    with webhook_receiver() as hook:
        hook.delay = 0.005
        config.write_text(textwrap.dedent(f"""
            [database]
            url = "sqlite:///{workspace / 'tw.db'}"
            [channels.ops-hook]
            type = "webhook"
            url = "{hook.url}"
            """))
        stored = run("--config", str(config), "ingest", "--no-notify",
                     str(workspace / "records"))
        assert stored.returncode == 0, stored.stderr
        one_file = str(next((workspace / "records").iterdir()))
        deliverers = [start("--config", str(config), "ingest", one_file) for _ in range(2)]
        for process in deliverers:
            _out, err = process.communicate(timeout=300)
            assert process.returncode == 0, err
        ids = [r.headers["webhook-id"] for r in hook.requests]
    assert len(ids) == 100 and len(set(ids)) == 100
