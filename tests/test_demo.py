"""``trialwatch demo``: the shipped seed and its two constructed later versions, stored in
order, their changes delivered to a console channel, without touching the user's database.

Each test runs the real command line (click's ``CliRunner``) with ``HOME`` pointed at an empty
folder, so the default database and the demo's own ``demo.db`` are new files.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from trialwatch.monitor.cli import cli

SEED = Path(__file__).resolve().parents[1] / "seeds" / "NCT07328581.txt"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "home"
    folder.mkdir()
    monkeypatch.setenv("HOME", str(folder))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    for name in ("TRIALWATCH_DB", "TRIALWATCH_LOG_LEVEL", "TRIALWATCH_LOG_FORMAT"):
        monkeypatch.delenv(name, raising=False)
    return folder


def trialwatch(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def versions(db_file: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(db_file) as conn:
        return list(conn.execute("SELECT v.version, t.overall_status FROM versions v "
                                 "JOIN trials t ON t.id = v.trial_id ORDER BY v.version"))


def test_demo_stores_three_versions_in_its_own_database(home: Path) -> None:
    result = trialwatch("demo")
    assert result.exit_code == 0, result.output
    demo_db = home / ".local" / "share" / "trialwatch" / "demo.db"
    assert [v for v, _ in versions(demo_db)] == [1, 2, 3]
    assert not (home / ".local" / "share" / "trialwatch" / "trialwatch.db").exists()


def test_demo_prints_each_status_change_as_a_console_alert(home: Path) -> None:
    out = trialwatch("demo").output
    assert ("[trialwatch] NCT07328581 — Recruitment status: Not yet recruiting → Recruiting"
            in out)
    assert "  * [high] Recruitment status: Recruiting → Completed" in out
    assert "  * [high] Results first posted" in out


def test_demo_ends_with_the_commands_that_look_further(home: Path) -> None:
    tail = trialwatch("demo").output.rstrip().splitlines()[-3:]
    assert tail == [
        "  trialwatch --db ~/.local/share/trialwatch/demo.db diff NCT07328581 --from 1 --to 3",
        "  trialwatch --db ~/.local/share/trialwatch/demo.db history NCT07328581",
        "  trialwatch --db ~/.local/share/trialwatch/demo.db serve     "
        "(then open http://127.0.0.1:8080/)"]


def test_demo_run_again_starts_afresh_and_says_the_same(home: Path) -> None:
    first = trialwatch("demo").output
    second = trialwatch("demo").output
    strip_ids = [line for line in first.splitlines() if "msg_" not in line]
    assert strip_ids == [line for line in second.splitlines() if "msg_" not in line]
    assert "Recruiting → Completed" in second


def test_demo_on_a_named_database_that_holds_the_trial_is_refused(home: Path,
                                                                  tmp_path: Path) -> None:
    db_file = tmp_path / "mine.db"
    assert trialwatch("--db", str(db_file), "ingest", str(SEED)).exit_code == 0
    result = CliRunner().invoke(cli, ["--db", str(db_file), "demo"])
    assert result.exit_code == 2
    assert "already holds NCT07328581" in result.output
    assert [v for v, _ in versions(db_file)] == [1]


def test_demo_on_a_new_named_database_uses_it(home: Path, tmp_path: Path) -> None:
    db_file = tmp_path / "trial.db"
    result = trialwatch("--db", str(db_file), "demo")
    assert result.exit_code == 0, result.output
    assert versions(db_file)[-1] == (3, "COMPLETED")
    assert f"  trialwatch --db {db_file} history NCT07328581" in result.output
