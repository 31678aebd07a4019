"""The ``apprise`` notifier: Slack, Teams, Telegram, Discord, ntfy, … through the Apprise library.

Apprise (optional extra ``pip install 'trialwatch[apprise]'``, imported only when a channel of
this type is built) turns a URL such as ``slack://…`` or ``workflows://…`` into a delivery.
The URLs carry tokens, so they come from the environment variable named by ``urls_env``
(separated by whitespace and/or commas); ``urls = [...]`` inline works too and gets the
inline-secret warning.

Each URL is its own delivery *target*, keyed by a short hash of the URL (never the URL, which
holds tokens). ``send`` skips the targets in ``alert.done_targets``, sends to each other one
through its own ``Apprise`` object (so Apprise's result says which service failed) and, when
some fail, raises ``PartialDelivery`` with the targets that have the alert: the outbox stores
them, and the retry goes only to the services that failed.

The body is Markdown where the service takes it (plain text for text-only ones), shortened
to the service's ``body_maxlen`` with "… N more changes: <link>" when it is longer.
Messages name services by name, scheme and host (when the host is not itself a token).
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from pydantic import Field, ValidationInfo, field_validator

from trialwatch.monitor.redaction import mask_values
from trialwatch.notifiers.base import (
    Alert,
    ConfigurationError,
    DeliveryError,
    EnvVarName,
    NotifierConfig,
    PartialDelivery,
    Seconds,
)
from trialwatch.notifiers.render import clean_line, join_blocks, message_blocks, shorten, subject

INSTALL_HINT = "pip install 'trialwatch[apprise]'"
_SEPARATORS = re.compile(r"[\s,]+")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]{0,31})://")
#: Room for the title a service without titles puts on the body's first line ("# title").
_TITLE_OVERHEAD = 4


def split_urls(value: str) -> list[str]:
    """Apprise URLs from an environment variable: separated by whitespace and/or commas."""
    return [url for url in _SEPARATORS.split(value) if url]


def target_key(url: str) -> str:
    """A URL's delivery target key: stable, short, and no token readable from it."""
    return hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]


def scheme_of(url: str) -> str:
    """``slack://`` for a Slack URL; what can be said without quoting any secret."""
    match = _SCHEME.match(url)
    return f"{match.group(1).lower()}://" if match else "(no scheme://)"


class AppriseConfig(NotifierConfig):
    """``[channels.X]`` with ``type = "apprise"``: exactly one of ``urls`` / ``urls_env``."""

    urls: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)] | None = None
    urls_env: EnvVarName | None = Field(default=None, validate_default=True)
    title_prefix: str = "[trialwatch]"
    timeout: Seconds = 10.0

    @field_validator("urls_env")
    @classmethod
    def _one_source(cls, value: str | None, info: ValidationInfo) -> str | None:
        inline = info.data.get("urls")
        if value is None and not inline and "urls" in info.data:
            raise ValueError("required: the environment variable holding the Apprise URLs "
                             "(or urls = [...])")
        if value is not None and inline:
            raise ValueError("set either urls_env or urls, not both")
        return value


def _import_apprise() -> Any:
    try:
        return importlib.import_module("apprise")
    except ImportError:
        raise ConfigurationError(
            "type", f"channel type 'apprise' needs the Apprise library: {INSTALL_HINT}"
        ) from None


@dataclass(frozen=True)
class Target:
    """One Apprise URL of the channel: its key, a safe label, and the service plugin."""

    key: str
    label: str
    plugin: Any
    secrets: tuple[str, ...]

    @property
    def body_limit(self) -> int | None:
        limit = getattr(self.plugin, "body_maxlen", None)
        return limit if isinstance(limit, int) and limit > 0 else None

    @property
    def takes_markdown(self) -> bool:
        """Markdown goes to services that render it or turn it into HTML (email)."""
        formats = getattr(self.plugin, "notify_format", ())
        formats = formats if isinstance(formats, tuple | list) else (formats,)
        return any(str(getattr(f, "value", f)) in ("markdown", "html") for f in formats)

    @property
    def title_in_body(self) -> bool:
        return getattr(self.plugin, "title_maxlen", 1) <= 0


def _label(plugin: Any, scheme: str) -> str:
    """``Slack (slack://)``, ``JSON (json://127.0.0.1:8080)``: the host only when the
    service's URL has a host (for Slack the "host" is a token)."""
    service = clean_line(getattr(plugin, "service_name", "") or "service", 60)
    tokens = getattr(plugin, "template_tokens", {}) or {}
    host_token = tokens.get("host") if isinstance(tokens, Mapping) else None
    host = getattr(plugin, "host", None)
    if isinstance(host_token, Mapping) and not host_token.get("private") and host:
        port = getattr(plugin, "port", None)
        where = f"{host}:{port}" if port else str(host)
        return f"{service} ({scheme}{clean_line(where, 100)})"
    return f"{service} ({scheme})"


def _secrets_of(url: str) -> tuple[str, ...]:
    """The parts of a URL that may be tokens (user, password, path segments, query values),
    masked in any message Apprise's log lines contribute."""
    rest = url.split("://", 1)[-1]
    parts = re.split(r"[/?&=:@#]", rest)
    return tuple(sorted({p for p in parts if len(p) >= 6}, key=len, reverse=True))


class AppriseNotifier:
    """Send each alert through Apprise URLs (Slack, Teams, Telegram, Discord, ntfy, email, …)."""

    name: ClassVar[str] = "apprise"
    Config: ClassVar[type[NotifierConfig]] = AppriseConfig

    def __init__(self, config: AppriseConfig, env: Mapping[str, str]) -> None:
        """Import Apprise, read the URLs and check each with Apprise now."""
        self.config = config
        self._apprise = _import_apprise()
        urls, key = self._read_urls(config, env)
        targets: dict[str, Target] = {}
        for index, url in enumerate(urls):
            where = f"urls[{index}]" if config.urls is not None else key
            target = self._target(url, where, index)
            targets.setdefault(target.key, target)
        self.targets: tuple[Target, ...] = tuple(targets.values())

    @staticmethod
    def _read_urls(config: AppriseConfig, env: Mapping[str, str]) -> tuple[list[str], str]:
        if config.urls is not None:
            return [u.strip() for u in config.urls], "urls"
        variable = str(config.urls_env)
        value = env.get(variable)
        if value is None:
            raise ConfigurationError("urls_env", f"environment variable {variable} is not set")
        urls = split_urls(value)
        if not urls:
            raise ConfigurationError("urls_env", f"environment variable {variable} holds no "
                                                 "Apprise URLs")
        return urls, "urls_env"

    def _target(self, url: str, key: str, index: int) -> Target:
        apprise = self._apprise
        scheme = scheme_of(url)
        plugin = apprise.Apprise.instantiate(url) if apprise.Apprise().add(url) else None
        if plugin is None:
            position = f"URL {index + 1} in the variable" if key == "urls_env" else "URL"
            if scheme.startswith("("):
                problem = f"{position} is not an Apprise URL (expected service://...)"
            elif scheme.removesuffix("://") in _known_schemes(apprise):
                problem = (f"{position} is not a valid {scheme} URL (check its parts against "
                           "the Apprise documentation for that service)")
            else:
                problem = f"{position} has scheme {scheme}, which Apprise does not know"
            raise ConfigurationError(key, problem)
        plugin.socket_connect_timeout = self.config.timeout
        plugin.socket_read_timeout = self.config.timeout
        label = _label(plugin, scheme)  # the host it shows is no secret: leave it readable
        secrets = tuple(part for part in _secrets_of(url) if part not in label)
        return Target(target_key(url), label, plugin, secrets)

    def __repr__(self) -> str:
        return f"AppriseNotifier(targets={[t.label for t in self.targets]!r})"

    @property
    def destination(self) -> str:
        return ", ".join(t.label for t in self.targets)

    def message(self, alert: Alert, target: Target) -> tuple[str, str, bool]:
        """``(title, body, markdown)`` for one target: body shortened to its length limit."""
        title = subject(alert, self.config.title_prefix)
        markdown = target.takes_markdown
        blocks = message_blocks(alert, markdown=markdown)
        limit = target.body_limit
        if limit is not None and target.title_in_body:
            limit -= len(title) + _TITLE_OVERHEAD
        body = shorten(blocks, max(limit, 1)) if limit is not None else join_blocks(blocks)
        return title, body, markdown

    def send(self, alert: Alert) -> None:
        pending = [t for t in self.targets if t.key not in alert.done_targets]
        done = set(alert.done_targets)
        failures: list[str] = []
        for target in pending:
            problem = self._send_to(alert, target)
            if problem is None:
                done.add(target.key)
            else:
                failures.append(problem)
        if failures:
            message = "apprise: " + "; ".join(failures)
            if done:
                raise PartialDelivery(message, frozenset(done))
            raise DeliveryError(message)

    def _send_to(self, alert: Alert, target: Target) -> str | None:
        """Deliver to one target; None when it worked, else why not (no secrets)."""
        apprise = self._apprise
        title, body, markdown = self.message(alert, target)
        notifier = apprise.Apprise()
        notifier.add(target.plugin)
        body_format = apprise.NotifyFormat.MARKDOWN if markdown else apprise.NotifyFormat.TEXT
        try:
            with _warnings_of_this_send() as said:
                ok = bool(notifier.notify(body=body, title=title, body_format=body_format))
        except Exception as exc:  # a service plugin failing in its own way
            ok, said = False, [f"{type(exc).__name__}: {exc}"]
        if ok:
            return None
        return f"{target.label} failed" + _reason(said, target.secrets)


#: The warnings list of the send running in this context; Apprise runs services in worker
#: threads but carries the caller's context into them, so concurrent sends stay apart.
_SEND_WARNINGS: ContextVar[list[str] | None] = ContextVar("trialwatch_apprise_warnings",
                                                          default=None)


class _SendWarnings(logging.Handler):
    """Collects the ``apprise`` logger's warnings that belong to one send."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        if _SEND_WARNINGS.get() is self.lines:
            self.lines.append(record.getMessage())


@contextmanager
def _warnings_of_this_send() -> Iterator[list[str]]:
    """What Apprise warns about while the block runs (why a service failed)."""
    lines: list[str] = []
    handler = _SendWarnings(lines)
    logger = logging.getLogger("apprise")
    token = _SEND_WARNINGS.set(lines)
    logger.addHandler(handler)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        _SEND_WARNINGS.reset(token)


def _reason(warnings: Sequence[str], secrets: Sequence[str]) -> str:
    """Apprise's last warning, one line, tokens of the URL masked."""
    lines = [" ".join(line.split()) for line in warnings if line.strip()]
    if not lines:
        return ""
    return ": " + clean_line(mask_values(lines[-1], secrets), 300)


def _known_schemes(apprise: Any) -> frozenset[str]:
    """Every URL scheme the installed Apprise has a service for."""
    manager = apprise.manager_plugins.NotificationManager()
    return frozenset(s for s in manager.schemas() if isinstance(s, str))
