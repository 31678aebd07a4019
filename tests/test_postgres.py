"""What only PostgreSQL has: JSONB documents, the hot-query indexes, URL spellings, row
locks that skip (leases, outbox claims), and the fixtures' skip-or-fail when it is down."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import insert, select, text

from trialwatch.monitor.cli import cli
from trialwatch.notifiers.outbox import DeliveryPolicy, deliver_due
from trialwatch.notifiers.registry import build_channel
from trialwatch.storage import leases
from trialwatch.storage.engine import Database, normalize_url, open_database
from trialwatch.storage.models import OutboxEntry, Trial
from trialwatch.storage.schema import ensure_schema

REPO = Path(__file__).resolve().parents[1]
SEED = REPO / "seeds" / "NCT07328581.txt"


@pytest.fixture
def db(pg_url: str) -> Iterator[Database]:
    database = open_database(pg_url)
    ensure_schema(database)
    yield database
    database.close()


@pytest.fixture(scope="module")
def migrated(pg_module_url: str) -> Iterator[Database]:
    """One database at the head revision, for the read-only schema checks."""
    database = open_database(pg_module_url)
    ensure_schema(database)
    yield database
    database.close()


def rows(db: Database, sql: str, **params: object) -> list[tuple[object, ...]]:
    with db.engine.connect() as connection:
        return [tuple(r) for r in connection.execute(text(sql), params)]


@pytest.mark.postgres
def test_documents_are_stored_as_jsonb(migrated):
    found = set(rows(migrated, "SELECT table_name, column_name FROM information_schema.columns "
                         "WHERE table_schema = 'public' AND data_type = 'jsonb'"))
    assert found == {("versions", "canonical"), ("versions", "section_hashes"),
                     ("events", "old"), ("events", "new"), ("outbox", "event_ids"),
                     ("outbox", "payload"), ("outbox", "done_targets"),
                     ("cycle_rounds", "stamps")}


@pytest.mark.postgres
@pytest.mark.parametrize(("table", "columns"), [
    ("versions", "(trial_id, version)"),             # the latest version of a trial
    ("outbox", "(status, next_attempt_at)"),         # due alerts
    ("events", "(trial_id, detected_at)"),           # a trial's changes by time
    ("events", "(trial_id, to_version)"),            # events between two versions
    ("events", "(detected_at)"),                     # recent changes across trials
    ("trials", "(checked_round)"),                   # leasing what a round has not checked
    ("cycle_rounds", "(data_timestamp)"),            # the round of a data load
], ids=lambda value: value.strip("()").replace(", ", "+"))
def test_hot_queries_have_an_index(migrated, table, columns):
    definitions = [str(d) for (d,) in rows(
        migrated, "SELECT indexdef FROM pg_indexes WHERE tablename = :t", t=table)]
    assert any(d.endswith(f"USING btree {columns}") for d in definitions), definitions


@pytest.mark.postgres
@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "postgresql+psycopg"])
def test_every_url_spelling_works_for_the_commands(pg_url, scheme):
    url = scheme + "://" + pg_url.split("://", 1)[1]
    runner = CliRunner()
    ingested = runner.invoke(cli, ["--db", url, "ingest", "--json", str(SEED)])
    assert ingested.exit_code == 0, ingested.output
    listed = runner.invoke(cli, ["--db", url, "list", "--json"])
    assert [t["nct_id"] for t in json.loads(listed.stdout)] == ["NCT07328581"]
    assert normalize_url(url).startswith("postgresql+psycopg://")


@pytest.mark.postgres
def test_upgrading_to_0005_fills_the_list_columns_from_jsonb_documents_and_events(db, pg_url):
    ingested = CliRunner().invoke(cli, ["--db", pg_url, "ingest", str(SEED),
                                        str(SEED.parent / "demo")])
    assert ingested.exit_code == 0, ingested.output
    before = CliRunner().invoke(cli, ["--db", pg_url, "list", "--json"]).stdout
    with db.engine.begin() as connection:  # the database as 0004 left it
        for column in ("phases", "last_change_version", "last_change_kind",
                       "last_change_severity", "last_change_date"):
            connection.execute(text(f"ALTER TABLE trials DROP COLUMN {column}"))
        connection.execute(text("UPDATE alembic_version SET version_num = '0004'"))
    upgraded = CliRunner().invoke(cli, ["--db", pg_url, "db", "upgrade"])
    assert upgraded.exit_code == 0, upgraded.output
    listed = CliRunner().invoke(cli, ["--db", pg_url, "list", "--json"])
    assert listed.stdout == before
    (row,) = json.loads(listed.stdout)
    assert (row["phase"], row["last_change"]) == (
        ["PHASE1", "PHASE2"], {"date": "2029-04-10", "kind": "status", "version": 3})


def test_an_unreachable_server_is_a_one_line_error():
    result = CliRunner().invoke(cli, ["--db", "postgresql://postgres@127.0.0.1:1/none", "list"])
    assert result.exit_code == 2
    assert result.stderr.startswith("trialwatch: error: database postgresql://")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output


@pytest.mark.postgres
def test_two_workers_leasing_at_once_get_disjoint_batches_without_waiting(db):
    now = datetime.now(UTC)
    with db.transaction() as session:
        session.execute(insert(Trial), [{"nct_id": f"NCT{n:08d}", "first_seen_at": now,
                                         "watched": True} for n in range(1, 11)])
        state = leases.join_round(session, data_timestamp="2026-11-25T09:00:00",
                                  owner="setup", now=now)
    lease = timedelta(minutes=5)
    first = db.sessions()
    try:
        with first.begin():  # still open: its rows stay locked while the second one leases
            a = leases.lease_trials(first, state.id, "a", lease, 4)
            with db.transaction() as second:
                b = leases.lease_trials(second, state.id, "b", lease, 100)
    finally:
        first.close()
    assert len(a) == 4 and len(b) == 6
    assert {t.nct_id for t in a}.isdisjoint({t.nct_id for t in b})
    with db.transaction() as session:  # both hold live leases now: nothing left to lease
        assert leases.lease_trials(session, state.id, "c", lease, 100) == []
        assert leases.mark_checked(session, state.id, "c", [t.nct_id for t in a]) == 0
        assert leases.mark_checked(session, state.id, "a", [t.nct_id for t in a]) == 4
        assert leases.unchecked_count(session, state.id) == 6


@pytest.mark.postgres
def test_an_expired_lease_is_taken_over(db):
    now = datetime.now(UTC)
    with db.transaction() as session:
        session.execute(insert(Trial), [{"nct_id": "NCT00000001", "first_seen_at": now,
                                         "watched": True}])
        state = leases.join_round(session, data_timestamp="x", owner="setup", now=now)
    with db.transaction() as session:
        assert len(leases.lease_trials(session, state.id, "dead", timedelta(0), 10)) == 1
    with db.transaction() as session:
        (taken,) = leases.lease_trials(session, state.id, "alive", timedelta(minutes=1), 10)
        assert leases.held(session, "dead", [taken.nct_id]) == {}
        assert list(leases.held(session, "alive", [taken.nct_id])) == [taken.nct_id]


# A changed-since round over four watched trials: moved (listed with a newer date), listed
# unchanged, not listed, and never fetched (no version yet).
RECORDED = {"NCT00000001": "2026-11-01", "NCT00000002": "2026-11-01",
            "NCT00000003": "2026-11-01", "NCT00000004": None}
LISTED = {"NCT00000001": "2026-11-24", "NCT00000002": "2026-11-01",
          "NCT09999999": "2026-11-24"}  # the last one is not ours


def watch_recorded(db: Database, recorded: dict[str, str | None]) -> None:
    """Watched trials as a fetch leaves them: a version (unless no date) and its date."""
    now = datetime.now(UTC)
    with db.transaction() as session:
        session.execute(insert(Trial), [
            {"nct_id": nct_id, "first_seen_at": now, "watched": True,
             "latest_version": int(last is not None), "registry_last_update": last}
            for nct_id, last in recorded.items()])


def changed_since_round(db: Database, stamps: dict[str, str | None]) -> int:
    with db.transaction() as session:
        state = leases.join_round(session, data_timestamp="2026-11-25T09:00:00",
                                  owner="prep", now=datetime.now(UTC))
        leases.finish_preparation(session, state.id, "prep", strategy="changed-since",
                                  stamps=stamps)
    return state.id


@pytest.mark.postgres
def test_a_changed_since_round_leases_only_the_moved_and_the_never_fetched_trials(db):
    watch_recorded(db, RECORDED)
    round_id = changed_since_round(db, LISTED)
    with db.transaction() as session:
        leased = leases.lease_trials_to_fetch(session, round_id, "a", timedelta(minutes=5), 100)
    assert [t.nct_id for t in leased] == ["NCT00000001", "NCT00000004"]


@pytest.mark.postgres
def test_the_trials_a_changed_since_round_need_not_fetch_are_stamped_checked_at_once(db):
    watch_recorded(db, RECORDED)
    round_id = changed_since_round(db, LISTED)
    with db.transaction() as session:
        leased = leases.lease_trials_to_fetch(session, round_id, "a", timedelta(minutes=5), 100)
    with db.transaction() as session:
        assert leases.stamp_unmoved(session, round_id) == 2
        assert leases.stamp_unmoved(session, round_id) == 0
        assert leases.unchecked_count(session, round_id) == 2  # the leased ones: still a's
        assert leases.mark_checked(session, round_id, "a", [t.nct_id for t in leased]) == 2
        assert leases.close_round(session, round_id)


@pytest.mark.postgres
def test_trials_watched_during_a_changed_since_round_are_fetched_or_stamped_too(db):
    watch_recorded(db, RECORDED)
    round_id = changed_since_round(db, LISTED)
    with db.transaction() as session:
        leases.stamp_unmoved(session, round_id)
        leased = leases.lease_trials_to_fetch(session, round_id, "a", timedelta(minutes=5), 100)
        leases.mark_checked(session, round_id, "a", [t.nct_id for t in leased])
    watch_recorded(db, {"NCT00000005": None, "NCT00000006": "2026-10-01"})
    with db.transaction() as session:
        assert not leases.close_round(session, round_id)
        (new,) = leases.lease_trials_to_fetch(session, round_id, "a", timedelta(minutes=5), 100)
        assert new.nct_id == "NCT00000005"  # never fetched
        assert leases.stamp_unmoved(session, round_id) == 1  # NCT00000006: not listed


@pytest.mark.postgres
def test_stamping_an_unmoved_trial_takes_its_expired_lease_from_the_owner(db):
    # its worker recorded it (so it no longer moved) and died before stamping it checked
    watch_recorded(db, {"NCT00000001": "2026-11-24"})
    round_id = changed_since_round(db, LISTED)
    with db.transaction() as session:
        leases.claim_trials(session, [session.scalars(select(Trial)).one()], "dead",
                            timedelta(0))
    with db.transaction() as session:
        assert leases.stamp_unmoved(session, round_id) == 1
        assert leases.held(session, "dead", ["NCT00000001"]) == {}


@pytest.mark.postgres
def test_outbox_rows_claimed_by_concurrent_deliverers_are_sent_exactly_once(db, hook):
    now = datetime.now(UTC)
    with db.transaction() as session:
        session.execute(insert(Trial), [{"nct_id": "NCT00000001", "first_seen_at": now}])
        trial_id = session.scalar(text("SELECT id FROM trials"))
        session.execute(insert(OutboxEntry), [
            {"id": f"msg_{n:04d}", "channel": "hook", "trial_id": trial_id, "version": 1,
             "event_ids": [], "status": "pending", "attempts": 0, "next_attempt_at": now,
             "created_at": now} for n in range(60)])
    hook.delay = 0.002
    url = db.engine.url.render_as_string(hide_password=False)
    results: list[int] = []
    barrier = threading.Barrier(4)

    def deliverer() -> None:
        own = open_database(url)
        channel = build_channel("hook", {"type": "webhook", "url": hook.url}, {})
        barrier.wait()
        results.append(deliver_due(own, {"hook": channel}, DeliveryPolicy(batch=7)).delivered)
        own.close()

    threads = [threading.Thread(target=deliverer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    ids = [r.headers["webhook-id"] for r in hook.requests]
    assert sum(results) == 60 and len(ids) == len(set(ids)) == 60
    assert rows(db, "SELECT status, attempts, count(*) FROM outbox GROUP BY 1, 2") == [
        ("delivered", 1, 60)]


@pytest.mark.parametrize(("ci", "outcome"), [("", "1 skipped"), ("1", "1 error")])
def test_without_a_server_postgres_tests_skip_or_fail_on_ci(ci, outcome):
    env = {**os.environ, "TRIALWATCH_TEST_PG": "postgresql://postgres@127.0.0.1:1/test",
           "CI": ci}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:randomly",
         "tests/test_postgres.py::test_documents_are_stored_as_jsonb"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert outcome in result.stdout, result.stdout
    assert "PostgreSQL not reachable" in result.stdout
