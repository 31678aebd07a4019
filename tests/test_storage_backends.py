"""The core storage behaviours, each run on both backends: an SQLite file and PostgreSQL.

Every test gets an empty database of its ``backend`` (``tests/pg.py``: a file in tmp_path,
or a fresh ``tw_<random>`` PostgreSQL database) and drives it the way users do: through the
``trialwatch`` command with ``--db URL``, plus the recording path itself where a transaction
boundary is the point.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from click.testing import CliRunner, Result
from docmaker import recruiting_copy
from receivers import WebhookReceiver
from registry_server import FakeRegistry, load_fixture, make_study, nct
from sqlalchemy import event, func, insert, select
from subscriptions import EveryEvent

from trialwatch.monitor.cli import cli
from trialwatch.monitor.sources.files import read_record_file
from trialwatch.monitor.versioning import Observation, record_observation
from trialwatch.storage import repository as repo
from trialwatch.storage.engine import Database, open_database
from trialwatch.storage.models import Base, Event, OutboxEntry, Trial, Version
from trialwatch.storage.schema import (
    current_revision,
    ensure_schema,
    head_revision,
    upgrade_connection,
)

REPO = Path(__file__).resolve().parents[1]
SEED = REPO / "seeds" / "NCT07328581.txt"
CONSTRUCTED = REPO / "tests" / "fixtures" / "ctgov" / "constructed" / "NCT07328581.json"
NCT = "NCT07328581"


def trialwatch(url: str, *args: str, config: Path | None = None,
               env: Mapping[str, str] | None = None) -> Result:
    options = ["--config", str(config)] if config is not None else []
    return CliRunner().invoke(cli, [*options, "--db", url, *args], env=dict(env or {}))


def ingest_json(url: str, *paths: Path, config: Path | None = None) -> dict[str, Any]:
    result = trialwatch(url, "ingest", "--json", *map(str, paths), config=config)
    assert result.exit_code == 0, result.output
    body: dict[str, Any] = json.loads(result.stdout)
    return body


def counts(url: str) -> dict[str, int]:
    db = open_database(url)
    try:
        with db.transaction() as session:
            return {model.__tablename__: int(session.scalar(
                select(func.count()).select_from(model)) or 0)
                for model in (Trial, Version, Event, OutboxEntry)}
    finally:
        db.close()


def hook_config(tmp_path: Path, hook: WebhookReceiver) -> Path:
    path = tmp_path / "trialwatch.toml"
    path.write_text(textwrap.dedent(f"""
        [channels.ops-hook]
        type = "webhook"
        url = "{hook.url}"
        """))
    return path


def test_ingesting_the_seed_page_stores_version_1(backend_url):
    body = ingest_json(backend_url, SEED)
    assert body["records"] == [{"nct_id": NCT, "version": 1, "changed": True}]
    assert body["events"] == []


def test_ingesting_the_same_page_again_stores_nothing(backend_url):
    ingest_json(backend_url, SEED)
    body = ingest_json(backend_url, SEED)
    assert body["records"] == [{"nct_id": NCT, "version": 1, "changed": False}]
    assert counts(backend_url)["versions"] == 1


def test_text_page_then_api_json_of_the_same_version_gives_v2_and_no_event(backend_url):
    ingest_json(backend_url, SEED)
    body = ingest_json(backend_url, CONSTRUCTED)
    assert body["records"] == [{"nct_id": NCT, "version": 2, "changed": True}]
    assert body["events"] == []
    again = ingest_json(backend_url, CONSTRUCTED)  # JSONB/JSON round trip: same hash
    assert again["records"] == [{"nct_id": NCT, "version": 2, "changed": False}]


def test_a_changed_document_stores_events_and_outbox_rows_and_delivers_once(
        backend_url, tmp_path, hook):
    config = hook_config(tmp_path, hook)
    ingest_json(backend_url, SEED, CONSTRUCTED, config=config)
    body = ingest_json(backend_url, recruiting_copy(tmp_path), config=config)
    assert [(e["kind"], e["old"], e["new"]) for e in body["events"]] == [
        ("status", "NOT_YET_RECRUITING", "RECRUITING")]
    assert counts(backend_url) == {"trials": 1, "versions": 3, "events": 1, "outbox": 1}
    assert len(hook.requests) == 1
    assert hook.requests[0].json()["events"][0]["to_version"] == 3


class Exploding(EveryEvent):
    def matches(self, event: Mapping[str, Any], *, nct_id: str, query_names: set[str]) -> bool:
        raise RuntimeError("subscription exploded after the version and events were added")


def record(db: Database, path: Path, subscriptions: Any) -> None:
    (document,) = read_record_file(path)
    with db.transaction() as session:
        record_observation(session, Observation(
            record=document.record, raw=document.raw, raw_format=document.format,
            source=f"file:{path}"), subscriptions=subscriptions)


def test_version_events_and_outbox_rows_are_one_transaction(backend_url, tmp_path):
    ingest_json(backend_url, SEED, CONSTRUCTED)
    db = open_database(backend_url)
    try:
        with pytest.raises(RuntimeError, match="exploded"):
            record(db, recruiting_copy(tmp_path), [Exploding("ops-hook")])
        assert counts(backend_url) == {"trials": 1, "versions": 2, "events": 0, "outbox": 0}
        record(db, recruiting_copy(tmp_path), [EveryEvent("ops-hook")])
        assert counts(backend_url) == {"trials": 1, "versions": 3, "events": 1, "outbox": 1}
    finally:
        db.close()


def test_history_and_diff_read_the_stored_versions_through_the_cli(backend_url, tmp_path):
    ingest_json(backend_url, SEED, CONSTRUCTED, recruiting_copy(tmp_path))
    history = trialwatch(backend_url, "history", NCT, "--json")
    assert history.exit_code == 0, history.output
    body = json.loads(history.stdout)
    assert [v["version"] for v in body["versions"]] == [1, 2, 3]
    assert [(e["kind"], e["to_version"]) for e in body["events"]] == [("status", 3)]
    diff = trialwatch(backend_url, "diff", NCT, "--json")
    assert diff.exit_code == 1, diff.output
    changed = json.loads(diff.stdout)
    assert (changed["from_version"], changed["to_version"]) == (2, 3)
    assert [e["field"] for e in changed["events"]] == ["overall_status"]
    same = trialwatch(backend_url, "diff", NCT, "--from", "1", "--to", "2", "--json")
    assert same.exit_code == 0, same.output
    listed = trialwatch(backend_url, "list", "--json")
    assert json.loads(listed.stdout)[0]["latest_version"] == 3


def test_db_upgrade_on_an_empty_database_creates_the_schema_at_head(backend_url):
    first = trialwatch(backend_url, "db", "upgrade")
    assert first.exit_code == 0, first.output
    assert f"schema upgraded from empty to {head_revision()}" in first.stdout
    again = trialwatch(backend_url, "db", "upgrade")
    assert f"schema already at revision {head_revision()}" in again.stdout


def test_migrations_build_exactly_the_models_schema(backend_url):
    db = open_database(backend_url)
    try:
        with db.engine.begin() as connection:
            upgrade_connection(connection)
        with db.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        db.close()


def test_an_outdated_schema_is_refused_until_db_upgrade(backend_url):
    db = open_database(backend_url)
    try:
        with db.engine.begin() as connection:
            upgrade_connection(connection, "0001")
        assert current_revision(db) == "0001"
    finally:
        db.close()
    refused = trialwatch(backend_url, "ingest", str(SEED))
    assert refused.exit_code == 2
    assert "trialwatch db upgrade" in refused.stderr and "\n" not in refused.stderr.strip()
    upgraded = trialwatch(backend_url, "db", "upgrade")
    assert f"schema upgraded from 0001 to {head_revision()}" in upgraded.stdout
    assert ingest_json(backend_url, SEED)["records"][0]["version"] == 1


def test_watch_and_check_fetch_from_the_registry(backend_url, tmp_path):
    with FakeRegistry() as registry:
        template = load_fixture("NCT03934567.json")
        ids = [nct(1), nct(2)]
        for nct_id in ids:
            registry.add(make_study(template, nct_id, "2026-11-01"))
        config = tmp_path / "trialwatch.toml"
        config.write_text("[ctgov]\nrequests_per_second = 0\n")
        env = {"TRIALWATCH_CTGOV_URL": registry.base_url}
        watched = trialwatch(backend_url, "watch", *ids, config=config, env=env)
        assert watched.exit_code == 0, watched.output
        checked = trialwatch(backend_url, "check", "--json", config=config, env=env)
        assert checked.exit_code == 0, checked.output
        body = json.loads(checked.stdout)
        assert body["records"] == [{"nct_id": i, "version": 1, "changed": True} for i in ids]
        assert body["requests"] == 3  # version, one listing, one fetch page
        status = trialwatch(backend_url, "status", "--json", config=config, env=env)
        assert status.exit_code == 0, status.output
        assert json.loads(status.stdout)["watched"] == 2


def test_two_processes_creating_the_same_trial_at_once_both_get_it(backend_url):
    """Two daemons starting with the same new ``[watch]`` entry: no duplicate-key failure."""
    import threading
    from datetime import UTC, datetime

    from trialwatch.storage import repository as repo
    from trialwatch.storage.schema import ensure_schema

    first, second = open_database(backend_url), open_database(backend_url)
    ensure_schema(first)
    now = datetime.now(UTC)
    got: list[int] = []
    with first.transaction() as session_a:
        got.append(repo.get_or_create_trial(session_a, "NCT07328581", now).id)

        def other_process() -> None:  # blocks on A's uncommitted row, then reads it
            with second.transaction() as session_b:
                got.append(repo.get_or_create_trial(session_b, "NCT07328581", now).id)

        racer = threading.Thread(target=other_process)
        racer.start()
        racer.join(0.5)
    racer.join(30)
    assert not racer.is_alive()
    assert got[0] == got[1]
    assert counts(backend_url)["trials"] == 1
    first.close()
    second.close()


def test_a_membership_test_over_thousands_of_ids_is_one_statement(backend_url):
    db = open_database(backend_url)
    try:
        ensure_schema(db)
        stored = [nct(n) for n in range(1, 3001)]
        now = datetime.now(UTC)
        with db.transaction() as session:
            session.execute(insert(Trial), [
                {"nct_id": i, "first_seen_at": now, "latest_version": 0, "watched": True}
                for i in stored])
        asked = stored[::2] + [nct(n) for n in range(5001, 7001)]  # 1,500 known, 2,000 not
        statements: list[str] = []
        event.listen(db.engine, "before_cursor_execute",
                     lambda _c, _cur, statement, *_rest: statements.append(statement))
        with db.transaction() as session:
            found = repo.trials_by_nct_id(session, asked)
        assert sorted(found) == stored[::2]
        assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 1
    finally:
        db.close()


def test_event_ids_handed_out_in_one_transaction_are_distinct(backend_url):
    from trialwatch.storage import event_ids

    db = open_database(backend_url)
    try:
        ensure_schema(db)
        with db.transaction() as session:
            handed = [*event_ids.allocate(session, 300), *event_ids.allocate(session, 2)]
        assert len(set(handed)) == 302
    finally:
        db.close()


def test_event_ids_come_after_the_events_already_stored(backend_url, tmp_path):
    from trialwatch.storage import event_ids

    ingest_json(backend_url, SEED, CONSTRUCTED)
    ingest_json(backend_url, recruiting_copy(tmp_path))
    db = open_database(backend_url)
    try:
        with db.transaction() as session:
            stored = list(session.scalars(select(Event.id)))
            handed = event_ids.allocate(session, 2)
        assert stored and min(handed) > max(stored)
    finally:
        db.close()
