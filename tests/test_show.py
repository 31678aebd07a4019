"""``trialwatch show``: what trialwatch thinks a record says, stored or from files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result
from docmaker import SEED_JSON, SEED_PAGE, fixture_path, set_status, study, write

from trialwatch.monitor.cli import cli

ENV = {"TRIALWATCH_DB": None, "TRIALWATCH_LOG_FORMAT": None, "TRIALWATCH_LOG_LEVEL": None}


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner(env=ENV)

    def invoke(*args: str | Path) -> Result:
        argv = ["--db", f"sqlite:///{tmp_path / 'tw.db'}", *map(str, args)]
        return runner.invoke(cli, argv)

    return invoke


def test_show_files_as_json_needs_no_database(run: Any, tmp_path: Path) -> None:
    result = run("show", fixture_path(SEED_JSON), "--json")
    assert result.exit_code == 0, result.output
    [shown] = orjson.loads(result.stdout)
    assert (shown["nct_id"], shown["version"]) == ("NCT07328581", None)
    assert shown["source"] == str(fixture_path(SEED_JSON))
    inclusion = shown["record"]["eligibility"]["inclusion"]
    assert inclusion and all("text" in item for item in inclusion)
    assert shown["record"]["status"]["overall_status"] == "NOT_YET_RECRUITING"
    assert not (tmp_path / "tw.db").exists()


def test_show_a_folder_lists_every_record(run: Any, tmp_path: Path) -> None:
    folder = tmp_path / "records"
    folder.mkdir()
    write(study(SEED_JSON), folder / "a.json")
    (folder / "b.txt").write_text(SEED_PAGE.read_text())
    shown = orjson.loads(run("show", folder, "--json").stdout)
    assert [s["source"] for s in shown] == [str(folder / "a.json"), str(folder / "b.txt")]


def test_show_stored_versions(run: Any, tmp_path: Path) -> None:
    assert run("ingest", fixture_path(SEED_JSON)).exit_code == 0
    recruiting = write(set_status(study(SEED_JSON), "RECRUITING"), tmp_path / "r.json")
    assert run("ingest", recruiting).exit_code == 0
    [latest] = orjson.loads(run("show", "NCT07328581", "--json").stdout)
    assert latest["version"] == 2
    assert latest["source"] == f"file:{recruiting}"
    assert latest["record"]["status"]["overall_status"] == "RECRUITING"
    [first] = orjson.loads(run("show", "NCT07328581", "--version", "1", "--json").stdout)
    assert first["record"]["status"]["overall_status"] == "NOT_YET_RECRUITING"


def test_show_without_json_prints_readable_sections(run: Any) -> None:
    result = run("show", fixture_path(SEED_JSON))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"NCT07328581  ({fixture_path(SEED_JSON)})"
    assert "  eligibility" in lines
    assert "    overall_status: NOT_YET_RECRUITING" in lines
    assert any(line.startswith("    inclusion (") for line in lines)
    assert any(line.startswith("      - ") for line in lines)


def test_show_unknown_trial_is_one_line_error(run: Any) -> None:
    result = run("show", "NCT09999999")
    assert result.exit_code == 2
    assert result.stderr.strip() == \
        "trialwatch: error: NCT09999999: no stored versions (watch or ingest it first)"


def test_show_missing_version_is_one_line_error(run: Any) -> None:
    assert run("ingest", fixture_path(SEED_JSON)).exit_code == 0
    result = run("show", "NCT07328581", "--version", "5")
    assert result.exit_code == 2
    assert "no version 5 (latest is 1)" in result.stderr


def test_show_bad_file_names_it(run: Any, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    result = run("show", bad)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"trialwatch: error: {bad}: invalid JSON")


def test_version_is_refused_with_files(run: Any) -> None:
    result = run("show", fixture_path(SEED_JSON), "--version", "1")
    assert result.exit_code == 2
    assert "--version" in result.stderr
