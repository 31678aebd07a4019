"""``trialwatch export events|trials|versions``: what is stored, as CSV, JSON lines or JSON,
filtered by time, kind and trial, read from a real SQLite file built by ``ingest``.

Memory staying flat for 100,000 events is measured in ``bench/export_memory.py``.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from docmaker import (
    SEED_JSON,
    SEED_PAGE,
    add_criterion,
    new_registry_day,
    set_enrollment,
    set_status,
    study,
    write,
)

from trialwatch.monitor.cli import cli

NCT = "NCT07328581"
EVENT_COLUMNS = ["nct_id", "kind", "field", "old", "new", "days", "percent", "severity",
                 "from_version", "to_version", "detected_at", "summary", "historical"]


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """The seed trial in three versions: the page, its API JSON, then recruiting with a new
    criterion and a changed enrollment (three events, one of them with table values)."""
    url = f"sqlite:///{tmp_path / 'tw.db'}"
    changed = new_registry_day(add_criterion(set_enrollment(set_status(
        study(SEED_JSON), "RECRUITING"), 24, "ACTUAL"), "exclusion", "New exclusion here."),
        "2026-02-01")
    for path in (SEED_PAGE, write(study(SEED_JSON), tmp_path / "api.json"),
                 write(changed, tmp_path / "recruiting.json")):
        result = trialwatch(url, "ingest", "--no-notify", str(path))
        assert result.exit_code == 0, result.output
    return url


def trialwatch(url: str, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--db", url, *args], env={"TRIALWATCH_DB": None})


def export(url: str, *args: str) -> str:
    result = trialwatch(url, "export", *args)
    assert result.exit_code == 0, result.output
    return result.stdout


def history_events(url: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = json.loads(export_history(url))["events"]
    return events


def export_history(url: str) -> str:
    result = trialwatch(url, "history", NCT, "--json")
    assert result.exit_code == 0, result.output
    return result.stdout


def test_events_csv_has_a_header_and_one_row_per_stored_event(db_url: str) -> None:
    rows = list(csv.reader(io.StringIO(export(db_url, "events"))))
    assert rows[0] == EVENT_COLUMNS
    stored = history_events(db_url)
    assert len(rows) - 1 == len(stored) >= 3
    assert sorted(row[11] for row in rows[1:]) == sorted(e["summary"] for e in stored)


def test_csv_writes_non_plain_values_as_json_text(db_url: str) -> None:
    rows = list(csv.DictReader(io.StringIO(export(db_url, "events"))))
    enrollment = next(row for row in rows if row["kind"] == "enrollment")
    assert isinstance(json.loads(enrollment["new"]), dict)
    assert json.loads(enrollment["new"]) == next(
        e["new"] for e in history_events(db_url) if e["kind"] == "enrollment")
    assert enrollment["percent"] == "20.0" and enrollment["days"] == ""
    status = next(row for row in rows if row["kind"] == "status")
    assert (status["old"], status["new"]) == ("NOT_YET_RECRUITING", "RECRUITING")
    assert status["historical"] == "false" and status["detected_at"].endswith("Z")


def test_ndjson_events_are_the_design_event_json_plus_historical(db_url: str) -> None:
    lines = export(db_url, "events", "--format", "ndjson").splitlines()
    exported = [json.loads(line) for line in lines]
    assert all(event.pop("historical") is False for event in exported)
    key = lambda e: e["summary"]  # noqa: E731
    assert sorted(exported, key=key) == sorted(history_events(db_url), key=key)


def test_json_is_one_array_of_the_ndjson_objects(db_url: str) -> None:
    as_array = json.loads(export(db_url, "events", "--format", "json"))
    as_lines = [json.loads(line) for line in
                export(db_url, "events", "--format", "ndjson").splitlines()]
    assert as_array == as_lines


def test_kind_keeps_only_events_of_that_kind(db_url: str) -> None:
    lines = export(db_url, "events", "--kind", "status", "--kind", "eligibility",
                   "--format", "ndjson").splitlines()
    assert sorted(json.loads(line)["kind"] for line in lines) == ["eligibility", "status"]


def test_since_keeps_events_detected_at_or_after_it(db_url: str) -> None:
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as connection:
        connection.execute("UPDATE events SET detected_at = '2026-01-01 00:00:00.000000' "
                           "WHERE kind != 'status'")
    lines = export(db_url, "events", "--since", "2026-06-01", "--format", "ndjson")
    assert [json.loads(line)["kind"] for line in lines.splitlines()] == ["status"]
    everything = export(db_url, "events", "--since", "2025-12-31T23:00:00Z", "--format",
                        "ndjson")
    assert len(everything.splitlines()) == len(history_events(db_url))


def test_trial_keeps_only_that_trials_rows(db_url: str, tmp_path: Path) -> None:
    other = study("NCT03934567")
    result = trialwatch(db_url, "ingest", "--no-notify",
                        str(write(other, tmp_path / "other.json")))
    assert result.exit_code == 0, result.output
    trials = list(csv.DictReader(io.StringIO(export(db_url, "trials"))))
    assert [row["nct_id"] for row in trials] == ["NCT03934567", NCT]
    only = list(csv.DictReader(io.StringIO(export(db_url, "versions", "--trial", NCT))))
    assert [(row["nct_id"], row["version"]) for row in only] == [(NCT, "1"), (NCT, "2"),
                                                                  (NCT, "3")]


def test_trials_rows_say_status_version_and_whether_removed(db_url: str) -> None:
    (row,) = csv.DictReader(io.StringIO(export(db_url, "trials")))
    assert row["nct_id"] == NCT and row["status"] == "RECRUITING"
    assert row["latest_version"] == "3" and row["removed"] == "false"
    assert row["removed_at"] == ""


def test_versions_with_records_carry_the_canonical_record(db_url: str) -> None:
    lines = export(db_url, "versions", "--with-records", "--format", "ndjson").splitlines()
    versions = [json.loads(line) for line in lines]
    assert [v["version"] for v in versions] == [1, 2, 3]
    assert versions[-1]["record"]["nct_id"] == NCT
    hashes = json.loads(export_history(db_url))["versions"]
    assert [v["content_hash"] for v in versions] == [v["content_hash"] for v in hashes]


def test_an_empty_database_exports_a_header_or_an_empty_array(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    assert export(url, "events") == ",".join(EVENT_COLUMNS) + "\n"
    assert json.loads(export(url, "trials", "--format", "json")) == []
    assert export(url, "versions", "--format", "ndjson") == ""


@pytest.mark.parametrize(("args", "message"), [
    (["events", "--since", "yesterday"], "--since yesterday: not a date"),
    (["trials", "--kind", "status"], "--kind selects events"),
    (["events", "--kind", "statuss"], "--kind statuss: unknown event kind"),
    (["events", "--trial", "NCT123"], "--trial NCT123: not an NCT ID"),
    (["events", "--with-records"], "--with-records applies to versions"),
])
def test_bad_options_are_one_line_errors(tmp_path: Path, args: list[str], message: str) -> None:
    completed = subprocess.run(
        [str(Path(sys.executable).parent / "trialwatch"), "--db",
         f"sqlite:///{tmp_path / 'tw.db'}", "export", *args],
        capture_output=True, text=True, timeout=60)
    assert completed.returncode == 2 and completed.stdout == ""
    assert completed.stderr.count("\n") == 1 and message in completed.stderr


def test_a_reader_that_stops_early_is_not_an_error(db_url: str) -> None:
    trialwatch_bin = str(Path(sys.executable).parent / "trialwatch")
    completed = subprocess.run(
        f"{trialwatch_bin} --db {db_url} export events | head -1", shell=True,
        capture_output=True, text=True, timeout=60)
    assert completed.stdout.splitlines() == [",".join(EVENT_COLUMNS)]
    assert "error" not in completed.stderr
