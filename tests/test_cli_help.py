"""How the command line explains itself: the help a user reads and the usage errors.

Bare ``trialwatch`` and its groups print the ordinary multi-line help; command lists give
whole sentences that fit on their line; help text carries no reST or Markdown markup;
examples and "Exit status" stand in paragraphs of their own; usage errors are one line
that ends by naming the help to read. The installed console script is run as a
subprocess, so what is checked is exactly what a user sees.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TRIALWATCH = Path(sys.executable).parent / "trialwatch"
GROUPS = ["", "outbox", "db", "notify"]
COMMANDS = ["demo", "watch", "unwatch", "list", "ingest", "check", "run", "diff", "history",
            "notify", "notify test", "outbox", "outbox list", "outbox retry", "status", "db",
            "db upgrade", "db migrate-to", "backfill", "serve", "feed"]


def trialwatch(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIALWATCH_")}
    env.update(HOME=str(home), COLUMNS="80")
    return subprocess.run([str(TRIALWATCH), *args], capture_output=True, text=True, env=env,
                          cwd=home, timeout=60)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("home")


def command_rows(help_text: str) -> list[str]:
    return help_text.split("Commands:\n", 1)[1].rstrip("\n").splitlines()


@pytest.mark.parametrize("group", GROUPS)
def test_a_group_without_a_command_prints_its_multi_line_help(group: str, home: Path) -> None:
    result = trialwatch(*group.split(), home=home)
    assert result.returncode == 0
    assert result.stderr == ""
    assert result.stdout.startswith(f"Usage: trialwatch {group} ".replace("  ", " "))
    assert "\nCommands:\n" in result.stdout
    assert result.stdout.count("\n") > 6


@pytest.mark.parametrize("group", GROUPS)
def test_command_summaries_are_whole_sentences_on_one_line_each(group: str,
                                                                home: Path) -> None:
    rows = command_rows(trialwatch(*group.split(), "--help", home=home).stdout)
    for row in rows:
        assert not row.startswith("    "), f"summary wraps: {row!r}"
        assert row.rstrip().endswith("."), row
        assert "..." not in row


@pytest.mark.parametrize("command", COMMANDS)
def test_help_has_no_markup(command: str, home: Path) -> None:
    text = trialwatch(*command.split(), "--help", home=home).stdout
    assert "``" not in text and "`" not in text


@pytest.mark.parametrize("command", ["diff", "backfill"])
def test_exit_status_and_examples_stand_in_their_own_paragraphs(command: str,
                                                               home: Path) -> None:
    text = trialwatch(command, "--help", home=home).stdout
    assert "\n\n  Examples:\n    trialwatch " in text
    assert "\n\n  Exit status: " in text


def test_history_kind_help_lists_every_kind(home: Path) -> None:
    from trialwatch.monitor.events import KINDS

    text = " ".join(trialwatch("history", "--help", home=home).stdout.split())
    assert ", ".join(KINDS) in text


@pytest.mark.parametrize(("args", "command"), [
    (["diff"], "trialwatch diff"),
    (["diff", "a", "b", "c"], "trialwatch diff"),
    (["list", "--bogus"], "trialwatch list"),
    (["watch"], "trialwatch watch"),
    (["outbox", "retry"], "trialwatch outbox retry"),
    (["nonsense"], "trialwatch"),
])
def test_a_usage_error_is_one_line_that_ends_with_where_the_help_is(
        args: list[str], command: str, home: Path) -> None:
    result = trialwatch(*args, home=home)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("trialwatch: error: ")
    assert lines[0].endswith(f"Try '{command} --help'")


def test_watch_query_confirms_in_words(home: Path, tmp_path: Path) -> None:
    db = tmp_path / "tw.db"
    result = trialwatch("--db", str(db), "watch", "--query", "lung cancer", home=home)
    assert result.stdout == 'saved search lung-cancer: term "lung cancer"\n'
    again = trialwatch("--db", str(db), "watch", "--query", "lung cancer", "--condition",
                       "nsclc", "--name", "lung-cancer", home=home)
    assert again.stdout == ('saved search lung-cancer updated: term "lung cancer", '
                            'condition "nsclc"\n')


def test_human_diff_lists_the_most_severe_changes_first(home: Path) -> None:
    seeds = Path(__file__).resolve().parents[1] / "seeds"
    result = trialwatch("diff", str(seeds / "NCT07328581.txt"),
                        str(seeds / "demo" / "NCT07328581-3-completed.txt"), home=home)
    severities = [line.split()[1] for line in result.stdout.splitlines()[1:]]
    assert severities == sorted(severities, key=["high", "medium", "low"].index)
    assert severities[:2] == ["high", "high"]
