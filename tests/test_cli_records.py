"""The record commands as scripts use them: ``ingest``, ``diff``, ``history``, ``list`` and
``db upgrade``, their ``--json`` shapes (DESIGN.md) and their exit codes.

Each test runs the real command line (click's ``CliRunner``) on real files against a SQLite
file in ``tmp_path``; stdout and stderr are captured separately, so ``--json`` output is
parsed exactly as a script would parse it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result
from docmaker import (
    SEED_JSON,
    SEED_PAGE,
    add_criterion,
    fixture_path,
    set_enrollment,
    set_status,
    study,
    write,
)

from trialwatch.monitor.cli import cli

ENV_CLEARED: dict[str, str | None] = {
    "TRIALWATCH_DB": None, "TRIALWATCH_LOG_FORMAT": None, "TRIALWATCH_LOG_LEVEL": None,
    "TRIALWATCH_CTGOV_URL": None, "TRIALWATCH_CTGOV_HISTORY_URL": None,
    "TRIALWATCH_DEBUG": None,
}
EVENT_KEYS = ["nct_id", "kind", "field", "old", "new", "severity", "from_version",
              "to_version", "detected_at", "summary"]


class Tw:
    """``trialwatch --db sqlite:///<tmp>/tw.db ...`` run in ``tmp_path``."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path
        self.db_path = tmp_path / "tw.db"
        self.runner = CliRunner(env=ENV_CLEARED)

    def __call__(self, *args: str | Path, db: bool = True) -> Result:
        argv = [str(a) for a in args]
        if db:
            argv = ["--db", f"sqlite:///{self.db_path}", *argv]
        return self.runner.invoke(cli, argv, catch_exceptions=False)

    def json(self, *args: str | Path, exit_code: int = 0) -> Any:
        result = self(*args, "--json")
        assert result.exit_code == exit_code, result.stderr
        return orjson.loads(result.stdout)


@pytest.fixture
def tw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Tw:
    monkeypatch.chdir(tmp_path)  # no stray ./trialwatch.toml
    return Tw(tmp_path)


@pytest.fixture
def recruiting(tmp_path: Path) -> Path:
    """The seed trial's API JSON, now recruiting with one more exclusion criterion."""
    doc = add_criterion(set_status(study(SEED_JSON), "RECRUITING"), "exclusion",
                        "Known hypersensitivity to tocilizumab")
    return write(doc, tmp_path / "recruiting.json")


# --------------------------------------------------------------------------- ingest


def test_ingest_seed_json_reports_version_1_and_no_events(tw: Tw) -> None:
    assert tw.json("ingest", SEED_PAGE) == {
        "records": [{"nct_id": "NCT07328581", "version": 1, "changed": True}], "events": []}


def test_ingest_seed_again_reports_unchanged(tw: Tw) -> None:
    tw.json("ingest", SEED_PAGE)
    assert tw.json("ingest", SEED_PAGE) == {
        "records": [{"nct_id": "NCT07328581", "version": 1, "changed": False}], "events": []}


def test_ingest_reports_the_events_of_a_new_version(tw: Tw, recruiting: Path) -> None:
    tw.json("ingest", fixture_path(SEED_JSON))
    out = tw.json("ingest", recruiting)
    assert out["records"] == [{"nct_id": "NCT07328581", "version": 2, "changed": True}]
    assert [list(e) for e in out["events"]] == [EVENT_KEYS, EVENT_KEYS]
    status, criterion = out["events"]
    assert status["summary"] == "Recruitment status: Not yet recruiting → Recruiting"
    assert (status["from_version"], status["to_version"]) == (1, 2)
    assert criterion["kind"] == "eligibility"


def test_ingest_a_folder_takes_every_record_file(tw: Tw, tmp_path: Path) -> None:
    folder = tmp_path / "records"
    folder.mkdir()
    for name in ("NCT00184067", "NCT03934567"):
        (folder / f"{name}.json").write_bytes(fixture_path(name).read_bytes())
    (folder / "seed.txt").write_bytes(SEED_PAGE.read_bytes())
    out = tw.json("ingest", folder)
    assert sorted(r["nct_id"] for r in out["records"]) == [
        "NCT00184067", "NCT03934567", "NCT07328581"]


def test_ingest_human_output_says_what_was_stored(tw: Tw, recruiting: Path) -> None:
    first = tw("ingest", fixture_path(SEED_JSON))
    assert first.exit_code == 0
    assert first.stdout == "NCT07328581  version 1  new version\n"
    second = tw("ingest", recruiting)
    assert "NCT07328581  version 2  new version" in second.stdout
    assert "Recruitment status: Not yet recruiting → Recruiting" in second.stdout


def test_json_output_is_pure_json_with_logs_on_stderr(tw: Tw, recruiting: Path) -> None:
    # A console channel printing alerts to stdout and a config warning to log:
    # neither may end up in the JSON a script reads.
    config = tw.dir / "trialwatch.toml"
    config.write_text('[database]\nurl = "postgresql://u:inline@localhost/x"\n\n'
                      '[channels.screen]\ntype = "console"\n')
    config.chmod(0o644)
    tw.json("ingest", fixture_path(SEED_JSON))
    result = tw("ingest", recruiting, "--json")
    assert result.exit_code == 0, result.stderr
    out = orjson.loads(result.stdout)
    assert out["records"][0]["version"] == 2
    assert "config.warning" in result.stderr


# --------------------------------------------------------------------------- diff


def test_diff_stored_versions_json_shape_and_exit_1_when_different(
        tw: Tw, recruiting: Path) -> None:
    tw.json("ingest", fixture_path(SEED_JSON))
    tw.json("ingest", recruiting)
    out = tw.json("diff", "NCT07328581", exit_code=1)
    assert list(out) == ["nct_id", "from_version", "to_version", "events"]
    assert (out["nct_id"], out["from_version"], out["to_version"]) == ("NCT07328581", 1, 2)
    assert [e["kind"] for e in out["events"]] == ["status", "eligibility"]
    assert all(list(e) == EVENT_KEYS for e in out["events"])


def test_diff_stored_versions_exit_0_when_equal(tw: Tw) -> None:
    tw.json("ingest", SEED_PAGE)
    tw.json("ingest", fixture_path(SEED_JSON))
    out = tw.json("diff", "NCT07328581", exit_code=0)
    assert (out["from_version"], out["to_version"], out["events"]) == (1, 2, [])


def test_diff_from_to_picks_versions(tw: Tw, tmp_path: Path, recruiting: Path) -> None:
    tw.json("ingest", SEED_PAGE)
    tw.json("ingest", fixture_path(SEED_JSON))
    tw.json("ingest", recruiting)
    out = tw.json("diff", "NCT07328581", "--from", "1", "--to", "3", exit_code=1)
    assert (out["from_version"], out["to_version"]) == (1, 3)
    assert [e["kind"] for e in out["events"]] == ["status", "eligibility"]


def test_diff_two_files_needs_no_database(tw: Tw, recruiting: Path) -> None:
    result = tw("diff", fixture_path(SEED_JSON), recruiting, "--json")
    assert result.exit_code == 1, result.stderr
    out = orjson.loads(result.stdout)
    assert (out["nct_id"], out["from_version"], out["to_version"]) == ("NCT07328581", None,
                                                                        None)
    assert [e["kind"] for e in out["events"]] == ["status", "eligibility"]
    assert all(e["from_version"] is None and e["to_version"] is None for e in out["events"])
    assert not tw.db_path.exists()


def test_diff_two_files_works_with_an_unusable_database(tw: Tw, recruiting: Path) -> None:
    result = tw.runner.invoke(cli, ["--db", "nonsense://nowhere", "diff",
                                    str(fixture_path(SEED_JSON)), str(recruiting), "--json"])
    assert result.exit_code == 1, result.stderr
    assert len(orjson.loads(result.stdout)["events"]) == 2


def test_diff_two_files_exit_0_when_equal(tw: Tw) -> None:
    result = tw("diff", SEED_PAGE, fixture_path(SEED_JSON), "--json")
    assert result.exit_code == 0, result.stderr
    assert orjson.loads(result.stdout)["events"] == []
    assert not tw.db_path.exists()


def test_diff_human_output_groups_changes(tw: Tw, tmp_path: Path) -> None:
    new = write(set_enrollment(set_status(study(SEED_JSON), "RECRUITING"), 24, "ACTUAL"),
                tmp_path / "new.json")
    result = tw("diff", fixture_path(SEED_JSON), new)
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert "(2 changes)" in lines[0]
    assert any("Enrollment: 20 → 24 (estimated → actual)" in line for line in lines[1:])


# --------------------------------------------------------------------------- history, list


def test_history_json_shape(tw: Tw, recruiting: Path) -> None:
    tw.json("ingest", SEED_PAGE)
    tw.json("ingest", fixture_path(SEED_JSON))
    tw.json("ingest", recruiting)
    out = tw.json("history", "NCT07328581")
    assert list(out) == ["nct_id", "versions", "events"]
    assert [v["version"] for v in out["versions"]] == [1, 2, 3]
    for v in out["versions"]:
        assert list(v) == ["version", "fetched_at", "source", "last_update_posted",
                           "content_hash"]
        assert v["fetched_at"].endswith("Z") and len(v["content_hash"]) == 64
        assert v["last_update_posted"] == "2026-01-09"
    assert out["versions"][0]["source"] == f"file:{SEED_PAGE}"
    assert [(e["kind"], e["from_version"], e["to_version"]) for e in out["events"]] == [
        ("status", 2, 3), ("eligibility", 2, 3)]
    assert all(list(e) == EVENT_KEYS for e in out["events"])


def test_history_kind_filters_events(tw: Tw, recruiting: Path) -> None:
    tw.json("ingest", fixture_path(SEED_JSON))
    tw.json("ingest", recruiting)
    out = tw.json("history", "NCT07328581", "--kind", "status")
    assert [e["kind"] for e in out["events"]] == ["status"]
    assert len(out["versions"]) == 2


def test_history_unknown_kind_is_an_error(tw: Tw) -> None:
    tw.json("ingest", SEED_PAGE)
    result = tw("history", "NCT07328581", "--kind", "weather")
    assert result.exit_code == 2
    assert "--kind weather" in result.stderr


def test_list_json_shape(tw: Tw) -> None:
    assert tw.json("list") == []
    tw.json("ingest", SEED_PAGE, fixture_path("NCT00184067"))
    assert tw.json("list") == [
        {"nct_id": "NCT00184067", "title": (
            "Continuation Booster Trial After a Vaccine Combining Tyrosinase/GP100/MART-1 "
            "Peptides Emulsified With Montanide ISA 51 With or Without GM-CSF for Patients "
            "With Melanoma"),
         "status": "TERMINATED", "latest_version": 1, "watched": False, "phase": ["PHASE2"],
         "last_change": None, "removed": False},
        {"nct_id": "NCT07328581",
         "title": "BCMA-CD19 cCAR T for the Treatment of Refractory Lupus",
         "status": "NOT_YET_RECRUITING", "latest_version": 1, "watched": False,
         "phase": ["PHASE1", "PHASE2"], "last_change": None, "removed": False},
    ]


# --------------------------------------------------------------------------- storage via CLI


def test_ingested_database_is_sqlite_in_wal_mode(tw: Tw) -> None:
    tw.json("ingest", SEED_PAGE)
    with sqlite3.connect(tw.db_path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_db_upgrade_on_empty_database_then_again(tw: Tw) -> None:
    first = tw("db", "upgrade")
    assert first.exit_code == 0, first.stderr
    assert "upgraded from empty" in first.stdout
    again = tw("db", "upgrade")
    assert again.exit_code == 0, again.stderr
    assert "already at revision" in again.stdout
    assert tw.json("list") == []


@pytest.mark.parametrize("command", [("list",), ("ingest", str(SEED_PAGE)),
                                     ("history", "NCT07328581"), ("diff", "NCT07328581")])
def test_outdated_schema_is_refused_naming_db_upgrade(tw: Tw, command: tuple[str, ...]) -> None:
    tw.json("ingest", SEED_PAGE)
    with sqlite3.connect(tw.db_path) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '0001'")
    result = tw(*command)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "trialwatch db upgrade" in result.stderr


def test_database_without_revision_is_refused_not_recreated(tw: Tw) -> None:
    tw.json("ingest", SEED_PAGE)
    with sqlite3.connect(tw.db_path) as connection:
        connection.execute("DELETE FROM alembic_version")
    result = tw("list")
    assert result.exit_code == 2
    assert "trialwatch db upgrade" in result.stderr


def test_db_upgrade_on_unknown_revision_is_one_line_error(tw: Tw) -> None:
    tw.json("ingest", SEED_PAGE)
    with sqlite3.connect(tw.db_path) as connection:
        connection.execute("UPDATE alembic_version SET version_num = 'zzzz'")
    result = tw("db", "upgrade")
    assert result.exit_code == 2
    assert result.stderr.startswith("trialwatch: error: ")
    assert "zzzz" in result.stderr and result.stderr.count("\n") == 1
