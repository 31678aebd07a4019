"""What a notifier is: the ``Alert`` it receives and the ``Notifier`` protocol it implements.

One alert = one trial version's change events for one channel, after the channel's
subscription filter. ``Alert.id`` is stable: the same alert retried keeps its id, so a
receiver can de-duplicate (it is the ``webhook-id`` of a signed webhook).

A notifier class is built as ``Cls(config, env)``: ``config`` is a validated ``Cls.Config``
(the ``[channels.X]`` table minus ``type``) and ``env`` the process environment, from which
secrets are read at construction (``secret_from_env``). Problems found then raise
``ConfigurationError``; problems found while sending raise ``DeliveryError``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Annotated, Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr

STUDY_URL = "https://clinicaltrials.gov/study/{nct_id}"


@dataclass(frozen=True)
class Alert:
    """A trial version's events for one channel. ``events`` are DESIGN.md event dicts."""

    id: str
    channel: str
    nct_id: str
    title: str | None
    version: int
    events: Sequence[Mapping[str, Any]]
    test: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return STUDY_URL.format(nct_id=self.nct_id)

    @property
    def headline(self) -> str:
        """The most important event's summary (events arrive sorted by severity)."""
        if self.test:
            return "Test alert"
        if not self.events:
            return "No changes"
        first = str(self.events[0].get("summary", ""))
        more = len(self.events) - 1
        return f"{first} (+{more} more)" if more else first

    def payload(self) -> dict[str, Any]:
        """The JSON body webhooks send (DESIGN.md: Notifiers)."""
        body: dict[str, Any] = {
            "id": self.id,
            "type": "trial.test" if self.test else "trial.changed",
            "nct_id": self.nct_id,
            "title": self.title,
            "url": self.url,
            "version": self.version,
            "events": [dict(e) for e in self.events],
        }
        return body


class NotifierConfig(BaseModel):
    """Base for a notifier's settings; unknown keys are an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ConfigurationError(Exception):
    """A channel's configuration is unusable; ``key`` names the offending config key.

    ``str(err)`` is ``"<key>: <message>"``, e.g.
    ``channels.team-mail.password_env: environment variable TRIALWATCH_SMTP_PASSWORD is not
    set``. Notifier constructors raise it with keys relative to their table
    (``password_env``); the registry prefixes them with ``channels.<name>.``.
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(key, message)
        self.key = key
        self.message = message

    def __str__(self) -> str:
        return f"{self.key}: {self.message}" if self.key else self.message

    def with_prefix(self, prefix: str) -> ConfigurationError:
        """The same error with ``key`` under ``prefix`` (``channels.x`` + ``port``)."""
        key = f"{prefix}.{self.key}" if self.key else prefix
        return ConfigurationError(key, self.message)


class DeliveryError(Exception):
    """A notifier could not deliver an alert; the outbox will retry it.

    The message names the destination and the reason, never a secret.
    """


ENV_VAR_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"

#: The name of an environment variable (for ``password_env`` / ``secret_env`` fields).
EnvVarName = Annotated[str, Field(pattern=ENV_VAR_PATTERN, max_length=200)]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_SECONDS = MappingProxyType({"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400})


def _parse_seconds(value: object) -> object:
    """``30``, ``2.5``, ``"90s"``, ``"5m"`` → seconds; anything else is left to pydantic."""
    if isinstance(value, str) and (match := _DURATION.match(value)):
        return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    return value


#: A positive timeout in seconds; also accepts duration strings like ``"90s"`` or ``"5m"``.
Seconds = Annotated[float, BeforeValidator(_parse_seconds), Field(gt=0, le=3600)]


def secret_from_env(env: Mapping[str, str], key: str, variable: str) -> SecretStr:
    """Read the secret held by environment variable ``variable`` (named by config ``key``)."""
    value = env.get(variable)
    if value is None:
        raise ConfigurationError(key, f"environment variable {variable} is not set")
    if not value:
        raise ConfigurationError(key, f"environment variable {variable} is empty")
    return SecretStr(value)


@runtime_checkable
class Notifier(Protocol):
    """A delivery channel. Built-ins and plugins (entry point group ``trialwatch.notifiers``).

    ``name`` is the ``type`` used in ``[channels.X]``; ``Config`` validates that table (minus
    ``type``); the instance is built as ``Cls(config, env)`` with the validated config and the
    process environment (secrets are read from variables the config names; a missing one
    raises ``ConfigurationError``). ``send`` raises ``DeliveryError`` on failure.
    """

    name: ClassVar[str]
    #: Annotate implementations as ``ClassVar[type[NotifierConfig]]`` too (class variables
    #: are invariant), and assign the concrete model: ``Config = EmailConfig``.
    Config: ClassVar[type[NotifierConfig]]

    def __init__(self, config: Any, env: Mapping[str, str]) -> None: ...

    def send(self, alert: Alert) -> None: ...
