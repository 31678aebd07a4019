"""Bad input, as users meet it: one line on stderr naming the input and the problem, a
non-zero exit, no traceback, and nothing half-written in the database.

Each case runs through click's ``CliRunner`` and, for the exact contract of the installed
command (``main()`` turns errors into one line and an exit code), also as a real subprocess
of the ``trialwatch`` console script.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner, Result
from docmaker import SEED_JSON, SEED_PAGE, fixture_path, study, truncated, write

from trialwatch.monitor.cli import cli

TRIALWATCH = Path(sys.executable).parent / "trialwatch"


@dataclass(frozen=True)
class BadFile:
    name: str  # file name in tmp_path
    make: Callable[[Path], None]  # writes the bad file at the given path
    problem: str  # what the one-line message must say


def _bytes(data: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(data) and None


def _seed_with(old: str, new: str) -> Callable[[Path], None]:
    text = SEED_PAGE.read_text(encoding="utf-8")
    assert old in text
    return _bytes(text.replace(old, new).encode())


def _json_with_nct_id(nct_id: str) -> Callable[[Path], None]:
    doc = study(SEED_JSON)
    doc["protocolSection"]["identificationModule"]["nctId"] = nct_id
    return lambda path: write(doc, path) and None


BAD_FILES = [
    BadFile("empty.json", _bytes(b""), "empty file"),
    BadFile("blank.txt", _bytes(b"  \n\n\t\n"), "empty file"),
    BadFile("scan.json", _bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00"),
            "binary file"),
    BadFile("latin1.txt", _bytes(SEED_PAGE.read_bytes().replace("≥".encode(), b"\xb3")),
            "invalid UTF-8"),
    BadFile("cut.json", _bytes(truncated("NCT03934567")), "invalid JSON"),
    BadFile("other.json", _bytes(b'{"nctId": "NCT07328581", "title": "x"}'),
            "not a ClinicalTrials.gov study"),
    BadFile("numbers.json", _bytes(b"[1, 2, 3]"), "not a ClinicalTrials.gov study"),
    BadFile("no-id.txt", _seed_with("NCT ID: NCT07328581\n", ""), "no \"NCT ID"),
    BadFile("short-id.txt", _seed_with("NCT ID: NCT07328581", "NCT ID: NCT0732858"),
            "invalid NCT ID 'NCT0732858'"),
    BadFile("bad-id.json", _json_with_nct_id("NCT-7328581"), "invalid NCT ID 'NCT-7328581'"),
    BadFile("no-id.json", _json_with_nct_id(""), "no NCT ID"),
]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("TRIALWATCH_"):
            monkeypatch.delenv(name)
    return tmp_path


def db_url(home: Path) -> str:
    return f"sqlite:///{home / 'tw.db'}"


def invoke(home: Path, *args: str | Path) -> Result:
    argv = ["--db", db_url(home), *(str(a) for a in args)]
    return CliRunner().invoke(cli, argv, catch_exceptions=False)


def run(home: Path, *args: str | Path, db: str | None = None) -> subprocess.CompletedProcess[str]:
    """The installed console script, as a user's shell runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIALWATCH_")}
    env["TRIALWATCH_DB"] = db or db_url(home)
    return subprocess.run([str(TRIALWATCH), *(str(a) for a in args)], cwd=home, env=env,
                          capture_output=True, text=True, timeout=60)


def rows(home: Path, table: str) -> int:
    path = home / "tw.db"
    if not path.exists():
        return 0
    with sqlite3.connect(path) as connection:
        return int(connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def assert_one_line_error(stderr: str, *fragments: str) -> None:
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("trialwatch: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


# --------------------------------------------------------------------------- ingest: one bad file


@pytest.mark.parametrize("bad", BAD_FILES, ids=lambda b: b.name)
def test_bad_file_is_one_line_error_and_no_rows(home: Path, bad: BadFile) -> None:
    path = home / bad.name
    bad.make(path)
    result = invoke(home, "ingest", path)
    assert result.exit_code != 0
    assert_one_line_error(result.stderr, str(path), bad.problem)
    assert result.stdout == ""
    assert (rows(home, "trials"), rows(home, "versions"), rows(home, "events")) == (0, 0, 0)


@pytest.mark.parametrize("bad", BAD_FILES, ids=lambda b: b.name)
def test_bad_file_through_the_console_script(home: Path, bad: BadFile) -> None:
    bad.make(home / bad.name)
    done = run(home, "ingest", bad.name, "--json")
    assert done.returncode == 1
    assert_one_line_error(done.stderr, bad.name, bad.problem)
    assert orjson.loads(done.stdout) == {"records": [], "events": []}
    assert rows(home, "trials") == 0


def test_missing_path_is_one_line_error(home: Path) -> None:
    done = run(home, "ingest", "nowhere/NCT07328581.json")
    assert done.returncode == 1
    assert_one_line_error(done.stderr, "nowhere/NCT07328581.json", "does not exist")
    assert rows(home, "trials") == 0


def test_folder_with_one_bad_file_ingests_the_good_ones_then_fails(home: Path) -> None:
    folder = home / "records"
    folder.mkdir()
    for name in ("NCT00184067", "NCT03934567"):
        (folder / f"{name}.json").write_bytes(fixture_path(name).read_bytes())
    (folder / "NCT06323538.json").write_bytes(truncated("NCT06323538"))
    done = run(home, "ingest", "records", "--json")
    assert done.returncode == 1
    assert_one_line_error(done.stderr, "records/NCT06323538.json", "invalid JSON")
    out = orjson.loads(done.stdout)
    assert [r["nct_id"] for r in out["records"]] == ["NCT00184067", "NCT03934567"]
    with sqlite3.connect(home / "tw.db") as connection:
        stored = connection.execute("SELECT nct_id FROM trials ORDER BY nct_id").fetchall()
    assert stored == [("NCT00184067",), ("NCT03934567",)]
    assert rows(home, "versions") == 2


def test_good_and_bad_paths_together_store_the_good_one(home: Path) -> None:
    bad = home / "empty.json"
    bad.write_bytes(b"")
    result = invoke(home, "ingest", bad, SEED_PAGE, "--json")
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, str(bad), "empty file")
    assert orjson.loads(result.stdout)["records"] == [
        {"nct_id": "NCT07328581", "version": 1, "changed": True}]


def test_page_with_one_bad_study_stores_none_of_its_studies(home: Path) -> None:
    page = orjson.loads(fixture_path("page_example_full").read_bytes())
    page["studies"][1]["protocolSection"]["identificationModule"]["nctId"] = "NCT3934567"
    path = home / "page.json"
    write(page, path)
    result = invoke(home, "ingest", path)
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, str(path), "studies[1]", "invalid NCT ID")
    assert rows(home, "trials") == 0


# --------------------------------------------------------------------------- diff errors: exit 2


def test_diff_with_a_bad_file_exits_2(home: Path) -> None:
    (home / "cut.json").write_bytes(truncated("NCT03934567"))
    done = run(home, "diff", "cut.json", str(fixture_path("NCT03934567")))
    assert done.returncode == 2
    assert_one_line_error(done.stderr, "cut.json", "invalid JSON")
    assert done.stdout == ""


def test_diff_files_of_two_trials_exits_2(home: Path) -> None:
    done = run(home, "diff", str(fixture_path("NCT00184067")), str(fixture_path("NCT03934567")))
    assert done.returncode == 2
    assert_one_line_error(done.stderr, "NCT00184067", "NCT03934567")


def test_diff_unknown_trial_exits_2(home: Path) -> None:
    done = run(home, "diff", "NCT99999999", "--json")
    assert done.returncode == 2
    assert_one_line_error(done.stderr, "NCT99999999", "no stored versions")
    assert done.stdout == ""


def test_diff_missing_version_exits_2(home: Path) -> None:
    run(home, "ingest", str(SEED_PAGE))
    done = run(home, "diff", "NCT07328581", "--from", "1", "--to", "5")
    assert done.returncode == 2
    assert_one_line_error(done.stderr, "NCT07328581", "no version 5")


def test_diff_argument_neither_nct_id_nor_file_exits_2(home: Path) -> None:
    done = run(home, "diff", "NCT123")
    assert done.returncode == 2
    assert_one_line_error(done.stderr, "NCT123", "not an NCT ID")


def test_history_of_unknown_trial_is_one_line_error(home: Path) -> None:
    done = run(home, "history", "NCT99999999")
    assert done.returncode == 2
    assert_one_line_error(done.stderr, "NCT99999999")


# --------------------------------------------------------------------------- unusable databases


@pytest.mark.parametrize("make_url", [
    lambda home: "nonsense://nowhere",
    lambda home: f"sqlite:///{home / 'a-file' / 'tw.db'}",
    lambda home: f"sqlite:///{home / 'notes.txt'}",
], ids=["unknown-dialect", "folder-is-a-file", "not-a-database"])
def test_unusable_database_url_is_one_line_error(home: Path, make_url: Callable[[Path], str]
                                                 ) -> None:
    (home / "a-file").write_text("a file, not a folder\n")
    (home / "notes.txt").write_text("these are notes, not a database\n" * 100)
    done = run(home, "list", db=make_url(home))
    assert done.returncode == 2
    assert_one_line_error(done.stderr, "database")
    assert (home / "notes.txt").read_text() == "these are notes, not a database\n" * 100


def test_unusable_db_option_is_one_line_error(home: Path) -> None:
    result = CliRunner().invoke(cli, ["--db", "nonsense://nowhere", "list"],
                                catch_exceptions=False)
    assert result.exit_code == 2
    assert_one_line_error(result.stderr, "nonsense://nowhere")


def test_database_password_is_not_shown_in_errors(home: Path) -> None:
    done = run(home, "list", db="postgresql://alice:s3cr3t-pw@127.0.0.1:9/trialwatch")
    assert done.returncode == 2
    assert_one_line_error(done.stderr, "database")
    assert "s3cr3t-pw" not in done.stderr


def test_empty_db_option_is_one_line_error_naming_the_option(home: Path) -> None:
    result = CliRunner().invoke(cli, ["--db", " ", "list"], catch_exceptions=False)
    assert result.exit_code == 2
    assert_one_line_error(result.stderr, "--db", "database URL is empty")


def test_reading_a_database_named_by_db_does_not_need_a_valid_configuration_file(
        home: Path) -> None:
    assert run(home, "ingest", str(SEED_PAGE)).returncode == 0
    (home / "trialwatch.toml").write_text('[schedule]\ninterval = "often"\n')
    done = run(home, "history", "NCT07328581", "--json")
    assert done.returncode == 0, done.stderr
    assert [v["version"] for v in orjson.loads(done.stdout)["versions"]] == [1]
    refused = run(home, "check")
    assert refused.returncode == 2
    assert_one_line_error(refused.stderr, "trialwatch.toml", "schedule.interval")
