"""Change events: the typed, JSON-ready description of one meaningful change between versions.

This module owns the vocabulary (event kinds, severities) and the way values are spoken
about in summaries ("Not yet recruiting", "2028-06-30 (estimated)"). It does no diffing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from typing import Any

KINDS: tuple[str, ...] = (
    "status", "results", "enrollment", "dates", "phase", "eligibility", "outcomes",
    "locations", "sponsor", "contacts", "design", "arms", "description", "identifiers",
    "other", "new_trial", "removed",
)
DEFAULT_NOTIFY_KINDS: tuple[str, ...] = ("status", "results")
#: Alerts about the monitor itself (failing checks, a dead channel): asked for by name only.
SYSTEM_KIND = "system"
SEVERITIES: tuple[str, ...] = ("low", "medium", "high")
_DIGIT_AFTER_LETTER = re.compile(r"([a-z])(\d)")
SEVERITY_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}


def iso_utc(moment: datetime) -> str:
    """``2026-11-25T12:00:00Z``: how events (``detected_at``) and every JSON time are stamped."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso_utc(value: object) -> datetime | None:
    """An ``iso_utc`` stamp (or any ISO-8601 time; naive means UTC) read back; None for
    anything that is not one."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def event_json(nct_id: str, row: Any) -> dict[str, Any]:
    """A stored event (a ``storage.models.Event`` row, or anything with its attributes) as
    DESIGN.md's event JSON, with its measures (``days``, ``percent``)."""
    return {"nct_id": nct_id, "kind": row.kind, "field": row.field, "old": row.old,
            "new": row.new, **measures(row.kind, row.old, row.new),
            "severity": row.severity, "from_version": row.from_version,
            "to_version": row.to_version, "detected_at": iso_utc(row.detected_at),
            "summary": row.summary}


@dataclass(frozen=True)
class ChangeEvent:
    """One change, as DESIGN.md's event JSON. Versions are filled in when it is stored."""

    nct_id: str
    kind: str
    field: str
    old: Any
    new: Any
    severity: str
    summary: str
    from_version: int | None = None
    to_version: int | None = None
    detected_at: str | None = None

    def at(self, *, from_version: int | None, to_version: int | None,
           detected_at: str | None) -> ChangeEvent:
        return replace(self, from_version=from_version, to_version=to_version,
                       detected_at=detected_at)

    def to_json(self) -> dict[str, Any]:
        return {
            "nct_id": self.nct_id,
            "kind": self.kind,
            "field": self.field,
            "old": self.old,
            "new": self.new,
            **measures(self.kind, self.old, self.new),
            "severity": self.severity,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "detected_at": self.detected_at,
            "summary": self.summary,
        }


def measures(kind: str, old: Any, new: Any) -> dict[str, Any]:
    """The structured delta threshold rules read: ``{"days"}`` for a ``dates`` event (new −
    old in days, null when either side has no date), ``{"percent"}`` for an ``enrollment``
    event ((new − old) / old × 100, one decimal; null when old is 0 or missing); else ``{}``."""
    if kind == "dates":
        old_day, new_day = _day(old), _day(new)
        return {"days": (new_day - old_day).days if old_day and new_day else None}
    if kind == "enrollment":
        old_count, new_count = _count(old), _count(new)
        if not old_count or new_count is None:
            return {"percent": None}
        return {"percent": round((new_count - old_count) / old_count * 100, 1)}
    return {}


def _day(value: Any) -> date | None:
    """A registry date (``2028-06-30``, ``2028-06`` = the 1st, ``2028``) or its struct."""
    if isinstance(value, dict):
        value = value.get("date")
    if not isinstance(value, str):
        return None
    match = re.fullmatch(r"(\d{4})(?:-(\d{2}))?(?:-(\d{2}))?", value.strip())
    if match is None:
        return None
    try:
        return date(int(match.group(1)), int(match.group(2) or 1), int(match.group(3) or 1))
    except ValueError:
        return None


def _count(value: Any) -> int | None:
    if isinstance(value, dict):
        value = value.get("count")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


def change_rank(kind: str | None, severity: str | None) -> tuple[int, int]:
    """How a change ranks among others (smaller first): most severe, then by kind order;
    an unknown severity counts as low, an unknown kind comes last."""
    return (-SEVERITY_RANK.get(severity or "", 0),
            KINDS.index(kind) if kind in KINDS else len(KINDS))


def sort_key(event: ChangeEvent) -> tuple[int, int, str, str]:
    """Most severe first, then by kind order and field: stable, deterministic output."""
    return (-SEVERITY_RANK[event.severity], KINDS.index(event.kind), event.field, event.summary)


def humanize(value: Any) -> str:
    """Registry enums and values as a person reads them: NOT_YET_RECRUITING → Not yet recruiting."""
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        if "date" in value:
            kind = value.get("type")
            return f"{value['date']} ({kind.lower()})" if kind else str(value["date"])
        if "count" in value:
            return str(value["count"])
        return ", ".join(f"{k}: {humanize(v)}" for k, v in sorted(value.items()) if v is not None)
    if isinstance(value, list):
        return ", ".join(humanize(v) for v in value) if value else "(none)"
    text = str(value)
    if text == "NA":
        return "Not applicable"
    if text.isupper() and " " not in text:
        words = _DIGIT_AFTER_LETTER.sub(r"\1 \2", text.replace("_", " ").lower())
        return words[:1].upper() + words[1:]
    return text


def quote(value: Any) -> str:
    """Registry free text as written ("FDA", "GLIOMAX-101", zip "S2000CVB"); only the shape
    of a value is put into words: none, yes/no, a date with its type, a count with thousands
    separators, lists and tables. Enumerations are ``humanize``'s job."""
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, dict):
        if "date" in value:
            kind = value.get("type")
            return f"{value['date']} ({kind.lower()})" if kind else str(value["date"])
        if "count" in value:
            return quote(value["count"])
        return ", ".join(f"{k}: {quote(v)}" for k, v in sorted(value.items()) if v is not None)
    if isinstance(value, list):
        return ", ".join(quote(v) for v in value) if value else "(none)"
    return str(value)


def shorten(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
