"""The email notifier against a real SMTP server (aiosmtpd) on 127.0.0.1."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from alert_samples import STATUS_EVENT, sample_alert
from receivers import Mailbox, free_port, smtp_mailbox

from trialwatch.notifiers.base import Alert, ConfigurationError, DeliveryError
from trialwatch.notifiers.email import EmailConfig, EmailNotifier, message_id
from trialwatch.notifiers.registry import build_channel

# aiosmtpd warns when a test server allows AUTH without TLS; that is the point of these tests.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Requiring AUTH while not requiring TLS:UserWarning"
)

PASSWORD = "correct-horse-battery-staple"


def make_alert(**overrides: Any) -> Alert:
    defaults: dict[str, Any] = {"channel": "team-mail"}
    return sample_alert(**{**defaults, **overrides})


class AuthMailbox(Mailbox):
    """A mailbox that also checks SMTP AUTH logins."""

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        self.logins.append((auth_data.login, auth_data.password))
        ok = auth_data.login == b"alerts@example.org" and auth_data.password == PASSWORD.encode()
        return AuthResult(success=ok, handled=False)


@pytest.fixture
def smtp_server() -> Iterator[Mailbox]:
    with smtp_mailbox() as box:
        yield box


@pytest.fixture
def auth_smtp_server() -> Iterator[Mailbox]:
    box = AuthMailbox()
    with smtp_mailbox(box, authenticator=box.authenticate, auth_required=True,
                      auth_require_tls=False):
        yield box


def config(port: int, **overrides: Any) -> EmailConfig:
    table: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "security": "none",
        "from": "trialwatch <alerts@example.org>",
        "to": ["team@example.org"],
        "timeout": 5,
    }
    table.update(overrides)
    return EmailConfig.model_validate(table)


def parts(msg: EmailMessage) -> tuple[str, str]:
    plain = msg.get_body(preferencelist=("plain",))
    html = msg.get_body(preferencelist=("html",))
    assert plain is not None and html is not None
    return plain.get_content(), html.get_content()


def test_sends_exactly_one_multipart_message_with_headline_subject(smtp_server: Mailbox) -> None:
    EmailNotifier(config(smtp_server.port), {}).send(make_alert())

    assert len(smtp_server.envelopes) == 1
    envelope = smtp_server.envelopes[0]
    assert envelope.mail_from == "alerts@example.org"
    assert envelope.rcpt_tos == ["team@example.org"]
    (msg,) = smtp_server.messages()
    assert msg["Subject"] == (
        "[trialwatch] NCT07328581 — Recruitment status: Not yet recruiting → Recruiting"
    )
    assert msg["From"] == "trialwatch <alerts@example.org>"
    assert msg["To"] == "team@example.org"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    plain, html = parts(msg)
    for body in (plain, html):
        assert "CAR-T Cell Therapy for Refractory Lupus" in body
        assert "Recruitment status: Not yet recruiting → Recruiting" in body
        assert "NOT_YET_RECRUITING" not in body  # the summary says it, in words
        assert "https://clinicaltrials.gov/study/NCT07328581" in body
    assert "test alert" not in plain.lower()


def test_html_part_escapes_registry_markup(smtp_server: Mailbox) -> None:
    alert = make_alert(
        title='<script>alert("x")</script> & <b>bold</b>',
        events=[{**STATUS_EVENT, "summary": "<img src=x onerror=alert(1)>", "new": "<i>R</i>"}],
    )
    EmailNotifier(config(smtp_server.port), {}).send(alert)

    plain, html = parts(smtp_server.messages()[0])
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in html
    assert "<script" not in html
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<i>" not in html and "&lt;i&gt;R&lt;/i&gt;" in html
    assert '<script>alert("x")</script>' in plain  # plain text is not HTML: shown as is


def test_crlf_in_registry_text_cannot_inject_headers_or_recipients(smtp_server: Mailbox) -> None:
    injected = "Evil\r\nBcc: x@y\r\nX-Injected: 1\n\nbody"
    alert = make_alert(title=injected, events=[{**STATUS_EVENT, "summary": injected}])
    EmailNotifier(config(smtp_server.port), {}).send(alert)

    assert len(smtp_server.envelopes) == 1
    assert smtp_server.envelopes[0].rcpt_tos == ["team@example.org"]
    (msg,) = smtp_server.messages()
    assert msg["Bcc"] is None
    assert msg["X-Injected"] is None
    assert msg["Subject"] == "[trialwatch] NCT07328581 — Evil Bcc: x@y X-Injected: 1 body"
    raw_headers = smtp_server.envelopes[0].original_content.split(b"\r\n\r\n", 1)[0]
    assert b"\nBcc:" not in raw_headers


def test_control_characters_are_stripped_from_headers_and_bodies(smtp_server: Mailbox) -> None:
    alert = make_alert(title="Title\x1b[31m red\x00\u202e", events=[
        {**STATUS_EVENT, "summary": "Status\x07 changed\u2028now"}
    ])
    EmailNotifier(config(smtp_server.port), {}).send(alert)

    msg = smtp_server.messages()[0]
    assert msg["Subject"] == "[trialwatch] NCT07328581 — Status changed now"
    plain, html = parts(msg)
    for body in (plain, html):
        assert "\x1b" not in body and "\x00" not in body and "\u202e" not in body
        assert "Title [31m red" in body


def test_message_id_is_stable_per_alert(smtp_server: Mailbox) -> None:
    notifier = EmailNotifier(config(smtp_server.port), {})
    notifier.send(make_alert())
    notifier.send(make_alert())
    notifier.send(make_alert(id="alert-0002"))

    first, again, other = smtp_server.messages()
    assert first["Message-ID"] == again["Message-ID"] == "<trialwatch.alert-0001@example.org>"
    assert other["Message-ID"] != first["Message-ID"]
    assert first["X-Trialwatch-Alert-Id"] == "alert-0001"


def test_message_id_of_an_unusual_alert_id_is_a_hash() -> None:
    mid = message_id("a b\r\n<c>", "alerts@example.org")
    assert mid == message_id("a b\r\n<c>", "alerts@example.org")
    assert mid.startswith("<trialwatch.") and mid.endswith("@example.org>")
    assert " " not in mid and "\n" not in mid and "<c>" not in mid


def test_test_alert_says_so_clearly(smtp_server: Mailbox) -> None:
    EmailNotifier(config(smtp_server.port), {}).send(make_alert(test=True, events=[]))

    msg = smtp_server.messages()[0]
    assert msg["Subject"] == "[trialwatch] NCT07328581 — Test alert"
    for body in parts(msg):
        assert "This is a test alert from trialwatch" in body


def test_subject_prefix_is_configurable(smtp_server: Mailbox) -> None:
    EmailNotifier(config(smtp_server.port, subject_prefix="[lupus]"), {}).send(make_alert())
    assert smtp_server.messages()[0]["Subject"].startswith("[lupus] NCT07328581 — ")


def test_smtp_auth_uses_password_from_named_env_var(auth_smtp_server: Mailbox) -> None:
    cfg = config(
        auth_smtp_server.port, username="alerts@example.org", password_env="TW_SMTP_PASSWORD",
        allow_plaintext_auth=True,
    )
    notifier = EmailNotifier(cfg, {"TW_SMTP_PASSWORD": PASSWORD})
    notifier.send(make_alert())

    assert auth_smtp_server.logins == [(b"alerts@example.org", PASSWORD.encode())]
    assert len(auth_smtp_server.envelopes) == 1
    assert PASSWORD not in repr(notifier)
    assert PASSWORD not in repr(cfg) and PASSWORD not in str(cfg.model_dump())


def test_rejected_password_is_a_delivery_error_without_the_password(
    auth_smtp_server: Mailbox,
) -> None:
    cfg = config(
        auth_smtp_server.port, username="alerts@example.org", password_env="TW_SMTP_PASSWORD",
        allow_plaintext_auth=True,
    )
    notifier = EmailNotifier(cfg, {"TW_SMTP_PASSWORD": "wrong-password-123"})
    with pytest.raises(DeliveryError) as caught:
        notifier.send(make_alert())

    text = str(caught.value)
    assert f"127.0.0.1:{auth_smtp_server.port}" in text
    assert "authentication failed" in text and "535" in text
    assert "wrong-password-123" not in text
    assert auth_smtp_server.envelopes == []


def test_server_requiring_auth_refuses_unauthenticated_mail(auth_smtp_server: Mailbox) -> None:
    with pytest.raises(DeliveryError, match=rf"127\.0\.0\.1:{auth_smtp_server.port}"):
        EmailNotifier(config(auth_smtp_server.port), {}).send(make_alert())


def test_missing_password_env_var_names_the_key() -> None:
    table = {
        "type": "email",
        "host": "smtp.example.org",
        "username": "alerts@example.org",
        "password_env": "TRIALWATCH_SMTP_PASSWORD",
        "from": "trialwatch <alerts@example.org>",
        "to": ["team@example.org"],
    }
    with pytest.raises(ConfigurationError) as caught:
        build_channel("team-mail", table, {})
    assert str(caught.value) == (
        "channels.team-mail.password_env: "
        "environment variable TRIALWATCH_SMTP_PASSWORD is not set"
    )
    assert caught.value.key == "channels.team-mail.password_env"


def test_username_without_password_env_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="password_env: required when username is set"):
        EmailNotifier(config(25, username="alerts@example.org"), {})


def test_unreachable_port_is_a_delivery_error_naming_host_and_port() -> None:
    port = free_port()
    with pytest.raises(DeliveryError) as caught:
        EmailNotifier(config(port, timeout=2), {}).send(make_alert())
    assert f"SMTP 127.0.0.1:{port}" in str(caught.value)


@pytest.mark.parametrize(
    ("security", "port"), [("starttls", 587), ("tls", 465), ("none", 25)]
)
def test_default_port_follows_security(security: str, port: int) -> None:
    cfg = EmailConfig.model_validate(
        {"host": "smtp.example.org", "security": security, "from": "a@example.org",
         "to": ["b@example.org"]}
    )
    assert cfg.port is None and cfg.smtp_port == port


def test_defaults_match_design() -> None:
    cfg = EmailConfig.model_validate(
        {"host": "smtp.example.org", "from": "a@example.org", "to": ["b@example.org"]}
    )
    assert (cfg.security, cfg.smtp_port, cfg.timeout, cfg.subject_prefix) == (
        "starttls", 587, 30.0, "[trialwatch]"
    )


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"to": []}, "channels.m.to"),
        ({"to": ["not an address"]}, "channels.m.to[0]"),
        ({"to": ["a@example.org, b@example.org"]}, "channels.m.to[0]"),
        ({"from": "x@example.org\r\nBcc: y@example.org"}, "channels.m.from"),
        ({"security": "ssl"}, "channels.m.security"),
        ({"port": 0}, "channels.m.port"),
        ({"password_env": "hunter2 with spaces"}, "channels.m.password_env"),
        ({"tls": True}, "channels.m.tls"),
    ],
)
def test_invalid_settings_name_the_key(overrides: dict[str, Any], key: str) -> None:
    table = {"type": "email", "host": "h", "from": "a@example.org", "to": ["b@example.org"]}
    with pytest.raises(ConfigurationError) as caught:
        build_channel("m", {**table, **overrides}, {})
    assert caught.value.key == key
    assert "hunter2" not in str(caught.value)


# --- TLS: a throwaway self-signed certificate for 127.0.0.1 -------------------------------


@dataclass
class Certificate:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert, self.key)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True,
    )
    return Certificate(cert, key)


@pytest.fixture
def starttls_server(certificate: Certificate) -> Iterator[Mailbox]:
    box = AuthMailbox(port=free_port())
    controller = Controller(
        box,
        hostname="127.0.0.1",
        port=box.port,
        tls_context=certificate.server_context(),
        require_starttls=True,
        authenticator=box.authenticate,
        auth_required=True,
    )
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


def test_starttls_then_auth(starttls_server: Mailbox, certificate: Certificate) -> None:
    cfg = config(
        starttls_server.port,
        security="starttls",
        username="alerts@example.org",
        password_env="PW",
    )
    notifier = EmailNotifier(cfg, {"PW": PASSWORD}, ssl_context=certificate.client_context())
    notifier.send(make_alert())
    assert len(starttls_server.envelopes) == 1
    assert starttls_server.logins == [(b"alerts@example.org", PASSWORD.encode())]


def test_starttls_verifies_the_server_certificate(starttls_server: Mailbox) -> None:
    cfg = config(
        starttls_server.port, security="starttls", username="alerts@example.org", password_env="PW"
    )
    with pytest.raises(DeliveryError, match="certificate verify failed"):
        EmailNotifier(cfg, {"PW": PASSWORD}).send(make_alert())
    assert starttls_server.logins == []


def test_implicit_tls(certificate: Certificate) -> None:
    box = Mailbox(port=free_port())
    controller = Controller(
        box, hostname="127.0.0.1", port=box.port, ssl_context=certificate.server_context()
    )
    controller.start()
    try:
        notifier = EmailNotifier(
            config(box.port, security="tls"), {}, ssl_context=certificate.client_context()
        )
        notifier.send(make_alert())
    finally:
        controller.stop()
    assert len(box.envelopes) == 1
