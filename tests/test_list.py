"""``trialwatch list``: what am I watching? A table with a header and a legend, filters, saved
searches, removed trials marked, and trials that no cycle has checked yet.

Each test runs the real command line (click's ``CliRunner``) on a SQLite file in
``tmp_path``, filled by the real commands (``ingest`` of the shipped seed and its demo
versions, ``watch --offline``) and, for a removal, by the function a cycle calls.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result
from docmaker import fixture_path

from trialwatch.monitor.cli import cli
from trialwatch.monitor.versioning import record_removal
from trialwatch.storage import repository as repo
from trialwatch.storage.engine import open_database

SEEDS = Path(__file__).resolve().parents[1] / "seeds"
VERSIONS = [SEEDS / "NCT07328581.txt", SEEDS / "demo" / "NCT07328581-2-recruiting.txt",
            SEEDS / "demo" / "NCT07328581-3-completed.txt"]
ENV = {"TRIALWATCH_DB": None, "TRIALWATCH_LOG_LEVEL": None, "TRIALWATCH_LOG_FORMAT": None}


class Tw:
    def __init__(self, tmp_path: Path) -> None:
        self.url = f"sqlite:///{tmp_path / 'tw.db'}"

    def __call__(self, *args: str | Path, exit_code: int = 0) -> Result:
        result = CliRunner(env=ENV).invoke(cli, ["--db", self.url, *map(str, args)])
        assert result.exit_code == exit_code, (result.stdout, result.stderr)
        return result

    def lines(self, *args: str) -> list[str]:
        return self("list", *args).stdout.splitlines()

    def json(self, *args: str) -> Any:
        return orjson.loads(self(*args, "--json").stdout)


@pytest.fixture
def tw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Tw:
    monkeypatch.chdir(tmp_path)  # no stray ./trialwatch.toml
    return Tw(tmp_path)


@pytest.fixture
def stored(tw: Tw) -> Tw:
    """The seed's trial at version 3 (completed), unwatched; NCT00184067 watched."""
    tw("ingest", *VERSIONS, "--no-notify")
    tw("ingest", fixture_path("NCT00184067"), "--no-notify")
    tw("watch", "--offline", "NCT00184067")
    return tw


def test_list_has_a_header_naming_the_columns_and_a_legend(stored: Tw) -> None:
    lines = stored.lines()
    assert lines[0].split() == ["TRIAL", "STATUS", "PHASE", "VERSION", "LAST", "CHANGE",
                                "TITLE"]
    assert lines[-1].startswith("* watched, x removed from the registry")
    assert len(lines) == 4


def test_a_row_shows_status_phase_version_and_last_change(stored: Tw) -> None:
    row = next(line for line in stored.lines() if "NCT07328581" in line)
    cells = [cell.strip() for cell in row[2:].split("  ") if cell.strip()]
    assert cells[:5] == ["NCT07328581", "Completed", "Phase 1, Phase 2", "v3",
                         "2029-04-10 status"]


def test_watched_trials_are_marked_and_the_others_not(stored: Tw) -> None:
    marks = {line[2:13]: line[0] for line in stored.lines()[1:-1]}
    assert marks == {"NCT00184067": "*", "NCT07328581": " "}


def test_list_json_adds_phase_last_change_and_removed(stored: Tw) -> None:
    row = next(r for r in stored.json("list") if r["nct_id"] == "NCT07328581")
    assert row == {"nct_id": "NCT07328581",
                   "title": "BCMA-CD19 cCAR T for the Treatment of Refractory Lupus",
                   "status": "COMPLETED", "latest_version": 3, "watched": False,
                   "phase": ["PHASE1", "PHASE2"],
                   "last_change": {"date": "2029-04-10", "kind": "status", "version": 3},
                   "removed": False}


def test_a_removed_trial_is_marked_removed(stored: Tw) -> None:
    db = open_database(stored.url)
    with db.transaction() as session:
        trial = repo.trial(session, "NCT00184067")
        assert trial is not None
        record_removal(session, trial, now=datetime.now(UTC))
    db.close()
    row = next(line for line in stored.lines() if "NCT00184067" in line)
    assert row.startswith("x NCT00184067  Terminated (removed)")
    assert next(r for r in stored.json("list") if r["nct_id"] == "NCT00184067")["removed"]


@pytest.mark.parametrize("status", ["completed", "COMPLETED", "Completed"])
def test_status_filter_takes_the_status_as_written_or_as_the_registry_spells_it(
        stored: Tw, status: str) -> None:
    assert [r["nct_id"] for r in stored.json("list", "--status", status)] == ["NCT07328581"]


def test_kind_filter_keeps_trials_that_had_a_change_of_that_kind(stored: Tw) -> None:
    assert [r["nct_id"] for r in stored.json("list", "--kind", "results")] == ["NCT07328581"]
    assert stored.json("list", "--kind", "outcomes") == []


def test_watched_filter_keeps_only_watched_trials(stored: Tw) -> None:
    assert [r["nct_id"] for r in stored.json("list", "--watched")] == ["NCT00184067"]
    assert len(stored.json("list", "--all")) == 2


def test_query_filter_keeps_the_trials_a_saved_search_matched(stored: Tw) -> None:
    stored("watch", "--query", "CAR-T", "--name", "cart")
    assert stored.json("list", "--query", "cart") == []
    assert stored.lines("--query", "cart") == ["No trials match."]


def test_query_filter_naming_an_unknown_search_is_an_error(stored: Tw) -> None:
    stored("watch", "--query", "CAR-T", "--name", "cart")
    result = stored("list", "--query", "lupus", exit_code=2)
    assert "--query lupus: no saved search by that name (saved: cart)" in result.stderr


def test_a_watched_trial_before_its_first_check_reads_not_checked_yet(tw: Tw) -> None:
    tw("watch", "--offline", "NCT04267848")
    row = tw.lines()[1]
    assert row.split() == ["*", "NCT04267848", "not", "checked", "yet", "-", "-", "-"]
    assert "v-" not in row and "?" not in row


def test_a_trial_declared_in_watch_is_listed_before_any_cycle(tw: Tw, tmp_path: Path) -> None:
    config = tmp_path / "trialwatch.toml"
    config.write_text('[watch]\ntrials = ["NCT04267848"]\n'
                      'queries = [{ name = "lupus-cart", term = "CAR-T", condition = "lupus" }]\n')
    rows = tw.json("--config", str(config), "list")
    assert rows == [{"nct_id": "NCT04267848", "title": None, "status": None,
                     "latest_version": None, "watched": True, "phase": None,
                     "last_change": None, "removed": False}]
    queries = tw.json("--config", str(config), "list", "--queries")
    assert queries == [{"name": "lupus-cart", "term": "CAR-T", "condition": "lupus",
                        "matches": 0, "last_run": None}]


def test_list_queries_shows_name_term_condition_matches_and_last_run(tw: Tw) -> None:
    tw("watch", "--query", "CAR-T", "--condition", "lupus", "--name", "lupus-cart")
    assert tw.lines("--queries") == [
        "NAME        TERM   CONDITION  MATCHES  LAST RUN",
        "lupus-cart  CAR-T  lupus      0        never"]
    assert tw.json("list", "--queries") == [{"name": "lupus-cart", "term": "CAR-T",
                                             "condition": "lupus", "matches": 0,
                                             "last_run": None}]


def test_list_queries_takes_no_trial_filters(tw: Tw) -> None:
    result = tw("list", "--queries", "--watched", exit_code=2)
    assert "--queries lists saved searches" in result.stderr


def test_an_empty_database_says_how_to_add_trials(tw: Tw) -> None:
    assert tw.lines() == ["No trials yet: `trialwatch watch NCT...` watches one, "
                          "`trialwatch ingest FILE` stores a record file "
                          "(or try `trialwatch demo`)."]
