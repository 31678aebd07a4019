"""Storage on a real SQLite file: what a stored version holds, the engine set-up, the schema.

A version keeps the raw document (compressed, byte-exact), the canonical JSON and its
SHA-256; SQLite runs in WAL mode with foreign keys enforced; Alembic migrations build
exactly the models' schema; an empty database is set up on first use and an outdated one is
refused with a message naming ``trialwatch db upgrade``.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from docmaker import SEED_JSON, SEED_PAGE, fixture_path
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from subscriptions import EveryEvent

from trialwatch.monitor.record import TrialRecord, canonical_dumps
from trialwatch.monitor.sources.files import read_record_file
from trialwatch.monitor.versioning import Observation, record_observation
from trialwatch.storage import repository as repo
from trialwatch.storage.engine import Database, open_database
from trialwatch.storage.models import Base, Event, OutboxEntry, Version
from trialwatch.storage.raw_codec import decompress_raw
from trialwatch.storage.schema import (
    HEAD,
    SchemaOutdated,
    current_revision,
    ensure_schema,
    head_revision,
    upgrade,
)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """The file of the ``db`` fixture (conftest)."""
    return tmp_path / "tw.db"


def store(db: Database, path: Path) -> Version:
    (document,) = read_record_file(path)
    with db.transaction() as session:
        outcome = record_observation(session, Observation(
            record=document.record, raw=document.raw, raw_format=document.format,
            source=f"file:{path}"))
        trial = repo.trial(session, outcome.nct_id)
        assert trial is not None and outcome.version is not None
        row = repo.version(session, trial, outcome.version)
        assert row is not None
        return row


# --------------------------------------------------------------------------- a stored version


@pytest.mark.parametrize("path", [SEED_PAGE, fixture_path(SEED_JSON), fixture_path("NCT04267848")],
                         ids=lambda p: p.name)
def test_raw_document_is_stored_compressed_and_byte_exact(db: Database, path: Path) -> None:
    row = store(db, path)
    assert decompress_raw(row.raw) == path.read_bytes()
    assert len(row.raw) < len(path.read_bytes())


def test_content_hash_is_sha256_of_canonical_json(db: Database) -> None:
    row = store(db, fixture_path(SEED_JSON))
    assert row.content_hash == hashlib.sha256(canonical_dumps(row.canonical)).hexdigest()
    (document,) = read_record_file(fixture_path(SEED_JSON))
    assert row.content_hash == document.record.content_hash


def test_canonical_json_is_key_sorted(db: Database) -> None:
    row = store(db, fixture_path(SEED_JSON))
    dumped = canonical_dumps(row.canonical)
    assert dumped == orjson.dumps(orjson.loads(dumped), option=orjson.OPT_SORT_KEYS)
    assert list(orjson.loads(dumped)) == sorted(row.canonical)


def test_version_keeps_source_format_and_last_update(db: Database) -> None:
    row = store(db, SEED_PAGE)
    assert (row.version, row.raw_format, row.source) == (1, "text-page", f"file:{SEED_PAGE}")
    assert row.last_update_posted == "2026-01-09"
    assert row.fetched_at.tzinfo is not None


# --------------------------------------------------------------------------- engine


def test_sqlite_runs_in_wal_mode_with_foreign_keys(db: Database) -> None:
    with db.engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_foreign_keys_are_enforced(db: Database) -> None:
    with pytest.raises(IntegrityError), db.transaction() as session:
        session.add(Version(trial_id=999, version=1, fetched_at=datetime.now(UTC),
                            source="x", raw_format="text-page", content_hash="0" * 64,
                            canonical={}, section_hashes={}, raw=b""))


def test_a_version_number_is_stored_once_per_trial(db: Database) -> None:
    row = store(db, SEED_PAGE)
    with pytest.raises(IntegrityError), db.transaction() as session:
        session.add(Version(trial_id=row.trial_id, version=1, fetched_at=datetime.now(UTC),
                            source="x", raw_format="text-page", content_hash="0" * 64,
                            canonical={}, section_hashes={}, raw=b""))


def test_sqlite_folder_is_created(tmp_path: Path) -> None:
    database = open_database(f"sqlite:///{tmp_path / 'a' / 'b' / 'tw.db'}")
    ensure_schema(database)
    database.close()
    assert (tmp_path / "a" / "b" / "tw.db").is_file()


# --------------------------------------------------------------------------- schema


def test_migrations_build_exactly_the_models_schema(db: Database) -> None:
    with db.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def test_empty_database_is_migrated_on_first_use(db_path: Path) -> None:
    database = open_database(f"sqlite:///{db_path}")
    assert current_revision(database) is None
    ensure_schema(database)
    assert current_revision(database) == head_revision()
    database.close()


def test_upgrade_is_idempotent(db: Database) -> None:
    assert upgrade(db) == (head_revision(), head_revision())
    assert current_revision(db) == head_revision()


def test_outdated_schema_is_refused_naming_db_upgrade(db: Database, db_path: Path) -> None:
    store(db, SEED_PAGE)
    with sqlite3.connect(db_path) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '0001'")
    with pytest.raises(SchemaOutdated, match="trialwatch db upgrade"):
        ensure_schema(db)


def test_schema_from_a_newer_trialwatch_is_refused_naming_the_cause(
        db: Database, db_path: Path) -> None:
    store(db, SEED_PAGE)
    with sqlite3.connect(db_path) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(SchemaOutdated, match="newer trialwatch"):
        ensure_schema(db)


def test_tables_without_revision_are_refused_not_migrated(db: Database, db_path: Path) -> None:
    store(db, SEED_PAGE)
    with sqlite3.connect(db_path) as connection:
        connection.execute("DELETE FROM alembic_version")
    with pytest.raises(SchemaOutdated, match="trialwatch db upgrade"):
        ensure_schema(db)
    with sqlite3.connect(db_path) as connection:
        assert connection.execute("SELECT count(*) FROM versions").fetchone()[0] == 1


LIST_COLUMNS = ("phases", "last_change_version", "last_change_kind", "last_change_severity",
                "last_change_date")  # what migration 0005 adds to trials


def test_upgrading_to_0005_fills_the_list_columns_from_what_is_stored(
        db: Database, db_path: Path) -> None:
    """``trials.phases`` and the last change (what ``list`` shows) come from the documents
    and events already stored, equal to what storing them now keeps."""
    for path in (SEED_PAGE, *sorted((SEED_PAGE.parent / "demo").glob("*.txt"))):
        store(db, path)
    with sqlite3.connect(db_path) as connection:
        kept = connection.execute(f"SELECT {', '.join(LIST_COLUMNS)} FROM trials").fetchall()
        for column in LIST_COLUMNS:  # the database as 0004 left it
            connection.execute(f"ALTER TABLE trials DROP COLUMN {column}")
        connection.execute("UPDATE alembic_version SET version_num = '0004'")
    assert upgrade(db) == ("0004", head_revision())
    with sqlite3.connect(db_path) as connection:
        filled = connection.execute(f"SELECT {', '.join(LIST_COLUMNS)} FROM trials").fetchall()
    assert filled == kept == [("PHASE1,PHASE2", 3, "status", "high", "2029-04-10")]


def test_a_removal_moves_the_last_change_as_its_stored_events_say(db: Database) -> None:
    from trialwatch.monitor.versioning import record_removal

    store(db, SEED_PAGE)  # one version, no change yet
    with db.transaction() as session:
        trial = repo.trial(session, "NCT07328581")
        assert trial is not None and trial.last_change_version is None
        record_removal(session, trial, now=datetime(2026, 12, 1, tzinfo=UTC))
        kept = (trial.last_change_version, trial.last_change_kind, trial.last_change_severity,
                trial.last_change_date)
        repo.refresh_last_change(session, trial)
        assert kept == (trial.last_change_version, trial.last_change_kind,
                        trial.last_change_severity, trial.last_change_date)
    assert kept == (1, "removed", "high", "2026-01-09")


def test_a_new_version_keeps_the_trials_phases_current(db: Database) -> None:
    store(db, SEED_PAGE)
    with db.transaction() as session:
        trial = repo.trial(session, "NCT07328581")
        assert trial is not None and trial.phases == "PHASE1,PHASE2"


def test_head_constant_is_the_newest_migration_script():
    assert head_revision() == HEAD


def test_checking_a_current_schema_does_not_load_alembic(tmp_path):
    """One-shot commands start faster: an up-to-date database costs one plain query."""
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'tw.db'}"
    ensure_schema(open_database(url))  # created (Alembic) in this process
    script = ("import sys; from trialwatch.storage.engine import open_database; "
              "from trialwatch.storage.schema import ensure_schema; "
              f"ensure_schema(open_database({url!r})); print('alembic' in sys.modules)")
    checked = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             timeout=60, check=True)
    assert checked.stdout.strip() == "False"


# --------------------------------------------------------------------------- pending versions


def _record(session, nct_id: str, status: str | None = None,
            subscriptions: Sequence[EveryEvent] = ()) -> int:
    (document,) = read_record_file(fixture_path(SEED_JSON))
    canonical = {**document.record.to_canonical(), "nct_id": nct_id}
    if status is not None:
        canonical["status"] = {**canonical["status"], "overall_status": status}
    outcome = record_observation(session, Observation(
        record=TrialRecord.from_canonical(canonical), raw=document.raw,
        raw_format=document.format, source="test"), subscriptions=subscriptions)
    assert outcome.version is not None
    return outcome.version


def test_a_recorded_version_is_visible_to_a_query_in_the_same_transaction(db: Database):
    with db.transaction() as session:
        number = _record(session, "NCT00000001")
        trial = repo.trial(session, "NCT00000001")
        assert trial is not None and trial.latest_version == number == 1
        row = repo.version(session, trial, number)
        assert row is not None and row.canonical["nct_id"] == "NCT00000001"


def test_a_recorded_version_is_gone_when_its_transaction_rolls_back(db: Database):
    with pytest.raises(RuntimeError), db.transaction() as session:
        _record(session, "NCT00000001")
        raise RuntimeError("something failed after recording")
    with db.transaction() as session:
        assert session.query(Version).count() == 0
        assert repo.trial(session, "NCT00000001") is None


def test_a_pages_new_versions_are_written_with_one_insert(db: Database):
    from sqlalchemy import event

    inserts: list[tuple[str, bool]] = []

    def count(_conn, _cursor, statement, _params, _context, executemany):
        if statement.startswith("INSERT INTO versions"):
            inserts.append((statement, executemany))

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        ids = [f"NCT0000000{number}" for number in range(1, 6)]
        with db.transaction() as session:
            for nct_id in ids:
                repo.get_or_create_trial(session, nct_id, datetime.now(UTC))
        with db.transaction() as session:
            repo.trials_by_nct_id(session, ids)  # as a cycle loads its page's trials
            for nct_id in ids:
                _record(session, nct_id)
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    assert len(inserts) == 1 and inserts[0][1] is True
    with db.transaction() as session:
        assert session.query(Version).count() == 5


def test_a_pages_events_alerts_and_trial_updates_are_one_statement_each(db: Database):
    from sqlalchemy import event

    ids = [f"NCT0000000{number}" for number in range(1, 6)]
    with db.transaction() as session:
        for nct_id in ids:
            _record(session, nct_id)
    inserts: list[str] = []

    def count(_conn, _cursor, statement, _params, _context, _executemany):
        inserts.extend(t for t in ("INSERT INTO events", "INSERT INTO outbox", "UPDATE trials")
                       if statement.startswith(t))

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        with db.transaction() as session:  # as a cycle records a page
            repo.prefetch_page(session, repo.trials_by_nct_id(session, ids).values())
            for number, nct_id in enumerate(ids):  # the status moves on every other one
                status = "COMPLETED" if number % 2 else None
                _record(session, nct_id, status=status, subscriptions=[EveryEvent("team")])
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    assert sorted(inserts) == ["INSERT INTO events", "INSERT INTO outbox", "UPDATE trials"]
    with db.transaction() as session:
        alerts = session.scalars(select(OutboxEntry)).all()
        events = {e.id: e.trial_id for e in session.scalars(select(Event))}
        assert len(alerts) == len(events) == 2  # the two trials whose status moved
        assert sorted(i for a in alerts for i in a.event_ids) == sorted(events)
        assert all(events[a.event_ids[0]] == a.trial_id for a in alerts)
