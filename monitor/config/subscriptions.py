"""``[[subscriptions]]``: which events of which trials a channel gets, and how often.

A subscription selects events by kind, severity and trial (or saved query), then by its
*threshold rules* on the event's structured delta (``trialwatch.monitor.events.measures``):
``min_date_shift`` (``dates`` events whose ``|days|`` is smaller are not sent),
``min_enrollment_change`` (``enrollment`` events whose ``|percent|`` is smaller are not
sent) and ``statuses`` (``overall_status`` events only when the new status is listed).
Rules filter alerts only: every event is still stored and shown.

``digest`` turns per-version alerts into one message per period (``daily``, ``weekly`` or a
duration), optionally at ``digest_at`` (``HH:MM`` in ``schedule.timezone``); the period
arithmetic is ``digest_due`` here, the sending is ``trialwatch.monitor.digests``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictStr,
    field_validator,
    model_validator,
)

from trialwatch.monitor.config.durations import parse_duration
from trialwatch.monitor.config.values import Duration, NctId, NonEmptyStr, invalid
from trialwatch.monitor.events import DEFAULT_NOTIFY_KINDS, KINDS, SEVERITIES, SYSTEM_KIND, measures

Severity = Literal["low", "medium", "high"]
#: What ``kinds`` may list: every change kind, ``system`` (alerts about the monitor), ``all``.
SUBSCRIBABLE_KINDS: tuple[str, ...] = (*KINDS, SYSTEM_KIND)
_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%?\s*$")
_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_NAMED_PERIODS = {"daily": timedelta(days=1), "weekly": timedelta(days=7)}
#: Weekly digests with ``digest_at`` go out on Mondays (2024-01-01 was one).
_ANCHOR_DAY = (2024, 1, 1)


def _percent(value: object) -> object:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and (match := _PERCENT.match(value)):
        return float(match.group(1))
    if isinstance(value, str):
        invalid(f"invalid percentage {value!r} (use e.g. \"20%\")")
    return value


class Subscription(BaseModel):
    """``[[subscriptions]]``: which events of which trials a channel receives."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    channel: NonEmptyStr
    kinds: tuple[StrictStr, ...] = DEFAULT_NOTIFY_KINDS
    trials: tuple[NctId, ...] | None = None
    queries: tuple[NonEmptyStr, ...] | None = None
    min_severity: Severity = "low"
    min_date_shift: Duration | None = None
    min_enrollment_change: Annotated[float, BeforeValidator(_percent), Field(ge=0)] | None = None
    statuses: tuple[NonEmptyStr, ...] | None = None
    digest: StrictStr | None = None
    digest_at: StrictStr | None = None

    @field_validator("kinds", mode="before")
    @classmethod
    def _one_kind_as_list(cls, kinds: Any) -> Any:
        """``kinds = "all"`` (or one kind) means the same as ``kinds = ["all"]``."""
        return (kinds,) if isinstance(kinds, str) else kinds

    @field_validator("kinds")
    @classmethod
    def _known_kinds(cls, kinds: tuple[str, ...]) -> tuple[str, ...]:
        if not kinds:
            invalid("list at least one event kind (or \"all\")")
        for index, kind in enumerate(kinds):
            if kind != "all" and kind not in SUBSCRIBABLE_KINDS:
                invalid(f"unknown event kind {kind!r} (use all, {', '.join(SUBSCRIBABLE_KINDS)})",
                        index)
        return tuple(dict.fromkeys(kinds))

    @field_validator("statuses")
    @classmethod
    def _upper_statuses(cls, statuses: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if statuses is None:
            return None
        if not statuses:
            invalid("list at least one status (e.g. \"TERMINATED\")")
        return tuple(s.strip().upper().replace(" ", "_") for s in statuses)

    @field_validator("digest")
    @classmethod
    def _valid_digest(cls, value: str | None) -> str | None:
        if value is not None and value not in _NAMED_PERIODS:
            try:
                parse_duration(value)
            except ValueError as exc:
                invalid(f"{exc}; or \"daily\" / \"weekly\"")
        return value

    @field_validator("digest_at")
    @classmethod
    def _valid_clock(cls, value: str | None) -> str | None:
        if value is not None and not _CLOCK.match(value):
            invalid(f"invalid time of day {value!r} (use HH:MM, e.g. \"08:00\")")
        return value

    @model_validator(mode="after")
    def _digest_at_needs_digest(self) -> Subscription:
        if self.digest_at is not None and self.digest is None:
            invalid("digest_at needs digest (\"daily\", \"weekly\" or a duration)",
                    "digest_at")
        return self

    @property
    def digest_period(self) -> timedelta | None:
        if self.digest is None:
            return None
        return _NAMED_PERIODS.get(self.digest) or parse_duration(self.digest)

    @property
    def key(self) -> str:
        """A stable name for this subscription (its channel and a hash of its filters): the
        digest watermark is kept under it, so editing a digest subscription starts afresh."""
        body = json.dumps(self.model_dump(mode="json", exclude={"digest_at"}), sort_keys=True)
        return f"{self.channel}:{hashlib.sha256(body.encode()).hexdigest()[:12]}"

    def wants_kind(self, kind: str) -> bool:
        """``all`` is every change kind; ``system`` alerts must be asked for by name."""
        if kind == SYSTEM_KIND:
            return SYSTEM_KIND in self.kinds
        return "all" in self.kinds or kind in self.kinds

    def matches(self, event: Mapping[str, Any], *, nct_id: str, query_names: set[str]) -> bool:
        """Does this subscription want ``event`` of trial ``nct_id`` (found via ``query_names``)?

        Kind must be listed (or ``all``), severity at least ``min_severity`` (missing counts
        as low), the threshold rules must pass. With ``trials`` and/or ``queries`` set, the
        trial must be listed or come from one of the queries; with neither, every trial
        matches.
        """
        if not self.wants_kind(str(event.get("kind"))):
            return False
        severity = event.get("severity")
        rank = SEVERITIES.index(severity) if severity in SEVERITIES else 0
        if rank < SEVERITIES.index(self.min_severity):
            return False
        if not self.passes_rules(event):
            return False
        if self.trials is None and self.queries is None:
            return True
        return nct_id in (self.trials or ()) or bool(query_names & set(self.queries or ()))

    def passes_rules(self, event: Mapping[str, Any]) -> bool:
        """The threshold rules. A delta that cannot be measured (a date added or removed, an
        enrollment from 0) is never filtered out: it is a change worth seeing."""
        kind = event.get("kind")
        delta = {**measures(str(kind), event.get("old"), event.get("new")), **{
            k: event[k] for k in ("days", "percent") if k in event}}
        if kind == "dates" and self.min_date_shift is not None:
            days = delta.get("days")
            if days is not None and abs(days) < self.min_date_shift / timedelta(days=1):
                return False
        if kind == "enrollment" and self.min_enrollment_change is not None:
            percent = delta.get("percent")
            if percent is not None and abs(percent) < self.min_enrollment_change:
                return False
        if kind == "status" and self.statuses is not None and event.get("field") == \
                "overall_status":
            return str(event.get("new")) in self.statuses
        return True


def digest_due(period: timedelta, at: str | None, tz: ZoneInfo, *, last: datetime,
               now: datetime) -> bool:
    """Is a digest due at ``now`` when the previous one (or the watermark's start) was at
    ``last``? Without ``at``: one ``period`` after ``last``. With ``at``: at the latest slot
    ``anchor + k × period`` (anchor: ``at`` on a Monday, local time) after ``last``."""
    if at is None:
        return now - last >= period
    return last < latest_slot(period, at, tz, now) <= now


def latest_slot(period: timedelta, at: str, tz: ZoneInfo, now: datetime) -> datetime:
    """The last ``anchor + k × period`` at or before ``now`` (in ``tz``'s wall-clock time)."""
    hour, minute = (int(part) for part in at.split(":"))
    anchor = datetime(*_ANCHOR_DAY, hour, minute)
    local = now.astimezone(tz).replace(tzinfo=None)
    steps = (local - anchor) // period
    return (anchor + steps * period).replace(tzinfo=tz)
