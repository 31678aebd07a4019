"""What a notifier is: the ``Alert`` it receives and the ``Notifier`` protocol it implements.

One alert = one trial version's change events for one channel, after the channel's
subscription filter. ``Alert.id`` is stable: the same alert retried keeps its id, so a
receiver can de-duplicate (it is the ``webhook-id`` of a signed webhook).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

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


class DeliveryError(Exception):
    """A notifier could not deliver an alert; the outbox will retry it."""


@runtime_checkable
class Notifier(Protocol):
    """A delivery channel. Built-ins and plugins (entry point group ``trialwatch.notifiers``).

    ``name`` is the ``type`` used in ``[channels.X]``; ``Config`` validates that table (minus
    ``type``); the instance is built with the validated config and the process environment
    (secrets are read from variables the config names). ``send`` raises on failure.
    """

    name: ClassVar[str]
    Config: ClassVar[type[NotifierConfig]]

    def send(self, alert: Alert) -> None: ...
