"""The ``email`` notifier: one multipart (plain text + HTML) message per alert over SMTP.

Security: ``starttls`` (default, port 587), ``tls`` (implicit TLS, port 465) or ``none``
(port 25). The password comes from the environment variable named by ``password_env``;
it is never sent over a plaintext connection (``security = "none"``) unless the channel
says ``allow_plaintext_auth = true`` (a relay on a trusted network), which is then logged
as a warning once, when the channel is built at start.
Registry text never reaches a header unsanitized (``render.clean_line``), recipients are
always the configured ``to`` list (envelope), and the HTML part escapes every value.
"""

from __future__ import annotations

import hashlib
import re
import smtplib
import ssl
from collections.abc import Mapping
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import default as default_policy
from email.utils import formatdate
from typing import Annotated, ClassVar, Literal

import structlog
from pydantic import AfterValidator, Field, SecretStr, StrictInt

from trialwatch.monitor.redaction import mask_values
from trialwatch.notifiers.base import (
    Alert,
    ConfigurationError,
    DeliveryError,
    EnvVarName,
    NotifierConfig,
    Seconds,
    secret_from_env,
)
from trialwatch.notifiers.render import clean_line, render_html, render_text, subject

DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def parse_mailbox(value: str) -> Address:
    """One address, optionally with a display name (``Name <a@b.org>``), parsed as sent."""
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("must not contain control characters")
    probe = EmailMessage(policy=default_policy)
    try:
        probe["To"] = value
        header = probe["To"]
        addresses = header.addresses
    except (ValueError, IndexError, TypeError) as exc:
        raise ValueError("is not an email address") from exc
    if len(addresses) != 1:
        raise ValueError("must be exactly one email address")
    if header.defects or not addresses[0].domain or not addresses[0].username:
        raise ValueError("is not a valid email address")
    return addresses[0]


def _mailbox(value: str) -> str:
    parse_mailbox(value)
    return value


Mailbox = Annotated[str, AfterValidator(_mailbox)]


class EmailConfig(NotifierConfig):
    """``[channels.X]`` with ``type = "email"`` (keys as in DESIGN.md: Configuration)."""

    host: str = Field(min_length=1, pattern=r"^[^\s/]+$")
    port: StrictInt | None = Field(default=None, ge=1, le=65535)  # "587" is a type error
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password_env: EnvVarName | None = None
    allow_plaintext_auth: bool = False
    from_: Mailbox = Field(alias="from")
    to: list[Mailbox] = Field(min_length=1)
    timeout: Seconds = 30.0
    subject_prefix: str = "[trialwatch]"

    @property
    def smtp_port(self) -> int:
        """``port``, or the usual port for ``security``."""
        return self.port if self.port is not None else DEFAULT_PORTS[self.security]


class EmailNotifier:
    """Send each alert as an email (SMTP, STARTTLS/TLS, optional auth; text + HTML)."""

    name: ClassVar[str] = "email"
    Config: ClassVar[type[NotifierConfig]] = EmailConfig

    def __init__(
        self,
        config: EmailConfig,
        env: Mapping[str, str],
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """Read the password now; ``ssl_context`` overrides the system trust store (tests)."""
        self.config = config
        self._password: SecretStr | None = None
        if config.password_env is not None:
            if config.username is None:
                raise ConfigurationError("username", "required when password_env is set")
            self._password = secret_from_env(env, "password_env", config.password_env)
        elif config.username is not None:
            raise ConfigurationError("password_env", "required when username is set")
        if self._password is not None and config.security == "none":
            if not config.allow_plaintext_auth:
                raise ConfigurationError(
                    "security", '"none" would send the password in clear: use "starttls" or '
                    '"tls", or set allow_plaintext_auth = true for a relay on a trusted network')
            structlog.get_logger(__name__).warning(
                "notifier.email.plaintext_auth", destination=self.destination,
                message="the SMTP password is sent without encryption (allow_plaintext_auth)")
        self._ssl_context = ssl_context

    def __repr__(self) -> str:
        c = self.config
        return (
            f"EmailNotifier(host={c.host!r}, port={c.smtp_port}, security={c.security!r}, "
            f"username={c.username!r}, to={c.to!r})"
        )

    @property
    def destination(self) -> str:
        return f"{self.config.host}:{self.config.smtp_port}"

    def build_message(self, alert: Alert) -> EmailMessage:
        """The message for ``alert`` (pure: no network)."""
        c = self.config
        msg = EmailMessage(policy=default_policy)
        msg["Subject"] = subject(alert, c.subject_prefix)
        msg["From"] = c.from_
        msg["To"] = ", ".join(c.to)
        msg["Date"] = formatdate(localtime=False, usegmt=True)
        msg["Message-ID"] = message_id(alert.id, c.from_)
        msg["X-Trialwatch-Alert-Id"] = clean_line(alert.id, 200)
        msg["Auto-Submitted"] = "auto-generated"
        msg.set_content(render_text(alert), charset="utf-8", cte="quoted-printable")
        msg.add_alternative(
            render_html(alert, c.subject_prefix),
            subtype="html",
            charset="utf-8",
            cte="quoted-printable",
        )
        return msg

    def send(self, alert: Alert) -> None:
        msg = self.build_message(alert)
        c = self.config
        envelope_from = parse_mailbox(c.from_).addr_spec
        envelope_to = [parse_mailbox(a).addr_spec for a in c.to]
        try:
            with self._connect() as smtp:
                if self._password is not None and c.username is not None:
                    smtp.login(c.username, self._password.get_secret_value())
                refused = smtp.send_message(msg, from_addr=envelope_from, to_addrs=envelope_to)
        except smtplib.SMTPAuthenticationError as exc:
            reply = f"{exc.smtp_code} {_text(exc.smtp_error)}"
            raise self._error(f"authentication failed for {c.username!r}: {reply}") from exc
        except smtplib.SMTPRecipientsRefused as exc:
            raise self._error(f"all recipients refused: {_refusals(exc.recipients)}") from exc
        except smtplib.SMTPResponseException as exc:
            raise self._error(f"{exc.smtp_code} {_text(exc.smtp_error)}") from exc
        except TimeoutError as exc:
            raise self._error(f"timed out after {c.timeout:g}s") from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise self._error(_text(exc) or type(exc).__name__) from exc
        if refused:
            # Some recipients accepted it: retrying would duplicate their copy, so this counts
            # as delivered; the refusal is visible to whoever reads the logs.
            _log_refused(self.destination, alert.id, _refusals(refused))

    def _connect(self) -> smtplib.SMTP:
        c = self.config
        context = self._ssl_context or ssl.create_default_context()
        smtp: smtplib.SMTP
        if c.security == "tls":
            smtp = smtplib.SMTP_SSL(c.host, c.smtp_port, timeout=c.timeout, context=context)
        else:
            smtp = smtplib.SMTP(c.host, c.smtp_port, timeout=c.timeout)
        try:
            smtp.ehlo()
            if c.security == "starttls":
                smtp.starttls(context=context)
                smtp.ehlo()
        except BaseException:
            smtp.close()
            raise
        return smtp

    def _error(self, reason: str) -> DeliveryError:
        text = f"SMTP {self.destination} ({self.config.security}): {reason}"
        if self._password is not None:
            text = mask_values(text, [self._password.get_secret_value()])
        return DeliveryError(text)


def message_id(alert_id: str, from_address: str) -> str:
    """A Message-ID that is the same every time ``alert_id`` is sent."""
    token = alert_id if _SAFE_ID.match(alert_id) else hashlib.sha256(alert_id.encode()).hexdigest()
    domain = parse_mailbox(from_address).domain
    if not re.fullmatch(r"[A-Za-z0-9.-]{1,200}", domain):
        domain = "trialwatch.invalid"
    return f"<trialwatch.{token}@{domain}>"


def _text(value: object) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return clean_line(value, 300)


def _refusals(recipients: Mapping[str, tuple[int, bytes]]) -> str:
    return "; ".join(
        f"{addr} ({code} {_text(reply)})" for addr, (code, reply) in recipients.items()
    )


def _log_refused(destination: str, alert_id: str, refusals: str) -> None:
    structlog.get_logger(__name__).warning(
        "notifier.email.recipients_refused",
        destination=destination,
        alert_id=alert_id,
        refused=refusals,
    )
