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

from trialwatch.monitor.redaction import MIN_SECRET_LENGTH

STUDY_URL = "https://clinicaltrials.gov/study/{nct_id}"
HOME_URL = "https://clinicaltrials.gov/"

#: ``Alert.kind``: one trial version's events, a digest of many, or news about the monitor.
ALERT_KINDS = ("trial", "digest", "system")


def dashboard_link(base_url: str | None, nct_id: str, from_version: int | None,
                   to_version: int | None) -> str | None:
    """``{base}/trials/NCT…?from=V-1&to=V``: the dashboard's diff of that version (None
    without ``[web] base_url``; the trial page alone for a first version)."""
    if not base_url:
        return None
    page = f"{base_url.rstrip('/')}/trials/{nct_id}"
    if to_version is None or to_version < 2:
        return page
    start = from_version if from_version is not None and from_version < to_version \
        else to_version - 1
    return f"{page}?from={start}&to={to_version}"


@dataclass(frozen=True)
class DigestTrial:
    """One trial's part of a digest: its events since the last digest, most severe first."""

    nct_id: str
    title: str | None
    events: Sequence[Mapping[str, Any]]
    dashboard_url: str | None = None

    @property
    def url(self) -> str:
        return STUDY_URL.format(nct_id=self.nct_id)

    def payload(self) -> dict[str, Any]:
        return {"nct_id": self.nct_id, "title": self.title, "url": self.url,
                "dashboard_url": self.dashboard_url, "events": [dict(e) for e in self.events]}


@dataclass(frozen=True)
class Alert:
    """What a channel is sent. ``events`` are DESIGN.md event dicts.

    ``kind`` "trial": one trial version's events (``nct_id``, ``version``); "digest": the
    trials in ``trials`` (``nct_id`` empty, ``events`` all of theirs); "system": news about
    the monitor, ``system`` = ``{"subject", "state", "since", "reason", "summary"}``.
    ``dashboard_url`` links to the dashboard's diff of the version (``[web] base_url``).
    ``done_targets`` are the destinations of a multi-target channel (Apprise URLs) that
    already have this alert: a retry skips them.
    """

    id: str
    channel: str
    nct_id: str
    title: str | None
    version: int
    events: Sequence[Mapping[str, Any]]
    test: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)
    kind: str = "trial"
    dashboard_url: str | None = None
    trials: Sequence[DigestTrial] = ()
    system: Mapping[str, Any] | None = None
    period: tuple[str, str] | None = None
    done_targets: frozenset[str] = frozenset()

    @property
    def url(self) -> str:
        """The trial's page; a test alert, which has no trial, links to the registry's home."""
        if self.test:
            return HOME_URL
        return STUDY_URL.format(nct_id=self.nct_id) if self.nct_id else ""

    @property
    def headline(self) -> str:
        """The most important event's summary (events arrive sorted by severity)."""
        if self.test:
            return "Test alert"
        if self.kind == "system" and self.system is not None:
            return str(self.system.get("summary", "trialwatch"))
        if self.kind == "digest":
            count = sum(len(t.events) for t in self.trials)
            trials = len(self.trials)
            return (f"Digest: {count} change{'s' if count != 1 else ''} in {trials} "
                    f"trial{'s' if trials != 1 else ''}")
        if not self.events:
            return "No changes"
        first = str(self.events[0].get("summary", ""))
        more = len(self.events) - 1
        return f"{first} (+{more} more)" if more else first

    def payload(self) -> dict[str, Any]:
        """The JSON body webhooks send (DESIGN.md: Notifiers; README: JSON shapes)."""
        if self.kind == "digest":
            return {"id": self.id, "type": "trials.digest", "channel": self.channel,
                    "since": self.period[0] if self.period else None,
                    "until": self.period[1] if self.period else None,
                    "trials": [t.payload() for t in self.trials]}
        if self.kind == "system":
            return {"id": self.id, "type": "monitor.system", **dict(self.system or {})}
        body: dict[str, Any] = {
            "id": self.id,
            "type": "trial.test" if self.test else "trial.changed",
            "nct_id": self.nct_id,
            "title": self.title,
            "url": self.url,
            "dashboard_url": self.dashboard_url,
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


class PartialDelivery(DeliveryError):
    """Some destinations of a multi-target channel (Apprise URLs) got the alert, others not.

    ``done`` holds the target keys that have the alert now: this attempt's successes plus
    the alert's ``done_targets``. The outbox stores them with the retry, so the retry goes
    only to the targets that failed.
    """

    def __init__(self, message: str, done: frozenset[str]) -> None:
        super().__init__(message)
        self.done = done


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
    """Read the secret held by environment variable ``variable`` (named by config ``key``).

    A secret shorter than ``MIN_SECRET_LENGTH`` (8) is refused: it would be guessable, and
    masking it in messages would either mangle them or miss it."""
    value = env.get(variable)
    if value is None:
        raise ConfigurationError(key, f"environment variable {variable} is not set")
    if not value:
        raise ConfigurationError(key, f"environment variable {variable} is empty")
    if len(value) < MIN_SECRET_LENGTH:
        raise ConfigurationError(key, f"environment variable {variable} holds a secret of "
                                      f"{len(value)} characters; at least {MIN_SECRET_LENGTH} "
                                      "are needed")
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
