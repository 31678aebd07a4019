"""``trialwatch db migrate-to URL``: an SQLite history moved whole into an empty PostgreSQL.

The source is built the way users build one (ingest, a registry check with a saved query,
alerts delivered and pending); after the move every table holds the same rows, the commands
print the same answers from either database, and new writes on PostgreSQL continue the ids.
"""

from __future__ import annotations

import json
import sqlite3
import textwrap
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from receivers import WebhookReceiver
from registry_server import FakeRegistry, load_fixture, make_study, nct
from sqlalchemy import select

from trialwatch.monitor.cli import cli
from trialwatch.storage.engine import open_database
from trialwatch.storage.schema import is_empty, upgrade_connection
from trialwatch.storage.transfer import tables

pytestmark = pytest.mark.postgres

REPO = Path(__file__).resolve().parents[1]
SEED = REPO / "seeds" / "NCT07328581.txt"
CONSTRUCTED = REPO / "tests" / "fixtures" / "ctgov" / "constructed" / "NCT07328581.json"
NCT = "NCT07328581"


def trialwatch(url: str, *args: str, config: Path | None = None, **env: str) -> Result:
    options = ["--config", str(config)] if config is not None else []
    return CliRunner().invoke(cli, [*options, "--db", url, *args], env=env)


def changed_copy(tmp_path: Path, name: str, **status: str) -> Path:
    document = json.loads(CONSTRUCTED.read_text())
    module = document["protocolSection"]["statusModule"]
    module["overallStatus"] = status["overall"]
    module["lastUpdatePostDateStruct"]["date"] = status["posted"]
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(document))
    return path


@pytest.fixture
def source(tmp_path: Path, hook: WebhookReceiver) -> tuple[str, Path, dict[str, str]]:
    """An SQLite database with versions, events, delivered and pending alerts, a saved
    query with its matches, and cycles."""
    url = f"sqlite:///{tmp_path / 'tw.db'}"
    config = tmp_path / "trialwatch.toml"
    config.write_text(textwrap.dedent(f"""
        [ctgov]
        requests_per_second = 0
        [channels.ops-hook]
        type = "webhook"
        url = "{hook.url}"
        [[subscriptions]]
        channel = "ops-hook"
        kinds = ["status", "new_trial", "results"]
        """))
    with FakeRegistry() as registry:
        template = load_fixture("NCT03934567.json")
        for number in (1, 2):
            registry.add(make_study(template, nct(number), "2026-11-01", conditions=["Lupus"]))
        registry.add(make_study(template, nct(3), "2026-11-01"))
        env = {"TRIALWATCH_CTGOV_URL": registry.base_url}
        steps = [
            ("ingest", str(SEED), str(CONSTRUCTED),
             str(changed_copy(tmp_path, "recruiting", overall="RECRUITING", posted="2026-02-01"))),
            ("ingest", "--no-notify",
             str(changed_copy(tmp_path, "active", overall="ACTIVE_NOT_RECRUITING",
                              posted="2026-03-01"))),
            ("watch", "--condition", "lupus", "--name", "lupus"),
            ("watch", nct(3)),
            ("check", "--no-notify"),
        ]
        for step in steps:
            result = trialwatch(url, *step, config=config, **env)
            assert result.exit_code == 0, (step, result.output)
    assert len(hook.requests) == 1  # one alert delivered, one left pending
    return url, config, env


def table_rows(url: str) -> dict[str, list[dict[str, Any]]]:
    db = open_database(url)
    try:
        with db.engine.connect() as connection:
            return {table.name: [dict(row._mapping) for row in connection.execute(
                select(table).order_by(*table.primary_key.columns))] for table in tables()}
    finally:
        db.close()


def test_migrate_to_copies_every_row_of_every_table(source, pg_url):
    url, _config, _env = source
    result = trialwatch(url, "db", "migrate-to", pg_url)
    assert result.exit_code == 0, result.output
    assert "copied 4 trials, 7 versions, 2 events, 2 outbox alerts, 1 saved queries, " \
           "1 cycles" in result.stdout
    assert "row counts verified" in result.stdout
    before, after = table_rows(url), table_rows(pg_url)
    assert {name: len(rows) for name, rows in after.items()} == \
        {name: len(rows) for name, rows in before.items()}
    assert after == before  # values too: JSON documents, raw bytes, UTC times, flags


def test_after_migrate_to_the_commands_answer_the_same_from_postgresql(source, pg_url):
    url, config, env = source
    assert trialwatch(url, "db", "migrate-to", pg_url).exit_code == 0
    for command in (["history", NCT, "--json"], ["diff", NCT, "--from", "1", "--to", "4",
                                                 "--json"],
                    ["list", "--json"], ["outbox", "list", "--all", "--json"]):
        old = trialwatch(url, *command, config=config, **env)
        new = trialwatch(pg_url, *command, config=config, **env)
        assert (new.exit_code, new.stdout) == (old.exit_code, old.stdout), command


def test_postgresql_continues_the_ids_after_migrate_to(source, pg_url, tmp_path, hook):
    url, config, env = source
    assert trialwatch(url, "db", "migrate-to", pg_url).exit_code == 0
    completed = changed_copy(tmp_path, "completed", overall="COMPLETED", posted="2026-04-01")
    result = trialwatch(pg_url, "ingest", "--json", str(completed), config=config, **env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["records"][0]["version"] == 5
    rows = table_rows(pg_url)
    assert len({row["id"] for row in rows["events"]}) == 3
    # the pending alert from SQLite went out with the new one: each once, ids unique
    assert len({r.headers["webhook-id"] for r in hook.requests}) == len(hook.requests) == 3


def test_a_target_that_is_not_empty_is_refused_and_left_alone(source, pg_url):
    url, _config, _env = source
    assert trialwatch(url, "db", "migrate-to", pg_url).exit_code == 0
    before = table_rows(pg_url)
    again = trialwatch(url, "db", "migrate-to", pg_url)
    assert again.exit_code == 2
    assert again.stderr.count("\n") == 1 and "not empty" in again.stderr
    assert table_rows(pg_url) == before


def test_a_target_at_schema_head_with_no_rows_counts_as_empty(source, pg_url):
    url, _config, _env = source
    assert trialwatch(pg_url, "db", "upgrade").exit_code == 0  # the README's set-up order
    assert trialwatch(pg_url, "status").exit_code == 0
    result = trialwatch(url, "db", "migrate-to", pg_url)
    assert result.exit_code == 0, result.output
    assert table_rows(pg_url) == table_rows(url)


def test_a_target_with_rows_is_refused_naming_a_table_that_has_them(source, pg_url):
    url, _config, _env = source
    assert trialwatch(pg_url, "ingest", "--no-notify", str(SEED)).exit_code == 0
    before = table_rows(pg_url)
    refused = trialwatch(url, "db", "migrate-to", pg_url)
    assert refused.exit_code == 2 and refused.stderr.count("\n") == 1
    assert "not empty (table trials has 1 row;" in refused.stderr
    assert table_rows(pg_url) == before


def test_a_row_the_target_refuses_rolls_the_whole_copy_back(source, pg_url):
    url, _config, _env = source
    with sqlite3.connect(url.removeprefix("sqlite:///")) as connection:  # SQLite ignores
        connection.execute("UPDATE trials SET overall_status = ? WHERE nct_id = ?",  # lengths
                           ("X" * 100, nct(3)))
    result = trialwatch(url, "db", "migrate-to", pg_url)
    assert result.exit_code == 2
    assert result.stderr.startswith("trialwatch: error: migrate-to ")
    assert "table trials" in result.stderr and result.stderr.count("\n") == 1
    db = open_database(pg_url)
    try:
        assert is_empty(db)  # not even the schema: it was created in the same transaction
    finally:
        db.close()


def test_an_outdated_source_or_a_bad_target_is_a_one_line_error(tmp_path, pg_url):
    old = f"sqlite:///{tmp_path / 'old.db'}"
    db = open_database(old)
    with db.engine.begin() as connection:
        upgrade_connection(connection, "0001")
    db.close()
    outdated = trialwatch(old, "db", "migrate-to", pg_url)
    assert outdated.exit_code == 2 and "trialwatch db upgrade" in outdated.stderr
    empty = trialwatch(f"sqlite:///{tmp_path / 'none.db'}", "db", "migrate-to", pg_url)
    assert empty.exit_code == 2 and "nothing to migrate" in empty.stderr
    assert trialwatch(old, "db", "upgrade").exit_code == 0
    for target in ("postgresql://postgres@127.0.0.1:1/nowhere", "nosuchdb://x"):
        refused = trialwatch(old, "db", "migrate-to", target)
        assert refused.exit_code == 2, refused.output
        assert refused.stderr.startswith("trialwatch: error: ")
        assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.output
