"""Time expressions used in configuration: durations ("90s", "1h30m") and 5-field cron.

Both parsers are pure and raise ``ValueError`` with a message meant for the user (it
quotes the offending text and shows valid examples); ``trialwatch.monitor.config.settings`` turns
that into a
``ConfigError`` naming the key.

A cron expression is the classic ``minute hour day month weekday``. ``parse_cron`` checks
every field's values and returns them in the form APScheduler's ``CronTrigger(**fields)``
takes. The weekday field is rewritten as day names because APScheduler numbers weekdays
from Monday (0 = mon) while cron numbers them from Sunday (0 and 7 = sun): passing
``1-5`` through unchanged would silently run Tuesday to Saturday.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

DURATION_EXAMPLES = "use e.g. 90s, 5m, 6h, 1d"

_UNIT_SECONDS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION_RE = re.compile(r"^(?:(\d+)w)?\s*(?:(\d+)d)?\s*(?:(\d+)h)?\s*(?:(\d+)m)?\s*(?:(\d+)s)?$")


def parse_duration(value: str | int | timedelta) -> timedelta:
    """``"90s"``, ``"5m"``, ``"6h"``, ``"1d"``, ``"1h30m"`` or an int of seconds → timedelta.

    Units are w, d, h, m, s, largest first; a bare number (int or digit string) is seconds.
    Zero, negative, fractional and anything else raises ``ValueError``.
    """
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
        if seconds <= 0:
            raise ValueError(f"invalid duration {format_duration(value)!r}: must be positive")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"invalid duration: expected text or whole seconds ({DURATION_EXAMPLES})")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"invalid duration {value}: must be positive ({DURATION_EXAMPLES})")
        return timedelta(seconds=value)
    text = value.strip().lower()
    if text.isdigit():
        seconds = int(text)
    else:
        match = _DURATION_RE.match(text)
        if not text or match is None or not any(match.groups()):
            raise ValueError(f"invalid duration {value!r} ({DURATION_EXAMPLES})")
        seconds = sum(
            int(amount) * factor
            for amount, factor in zip(match.groups(), _UNIT_SECONDS.values(), strict=True)
            if amount
        )
    if seconds <= 0:
        raise ValueError(f"invalid duration {value!r}: must be positive ({DURATION_EXAMPLES})")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The shortest config spelling of ``value``: ``timedelta(hours=1, minutes=30)`` → "1h30m"."""
    total = int(value.total_seconds())
    if total <= 0:
        return f"{total}s"
    parts = []
    for unit, factor in _UNIT_SECONDS.items():
        if unit == "w":
            continue
        amount, total = divmod(total, factor)
        if amount:
            parts.append(f"{amount}{unit}")
    return "".join(parts)


# --- cron -------------------------------------------------------------------------------

CRON_FIELDS = ("minute", "hour", "day", "month", "day_of_week")
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# field -> (lowest, highest, names for lowest.., or empty)
_RANGES: dict[str, tuple[int, int, tuple[str, ...]]] = {
    "minute": (0, 59, ()),
    "hour": (0, 23, ()),
    "day": (1, 31, ()),
    "month": (1, 12, _MONTHS),
    "day_of_week": (0, 7, _DAYS),
}
_ITEM_RE = re.compile(r"^(\*|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/(\d+))?$")


@dataclass(frozen=True)
class CronSchedule:
    """A validated cron expression; ``fields()`` feeds ``apscheduler.triggers.cron.CronTrigger``."""

    expression: str
    minute: str
    hour: str
    day: str
    month: str
    day_of_week: str

    def fields(self) -> dict[str, str]:
        """Keyword arguments for ``CronTrigger`` (weekday already in day names)."""
        return {name: getattr(self, name) for name in CRON_FIELDS}


def _field_value(token: str, name: str) -> int:
    low, high, names = _RANGES[name]
    if token.isdigit():
        number = int(token)
    elif token in names:
        number = names.index(token) + low
    else:
        raise ValueError(f"{token!r} is not a valid {name.replace('_', ' ')}")
    if not low <= number <= high:
        raise ValueError(f"{name.replace('_', ' ')} {number} is outside {low}-{high}")
    return number


def _expand(text: str, name: str) -> set[int]:
    """The set of values a cron field selects (validating it on the way)."""
    low, high, _ = _RANGES[name]
    selected: set[int] = set()
    for item in text.split(","):
        match = _ITEM_RE.match(item)
        if match is None:
            raise ValueError(f"cannot read {item!r} in the {name.replace('_', ' ')} field")
        span, step_text = match.groups()
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(f"step /{step_text} must be at least 1")
        if span == "*":
            first, last = low, high
        elif "-" in span:
            first_text, last_text = span.split("-")
            first, last = _field_value(first_text, name), _field_value(last_text, name)
            if first > last:
                raise ValueError(f"range {span!r} runs backwards")
        else:
            first = _field_value(span, name)
            last = high if step_text else first
        selected.update(range(first, last + 1, step))
    return selected


def parse_cron(expression: str) -> CronSchedule:
    """Validate a 5-field cron expression (numbers, names, ``*``, ranges, lists, steps)."""
    parts = expression.lower().split()
    if len(parts) != 5:
        raise ValueError(
            f"invalid cron expression {expression!r}: expected 5 fields "
            f"(minute hour day month weekday), got {len(parts)}"
        )
    selected: dict[str, set[int]] = {}
    for name, part in zip(CRON_FIELDS, parts, strict=True):
        try:
            selected[name] = _expand(part, name)
        except ValueError as exc:
            raise ValueError(f"invalid cron expression {expression!r}: {exc}") from None
    minute, hour, day, month, weekday = parts
    if weekday != "*":
        days = sorted({number % 7 for number in selected["day_of_week"]})
        weekday = ",".join(_DAYS[number] for number in days)
    return CronSchedule(expression, minute, hour, day, month, weekday)
