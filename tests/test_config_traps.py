"""Configuration mistakes users make, each caught (or understood) the way they would expect:
``kinds = "all"``, a relative SQLite URL, a channel type ``status`` used to accept, a
subscription naming a saved query that does not exist, a port written as a string."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from trialwatch.monitor.config.database_url import beside_config_file
from trialwatch.monitor.config.settings import ConfigError, load_config

TRIALWATCH = Path(sys.executable).parent / "trialwatch"
CONSOLE = '[channels.terminal]\ntype = "console"\n'


def run(cwd: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """The installed console script in ``cwd``, with no TRIALWATCH_* variable set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIALWATCH_")}
    return subprocess.run([str(TRIALWATCH), *(str(a) for a in args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def write_config(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "trialwatch.toml"
    path.write_text(text)
    return path


def test_kinds_all_as_a_string_means_every_kind(tmp_path: Path) -> None:
    path = write_config(tmp_path, CONSOLE + '[[subscriptions]]\nchannel = "terminal"\n'
                                            'kinds = "all"\n')
    config = load_config(path, env={})
    assert config.subscriptions[0].kinds == ("all",)
    assert config.subscriptions[0].matches({"kind": "locations", "severity": "low"},
                                           nct_id="NCT07328581", query_names=set())


def test_one_kind_as_a_string_is_a_list_of_that_kind(tmp_path: Path) -> None:
    path = write_config(tmp_path, CONSOLE + '[[subscriptions]]\nchannel = "terminal"\n'
                                            'kinds = "outcomes"\n')
    assert load_config(path, env={}).subscriptions[0].kinds == ("outcomes",)


def test_an_unknown_kind_as_a_string_is_still_an_error(tmp_path: Path) -> None:
    path = write_config(tmp_path, CONSOLE + '[[subscriptions]]\nchannel = "terminal"\n'
                                            'kinds = "everything"\n')
    with pytest.raises(ConfigError, match=r"subscriptions\[0\]\.kinds.*'everything'"):
        load_config(path, env={})


def test_a_relative_sqlite_url_in_a_config_file_is_beside_that_file(tmp_path: Path) -> None:
    path = write_config(tmp_path / "etc", '[database]\nurl = "sqlite:///data/tw.db"\n')
    config = load_config(path, env={})
    assert config.database.url == f"sqlite:///{tmp_path / 'etc' / 'data' / 'tw.db'}"


def test_a_bare_relative_path_in_a_config_file_is_beside_that_file(tmp_path: Path) -> None:
    path = write_config(tmp_path / "etc", '[database]\nurl = "tw.db"\n')
    assert load_config(path, env={}).database.url == f"sqlite:///{tmp_path / 'etc' / 'tw.db'}"


@pytest.mark.parametrize("url", ["sqlite:////var/lib/trialwatch/tw.db", "sqlite://",
                                 "sqlite:///:memory:",
                                 "postgresql+psycopg://trialwatch@db.example.org/trialwatch"])
def test_absolute_memory_and_server_urls_are_left_as_written(url: str) -> None:
    assert beside_config_file(url, Path("/etc/trialwatch")) == url


def test_a_relative_sqlite_url_keeps_its_query_string() -> None:
    assert (beside_config_file("sqlite:///tw.db?timeout=5", Path("/srv"))
            == "sqlite:////srv/tw.db?timeout=5")


def test_a_command_run_elsewhere_uses_the_database_beside_the_config(tmp_path: Path) -> None:
    config = write_config(tmp_path / "site", '[database]\nurl = "sqlite:///trialwatch.db"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    seed = Path(__file__).parents[1] / "seeds" / "NCT07328581.txt"
    result = run(elsewhere, "--config", config, "ingest", seed, "--no-notify")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "site" / "trialwatch.db").is_file()
    assert not (elsewhere / "trialwatch.db").exists()


def test_status_rejects_an_unknown_channel_type(tmp_path: Path) -> None:
    config = write_config(tmp_path, '[channels.team]\ntype = "slack"\n')
    result = run(tmp_path, "--config", config, "--db", f"sqlite:///{tmp_path / 'tw.db'}",
                 "status")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"trialwatch: error: {config}: channels.team.type: unknown notifier type 'slack'; "
        "known types: " + result.stderr.split("known types: ")[1].strip()]
    assert "Traceback" not in result.stderr


def test_status_checks_channel_settings_without_needing_their_secrets(tmp_path: Path) -> None:
    config = write_config(tmp_path, '[channels.hook]\ntype = "webhook"\n'
                                    'url = "https://example.org/hook"\n'
                                    'secret_env = "TW_TRAP_UNSET_SECRET"\n')
    result = run(tmp_path, "--config", config, "--db", f"sqlite:///{tmp_path / 'tw.db'}",
                 "status")
    assert result.returncode == 0, result.stderr
    assert "hook" in result.stdout


def test_a_port_written_as_a_string_is_a_type_error(tmp_path: Path) -> None:
    config = write_config(tmp_path, '[channels.mail]\ntype = "email"\nhost = "localhost"\n'
                                    'port = "587"\nfrom = "a@example.org"\n'
                                    'to = ["b@example.org"]\n')
    result = run(tmp_path, "--config", config, "--db", f"sqlite:///{tmp_path / 'tw.db'}",
                 "status")
    assert result.returncode == 2
    assert result.stderr.strip() == (f"trialwatch: error: {config}: channels.mail.port: "
                                     "Input should be a valid integer, got a string")


def test_a_subscription_naming_an_unknown_saved_query_is_an_error_naming_it(
        tmp_path: Path) -> None:
    config = write_config(tmp_path, CONSOLE + '[watch]\nqueries = [{ name = "lupus-cart", '
                                              'term = "CAR-T" }]\n[[subscriptions]]\n'
                                              'channel = "terminal"\n'
                                              'queries = ["lupus-cart", "lymphoma"]\n')
    seed = Path(__file__).parents[1] / "seeds" / "NCT07328581.txt"
    for command in (["status"], ["ingest", str(seed)]):
        result = run(tmp_path, "--config", config, "--db", f"sqlite:///{tmp_path / 'tw.db'}",
                     *command)
        assert result.returncode == 2, command
        assert result.stderr.strip() == (
            f"trialwatch: error: {config}: subscriptions[0].queries[1]: unknown saved query "
            "'lymphoma' (saved queries: lupus-cart)")


def test_a_query_saved_in_the_database_may_be_named_by_a_subscription(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'tw.db'}"
    saved = run(tmp_path, "--db", db, "watch", "--query", "lymphoma", "--name", "lymphoma",
                "--offline")
    assert saved.returncode == 0, saved.stderr
    config = write_config(tmp_path, CONSOLE + '[[subscriptions]]\nchannel = "terminal"\n'
                                              'queries = ["lymphoma"]\n')
    result = run(tmp_path, "--config", config, "--db", db, "status")
    assert result.returncode == 0, result.stderr


def test_the_readme_run_example_names_a_config_file_that_ships() -> None:
    repo = Path(__file__).parents[1]
    readme = (repo / "README.md").read_text(encoding="utf-8")
    for line in readme.splitlines():
        if line.startswith("$ trialwatch --config ") and " run" in line:
            path = line.split()[3]
            assert (repo / path).is_file(), line
            load_config(repo / path, env={})
            break
    else:
        pytest.fail("the README's tour has no `trialwatch --config FILE run` example")
