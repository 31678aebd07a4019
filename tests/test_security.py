"""Security: untrusted registry text, secrets, SQL and URLs.

* registry text (titles, summaries, values) never reaches an email header unsanitized, nor
  the HTML part unescaped (property-based over hostile strings);
* the SMTP password, the webhook secret and tokens in a webhook URL never appear in logs
  (``--log-format json``, ``TRIALWATCH_LOG_LEVEL=debug``), error messages, ``status``,
  ``outbox list`` or what is stored in the database, even when every delivery fails;
* a configuration holding an inline secret in a file others can read gets a warning;
* SQL is always parameterized: a saved query named with quotes and SQL metacharacters is
  stored, sent and matched literally; NCT-like strings with quotes are refused in one line;
* webhook URLs must be http:// or https://.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword
from docmaker import recruiting_copy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from receivers import Mailbox, WebhookReceiver, smtp_mailbox, webhook_receiver
from registry_server import FakeRegistry, load_fixture, make_study, nct

from trialwatch.notifiers.base import Alert
from trialwatch.notifiers.email import EmailConfig, EmailNotifier

REPO = Path(__file__).resolve().parents[1]
SEED = REPO / "seeds" / "NCT07328581.txt"
CONSTRUCTED = REPO / "tests" / "fixtures" / "ctgov" / "constructed" / "NCT07328581.json"
PASSWORD = "pw-Zq8!smtp-s3cret"
KEY = b"k3y-bytes-for-the-webhook-hmac!!"
HOOK_SECRET = "whsec_" + base64.b64encode(KEY).decode()
PATH_TOKEN = "T0KEN-in-the-path-91a7"
QUERY_TOKEN = "tok-in-the-query-5c2e"
BEARER = "Bearer hdr-s3cret-77f1"
SECRETS = (PASSWORD, HOOK_SECRET, base64.b64encode(KEY).decode(), KEY.decode(), PATH_TOKEN,
           QUERY_TOKEN, BEARER, BEARER.split()[1])
NASTY = "x'); DROP TABLE trials; --"


def env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("TRIALWATCH_")}
    return {**base, **extra}


def trialwatch(config: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "trialwatch.monitor.cli", "--config", str(config),
                             *args],
                          cwd=REPO, capture_output=True, text=True, timeout=120,
                          env=env(**extra))


def assert_one_line_error(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 2, result
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("trialwatch: error: ")
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------- registry text

hostile = st.one_of(
    st.text(max_size=80),
    st.sampled_from(["\r\nBcc: victim@example.org", "\nX-Injected: 1", "\u2028To: a@b.c",
                     "<script>alert(1)</script>", '"><img src=x onerror=alert(1)>',
                     "=?utf-8?b?QmNjOiB4QHkuej8=?=", "\x00\x1b[31m", "\u202eevil",
                     "&lt;already&gt;", "a" * 2000]),
)


def mark(text: str, n: int) -> str:
    """Registry text with a tag that must never survive unescaped into HTML."""
    return f"{text}<evil{n} onload=x>"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(title=hostile, summary=hostile, old=hostile, new=hostile, severity=hostile)
def test_registry_text_never_reaches_headers_or_unescaped_html(
        title: str, summary: str, old: str, new: str, severity: str) -> None:
    alert = Alert(id="msg_0123", channel="team-mail", nct_id="NCT07328581",
                  title=mark(title, 1), version=3,
                  events=[{"kind": "status", "field": "overall_status", "old": mark(old, 2),
                           "new": {"date": mark(new, 3), "type": mark(new, 4)},
                           "severity": mark(severity, 5), "summary": mark(summary, 6)}])
    notifier = EmailNotifier(EmailConfig.model_validate({
        "host": "127.0.0.1", "security": "none", "from": "trialwatch <alerts@example.org>",
        "to": ["team@example.org"]}), {})
    raw = notifier.build_message(alert).as_bytes()
    parsed = message_from_bytes(raw, _class=EmailMessage, policy=default_policy)
    assert sorted(parsed.keys()) == sorted(
        ["Subject", "From", "To", "Date", "Message-ID", "X-Trialwatch-Alert-Id",
         "Auto-Submitted", "MIME-Version", "Content-Type"])
    assert parsed["To"] == "team@example.org" and parsed["Bcc"] is None
    for name, value in parsed.items():
        assert "\r" not in str(value) and "\n" not in str(value), name
    html_part = parsed.get_body(("html",))
    assert html_part is not None
    html = html_part.get_content()
    for n in range(1, 7):
        assert f"<evil{n}" not in html
    assert "<script" not in html.lower() and "<img" not in html.lower()


# --------------------------------------------------------------------------- secrets


class RefusingMailbox(Mailbox):
    """An SMTP server requiring AUTH that refuses every login (so delivery fails)."""

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str,
                     auth_data: Any) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        self.logins.append((auth_data.login, auth_data.password))
        return AuthResult(success=False, handled=False)


@pytest.fixture
def refusing_smtp() -> Iterator[Mailbox]:
    box = RefusingMailbox()
    with smtp_mailbox(box, authenticator=box.authenticate, auth_required=True,
                      auth_require_tls=False):
        yield box


@pytest.fixture
def failing_hook() -> Iterator[WebhookReceiver]:
    with webhook_receiver(path=f"/hooks/{PATH_TOKEN}") as receiver:
        receiver.fail_times = 10_000
        yield receiver


def secret_config(tmp_path: Path, smtp: Mailbox, hook: WebhookReceiver, registry: str) -> Path:
    config = tmp_path / "trialwatch.toml"
    config.write_text(textwrap.dedent(f"""
        [database]
        url = "sqlite:///{tmp_path / 'tw.db'}"
        [ctgov]
        base_url = "{registry}"
        requests_per_second = 0
        max_retries = 0
        [delivery]
        max_attempts = 2
        backoff = "1s"
        [channels.team-mail]
        type = "email"
        host = "127.0.0.1"
        port = {smtp.port}
        security = "none"
        allow_plaintext_auth = true
        username = "alerts@example.org"
        password_env = "TW_SMTP_PASSWORD"
        from = "trialwatch <alerts@example.org>"
        to = ["team@example.org"]
        [channels.ops-hook]
        type = "webhook"
        url = "{hook.url}?key={QUERY_TOKEN}"
        secret_env = "TW_HOOK_SECRET"
        headers = {{ X-Trace = "on" }}
        """))
    config.chmod(0o600)
    return config


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
def test_secrets_never_appear_in_logs_errors_status_or_the_database(
        tmp_path, refusing_smtp, failing_hook):
    with FakeRegistry() as registry:
        registry.add(make_study(load_fixture("NCT03934567.json"), nct(1), "2026-11-01"))
        config = secret_config(tmp_path, refusing_smtp, failing_hook, registry.base_url)
        secrets = {"TW_SMTP_PASSWORD": PASSWORD, "TW_HOOK_SECRET": HOOK_SECRET,
                   "TRIALWATCH_LOG_LEVEL": "debug"}
        runs = [
            trialwatch(config, "--log-format", "json", "ingest", str(SEED), str(CONSTRUCTED),
                       str(recruiting_copy(tmp_path)), **secrets),
            trialwatch(config, "--log-format", "json", "watch", nct(1), **secrets),
            trialwatch(config, "--log-format", "json", "check", "--json", **secrets),
            trialwatch(config, "--log-format", "json", "notify", "test", **secrets),
            trialwatch(config, "--log-format", "json", "outbox", "retry", "--all-dead",
                       **secrets),
            trialwatch(config, "--log-format", "json", "outbox", "list", "--all", "--json",
                       **secrets),
            trialwatch(config, "--log-format", "json", "status", **secrets),
            trialwatch(config, "--log-format", "json", "status", "--json", **secrets),
            trialwatch(config, "notify", "test", TW_SMTP_PASSWORD=PASSWORD),  # secret unset
        ]
    assert refusing_smtp.logins and failing_hook.requests  # deliveries were tried, and failed
    assert any('"level": "debug"' in r.stderr for r in runs)  # debug logging was on
    assert any("alert.retry" in r.stderr or "alert.dead" in r.stderr for r in runs)
    for result in runs:
        for secret in SECRETS:
            assert secret not in result.stdout, (secret, result.args)
            assert secret not in result.stderr, (secret, result.args)
    assert "TW_HOOK_SECRET" in runs[-1].stderr  # the unset variable is named, not its value
    connection = sqlite3.connect(tmp_path / "tw.db")
    try:
        stored = json.dumps([connection.execute(f"SELECT * FROM {table}").fetchall()
                             for table in ("outbox", "cycles", "trials")], default=str)
    finally:
        connection.close()
    assert "authentication failed" in stored or "535" in stored  # the errors were kept...
    for secret in SECRETS:
        assert secret not in stored  # ...without the secrets


def test_an_authorization_header_value_is_never_logged(tmp_path):
    with webhook_receiver() as hook:
        hook.fail_times = 10_000
        config = tmp_path / "trialwatch.toml"
        config.write_text(textwrap.dedent(f"""
            [database]
            url = "sqlite:///{tmp_path / 'tw.db'}"
            [channels.ops-hook]
            type = "webhook"
            url = "{hook.url}"
            headers = {{ Authorization = "{BEARER}" }}
            """))
        config.chmod(0o600)
        result = trialwatch(config, "--log-format", "json", "ingest", str(SEED),
                            str(CONSTRUCTED), str(recruiting_copy(tmp_path)),
                            TRIALWATCH_LOG_LEVEL="debug")
        assert hook.requests and hook.requests[0].headers["authorization"] == BEARER
    for secret in (BEARER, BEARER.split()[1]):
        assert secret not in result.stderr and secret not in result.stdout


@pytest.mark.parametrize(("table", "key"), [
    ('[channels.mail]\ntype = "email"\nhost = "h"\nfrom = "a@b.org"\nto = ["c@d.org"]\n'
     'password = "{secret}"', "channels.mail.password"),
    ('[channels.hook]\ntype = "webhook"\nurl = "https://example.org/h"\n'
     'secret = "{secret}"', "channels.hook.secret"),
    ('[channels.hook]\ntype = "webhook"\nurl = "https://example.org/h"\n'
     'headers = {{ Authorization = "Bearer {secret}" }}', "channels.hook.headers.Authorization"),
    ('[database]\nurl = "postgresql://tw:{secret}@db.example.org/tw"', "database.url"),
    ('[channels.chat]\ntype = "apprise"\nurls = ["slack://TTEAMID000/BHOOKID000/{secret}"]',
     "channels.chat.urls"),
], ids=["email-password", "webhook-secret", "authorization-header", "database-url",
        "apprise-urls"])
def test_an_inline_secret_in_a_world_readable_config_warns_without_showing_it(
        tmp_path, table, key):
    secret = "inl1ne-s3cret-value"
    config = tmp_path / "trialwatch.toml"
    config.write_text(table.format(secret=secret) + "\n")
    db = ["--db", f"sqlite:///{tmp_path / 'tw.db'}"]
    config.chmod(0o644)
    readable = trialwatch(config, *db, "status")  # a command that reads the file
    assert "readable by other users" in readable.stderr and key in readable.stderr
    assert secret not in readable.stderr and secret not in readable.stdout
    config.chmod(0o600)
    private = trialwatch(config, *db, "status")
    assert "readable by other users" not in private.stderr
    failed = trialwatch(config, *db, "notify", "test")  # a key the notifier does not know
    assert secret not in failed.stderr and secret not in failed.stdout


# --------------------------------------------------------------------------- SQL


def test_a_query_name_and_text_with_sql_metacharacters_are_stored_sent_and_matched_literally(
        tmp_path):
    with FakeRegistry() as registry:
        registry.add(make_study(load_fixture("NCT03934567.json"), nct(1), "2026-11-01",
                                conditions=[NASTY]))
        config = tmp_path / "trialwatch.toml"
        config.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "tw.db"}"\n'
                          f'[ctgov]\nbase_url = "{registry.base_url}"\n'
                          "requests_per_second = 0\n")
        saved = trialwatch(config, "watch", "--condition", NASTY, "--name", NASTY)
        assert saved.returncode == 0, saved.stderr
        checked = trialwatch(config, "check", "--json")
        assert checked.returncode == 0, checked.stderr
        searches = [r for r in registry.requests_to("/studies") if "query.cond" in r.params]
        assert [r.params["query.cond"] for r in searches] == [NASTY]
    listed = trialwatch(config, "list", "--json")
    assert [row["nct_id"] for row in json.loads(listed.stdout)] == [nct(1)]  # matched
    connection = sqlite3.connect(tmp_path / "tw.db")
    try:
        assert connection.execute("SELECT name, condition FROM queries").fetchall() == [
            (NASTY, NASTY)]
        tables = {row[0] for row in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"trials", "versions", "events", "outbox", "queries"} <= tables
    finally:
        connection.close()
    near_miss = trialwatch(config, "unwatch", "--query", "x'); DROP TABLE trials; -- ")
    assert_one_line_error(near_miss)  # not LIKE, not trimmed: only the exact name
    removed = trialwatch(config, "unwatch", "--query", NASTY)
    assert removed.returncode == 0, removed.stderr


@pytest.mark.parametrize("args", [
    ("watch", "--offline", "NCT0000000'1"),
    ("watch", "--offline", "NCT00000001' OR '1'='1"),
    ("unwatch", "NCT00000001'--"),
    ("history", "NCT00000001' OR 1=1 --"),
    ("diff", "NCT00000001\"; DROP TABLE versions; --"),
    ("check", "NCT00000001');--"),
    ("backfill", "NCT0000000'1"),
], ids=lambda a: f"{a[0]}-{len(a[-1])}")
def test_nct_like_strings_with_quotes_are_refused_in_one_line(tmp_path, args):
    config = tmp_path / "trialwatch.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "tw.db"}"\n')
    result = trialwatch(config, *args)
    assert_one_line_error(result)
    assert "NCT" in result.stderr


def test_registry_text_with_sql_metacharacters_is_stored_and_shown_literally(tmp_path):
    document = json.loads(CONSTRUCTED.read_text())
    title = "Robert'); DROP TABLE events; -- \" OR 1=1"
    document["protocolSection"]["identificationModule"]["briefTitle"] = title
    path = tmp_path / "study.json"
    path.write_text(json.dumps(document))
    config = tmp_path / "trialwatch.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "tw.db"}"\n')
    assert trialwatch(config, "ingest", str(path)).returncode == 0
    listed = trialwatch(config, "list", "--json")
    assert json.loads(listed.stdout)[0]["title"] == title


# --------------------------------------------------------------------------- URLs


@pytest.mark.parametrize("url", [
    "file:///etc/passwd", "ftp://example.org/hook", "javascript:alert(1)", "gopher://x:70/",
    "data:text/plain,hi", "//example.org/hook", "example.org/hook", "http:/example.org",
    "unix:///var/run/docker.sock", "https://exa mple.org/", "http://\nexample.org/",
])
def test_webhook_urls_other_than_http_or_https_are_refused_naming_the_key(tmp_path, url):
    config = tmp_path / "trialwatch.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "tw.db"}"\n'
                      f"[channels.ops-hook]\ntype = \"webhook\"\nurl = {json.dumps(url)}\n")
    result = trialwatch(config, "notify", "test")
    assert_one_line_error(result)
    assert "channels.ops-hook" in result.stderr and "url" in result.stderr
