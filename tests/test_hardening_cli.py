"""Hardening through the command line (issue 17): nothing from the registry, a database URL
or a config file can leak a password, drive the terminal or end in an internal error.

Each test runs the real ``trialwatch`` in a subprocess (stdout a pipe, or a pseudo-terminal
where the terminal is the point) against a SQLite file in ``tmp_path`` or the local
PostgreSQL server.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from docmaker import (
    SEED_JSON,
    add_criterion,
    fixture_path,
    module,
    new_registry_day,
    recruiting_copy,
    set_status,
    study,
    write,
)

REPO = Path(__file__).resolve().parents[1]
PASSWORD = "Pw-5ecret-17xy"
# Clipboard write (OSC 52), hidden link (OSC 8), clear screen, a bell, and a forged row.
HOSTILE_TITLE = ("Study \x1b]52;c;ZWNobyBwd25lZA==\x07of \x1b]8;;https://evil.example/\x07"
                 "link\x1b]8;;\x07 \x1b[2J\x1b[31mred\x1b[0m\n* NCT00000001  v9  RECRUITING")


def env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("TRIALWATCH_")}
    return {**base, **extra}


def trialwatch(*args: str | Path, cwd: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "trialwatch.monitor.cli", *map(str, args)],
                          cwd=cwd, capture_output=True, text=True, timeout=120, env=env(**extra))


def on_a_terminal(*args: str | Path, cwd: Path) -> str:
    """What ``trialwatch ARGS`` writes to a terminal (stdout and stderr a pseudo-terminal)."""
    main, child = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "trialwatch.monitor.cli", *map(str, args)],
                               cwd=cwd, stdin=child, stdout=child, stderr=child, env=env())
    os.close(child)
    chunks = []
    while True:
        ready, _, _ = select.select([main], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    process.wait(timeout=60)
    os.close(main)
    return b"".join(chunks).decode().replace("\r\n", "\n")


def assert_one_line_error(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 2, result
    assert result.stderr.startswith("trialwatch: error: ") and result.stderr.count("\n") == 1, \
        result.stderr
    assert "Traceback" not in result.stderr


# ----------------------------------------------------------------- 1. database passwords

@pytest.mark.parametrize("url", [
    f"postgresql+psycopg2://postgres:{PASSWORD}@127.0.0.1/test",   # driver not installed
    f"postgresql+asyncpg://postgres:{PASSWORD}@127.0.0.1/test",
    f"mysql://u:{PASSWORD}@db.example.org/db",
    f"postgresql://u:{PASSWORD}@db.example.org:notaport/db",       # the URL does not parse
    f"postgresql://postgres:{PASSWORD}@127.0.0.1:5432/no_such_database_17",  # server says no
    f"nosuchdialect://u:{PASSWORD}@h/db",
])
def test_a_database_url_in_an_error_shows_its_password_masked(tmp_path: Path, url: str) -> None:
    result = trialwatch("--db", url, "status", cwd=tmp_path)
    assert_one_line_error(result)
    assert PASSWORD not in result.stderr + result.stdout
    assert ":***@" in result.stderr


def test_a_password_in_trialwatch_db_stays_out_of_run_and_its_logs(tmp_path: Path) -> None:
    url = f"mysql://u:{PASSWORD}@db.example.org/db"
    result = trialwatch("--log-format", "json", "run", cwd=tmp_path, TRIALWATCH_DB=url,
                        TRIALWATCH_LOG_LEVEL="debug")
    assert result.returncode == 2
    assert PASSWORD not in result.stderr + result.stdout
    assert "mysql://u:***@db.example.org/db" in result.stderr


def test_a_percent_encoded_password_is_masked_in_both_spellings(tmp_path: Path) -> None:
    result = trialwatch("--db", "mysql://u:p%40ss-w0rd-long@h/db", "status", cwd=tmp_path)
    assert_one_line_error(result)
    assert "p%40ss-w0rd-long" not in result.stderr and "p@ss-w0rd-long" not in result.stderr


# ----------------------------------------------------------------- 2. registry text

@pytest.fixture
def hostile_db(tmp_path: Path) -> Path:
    """A database whose trial NCT07328581 got a title and an exclusion criterion full of
    terminal escapes (v2)."""
    doc = add_criterion(new_registry_day(set_status(study(SEED_JSON), "RECRUITING"),
                                         "2026-02-01"), "exclusion", HOSTILE_TITLE)
    module(doc, "identificationModule")["briefTitle"] = HOSTILE_TITLE
    db = tmp_path / "tw.db"
    for path in (fixture_path(SEED_JSON), write(doc, tmp_path / "hostile.json")):
        result = trialwatch("--db", db, "ingest", path, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    return db


def assert_no_control_characters(text: str) -> None:
    controls = {c for c in text if (ord(c) < 32 and c != "\n") or ord(c) == 127}
    assert controls == set(), text
    assert "\n* NCT00000001" not in text  # no forged row


@pytest.mark.parametrize("command", [("list",), ("diff", "NCT07328581"),
                                     ("history", "NCT07328581")])
def test_registry_text_cannot_drive_the_terminal_through_a_pipe(
        hostile_db: Path, tmp_path: Path, command: tuple[str, ...]) -> None:
    result = trialwatch("--db", hostile_db, *command, cwd=tmp_path)
    assert result.returncode in (0, 1), result.stderr
    assert "Study" in result.stdout  # the text is still shown, only its controls replaced
    assert_no_control_characters(result.stdout)


@pytest.mark.parametrize("command", [("list",), ("diff", "NCT07328581"),
                                     ("history", "NCT07328581")])
def test_registry_text_cannot_drive_the_terminal_on_a_terminal(
        hostile_db: Path, tmp_path: Path, command: tuple[str, ...]) -> None:
    shown = on_a_terminal("--db", hostile_db, *command, cwd=tmp_path)
    assert "Study" in shown
    assert "\x1b]" not in shown and "\x07" not in shown and "\x1b[2J" not in shown
    assert "\n* NCT00000001" not in shown


def test_list_keeps_one_row_per_trial(hostile_db: Path, tmp_path: Path) -> None:
    result = trialwatch("--db", hostile_db, "list", cwd=tmp_path)
    rows = [line for line in result.stdout.splitlines() if "NCT0" in line]
    assert len(rows) == 1 and rows[0].startswith("  NCT07328581  Recruiting")


def test_json_output_keeps_the_exact_registry_text(hostile_db: Path, tmp_path: Path) -> None:
    result = trialwatch("--db", hostile_db, "list", "--json", cwd=tmp_path)
    assert [row["title"] for row in json.loads(result.stdout)] == [HOSTILE_TITLE]
    assert "\x1b" not in result.stdout  # escaped by JSON, as \u001b


def test_the_console_channel_prints_registry_text_without_controls(tmp_path: Path) -> None:
    config = tmp_path / "trialwatch.toml"
    config.write_text('[channels.screen]\ntype = "console"\n')
    db = tmp_path / "tw.db"
    trialwatch("--config", config, "--db", db, "ingest", fixture_path(SEED_JSON), cwd=tmp_path)
    result = trialwatch("--config", config, "--db", db, "ingest",
                        recruiting_copy(tmp_path, title=HOSTILE_TITLE), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "red" in result.stdout and "Title" in result.stdout
    assert_no_control_characters(result.stdout)


def test_console_log_lines_replace_control_characters_json_lines_keep_them() -> None:
    import io

    import structlog

    from trialwatch.monitor.service.logs import configure_logging

    for fmt in ("console", "json"):
        stream = io.StringIO()
        configure_logging(fmt, "info", stream=stream)
        try:
            raise ValueError(HOSTILE_TITLE)
        except ValueError as exc:
            structlog.get_logger("t").error("cycle.crashed", reason=HOSTILE_TITLE, exc_info=exc)
        shown = stream.getvalue()
        if fmt == "console":
            assert "red" in shown and "Traceback" in shown
            assert {c for c in shown if ord(c) < 32 and c != "\n"} == set(), shown
        else:
            assert json.loads(shown)["reason"] == HOSTILE_TITLE
            assert "\x1b]52;c;" in json.loads(shown)["exception"]
    configure_logging("json", "warning")


# ----------------------------------------------------------------- 5. SMTP AUTH in clear

def mail_config(tmp_path: Path, *, host: str = "127.0.0.1", port: int = 25,
                extra: str = "") -> Path:
    config = tmp_path / "trialwatch.toml"
    config.write_text(f'[channels.team-mail]\ntype = "email"\nhost = "{host}"\nport = {port}\n'
                      'security = "none"\nusername = "alerts@example.org"\n'
                      'password_env = "TW_SMTP_PASSWORD"\nfrom = "alerts@example.org"\n'
                      f'to = ["team@example.org"]\ntimeout = 5\n{extra}')
    config.chmod(0o600)
    return config


def test_smtp_auth_over_plaintext_is_refused_naming_the_security_key(tmp_path: Path) -> None:
    result = trialwatch("--config", mail_config(tmp_path), "--db", tmp_path / "tw.db",
                        "notify", "test", cwd=tmp_path, TW_SMTP_PASSWORD=PASSWORD)
    assert_one_line_error(result)
    assert "channels.team-mail.security" in result.stderr
    assert "allow_plaintext_auth" in result.stderr and PASSWORD not in result.stderr


def test_allow_plaintext_auth_sends_and_warns_once_at_start(tmp_path: Path) -> None:
    from aiosmtpd.smtp import AuthResult, LoginPassword
    from receivers import Mailbox, smtp_mailbox

    class Box(Mailbox):
        def authenticate(self, server: object, session: object, envelope: object,
                         mechanism: str, auth_data: LoginPassword) -> AuthResult:
            self.logins.append((auth_data.login, auth_data.password))
            return AuthResult(success=auth_data.password == PASSWORD.encode())

    box = Box()
    with smtp_mailbox(box, authenticator=box.authenticate, auth_required=True,
                      auth_require_tls=False):
        config = mail_config(tmp_path, port=box.port, extra="allow_plaintext_auth = true\n")
        result = trialwatch("--config", config, "--db", tmp_path / "tw.db", "--log-format",
                            "json", "notify", "test", cwd=tmp_path, TW_SMTP_PASSWORD=PASSWORD)
    assert result.returncode == 0, result.stderr
    assert len(box.envelopes) == 1 and box.logins == [(b"alerts@example.org", PASSWORD.encode())]
    warnings = [json.loads(line) for line in result.stderr.splitlines()
                if "notifier.email.plaintext_auth" in line]
    assert len(warnings) == 1 and warnings[0]["level"] == "warning"
    assert PASSWORD not in result.stderr


# ----------------------------------------------------------------- 8. short secrets

def test_a_secret_shorter_than_8_characters_is_refused_naming_its_env_key(
        tmp_path: Path) -> None:
    config = mail_config(tmp_path, host="smtp.example.invalid",
                         extra="allow_plaintext_auth = true\n")
    result = trialwatch("--config", config, "--db", tmp_path / "tw.db", "notify", "test",
                        cwd=tmp_path, TW_SMTP_PASSWORD="e")
    assert_one_line_error(result)
    assert "channels.team-mail.password_env" in result.stderr and "at least 8" in result.stderr
    assert "***" not in result.stderr


def test_a_secret_inside_an_unrelated_word_leaves_the_message_intact(tmp_path: Path) -> None:
    config = mail_config(tmp_path, host="smtp.example.invalid",
                         extra="allow_plaintext_auth = true\n")
    result = trialwatch("--config", config, "--db", tmp_path / "tw.db", "notify", "test",
                        cwd=tmp_path, TW_SMTP_PASSWORD="smtp.exa")
    assert result.returncode == 1
    assert "SMTP smtp.example.invalid:25 (none):" in result.stderr
    assert "***" not in result.stderr


# ----------------------------------------------------------------- 7. symlink loops

@pytest.fixture
def loop(tmp_path: Path) -> Path:
    """``ln -s a b; ln -s b a`` in ``tmp_path``, and ``folder/c.json`` pointing into it."""
    (tmp_path / "b").symlink_to("a")
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "c.json").symlink_to("../a")
    return tmp_path


@pytest.mark.parametrize("argument", ["a", "folder"])
def test_a_symlink_loop_to_ingest_is_one_line_naming_the_path(loop: Path,
                                                              argument: str) -> None:
    result = trialwatch("--db", loop / "tw.db", "ingest", argument, fixture_path(SEED_JSON),
                        cwd=loop)
    assert result.returncode == 1  # the good file is stored, the loop reported
    assert result.stderr.count("\n") == 1 and "internal error" not in result.stderr
    named = "a" if argument == "a" else "folder/c.json"
    assert result.stderr.startswith(f"trialwatch: error: {named}: ")
    assert "symbolic links" in result.stderr
    assert "NCT07328581  version 1" in result.stdout


def test_a_symlink_loop_as_the_database_is_one_line(loop: Path) -> None:
    result = trialwatch("--db", "a", "status", cwd=loop)
    assert_one_line_error(result)
    assert "internal error" not in result.stderr and str(loop / "a") in result.stderr


# ----------------------------------------------------------------- 9. next_cycle on PostgreSQL

def status_json(tmp_path: Path, config: Path, url: str) -> dict[str, object]:
    result = trialwatch("--config", config, "--db", url, "status", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    parsed: dict[str, object] = json.loads(result.stdout)
    return parsed


def test_status_on_postgresql_reports_next_cycle_only_while_a_daemon_runs(
        tmp_path: Path, pg_url: str, registry: object) -> None:
    config = tmp_path / "trialwatch.toml"
    config.write_text(f'[ctgov]\nbase_url = "{registry.base_url}"\n'  # type: ignore[attr-defined]
                      'requests_per_second = 0\nmax_retries = 0\n[schedule]\n'
                      'interval = "1h"\n')
    once = trialwatch("--config", config, "--db", pg_url, "run", "--once", cwd=tmp_path)
    assert once.returncode == 0, once.stderr  # a cycle is recorded, then nothing runs
    assert status_json(tmp_path, config, pg_url)["next_cycle"] is None
    daemon = subprocess.Popen(
        [sys.executable, "-m", "trialwatch.monitor.cli", "--config", str(config), "--db", pg_url,
         "run"], cwd=tmp_path, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while status_json(tmp_path, config, pg_url)["next_cycle"] is None:
            assert time.monotonic() < deadline, "the running daemon is never reported"
            time.sleep(0.3)
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
    assert status_json(tmp_path, config, pg_url)["next_cycle"] is None
