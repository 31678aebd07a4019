"""Change events about results: submissions not yet posted, and what moved in posted results.

Pure functions over the record's ``results`` fields (``trialwatch.monitor.sources.ctgov.
results`` reads them). Every event is of kind ``results``: a submission is the signal
results trackers watch the website for ("Results submitted (not yet posted)"), and a
posted result that changes says which part moved ("Results updated: outcome measures").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from trialwatch.monitor.events import ChangeEvent, shorten

RESULTS_CONTENT = ("participant_flow", "baseline", "outcome_measures", "adverse_events")
UNPOSTED: dict[str, tuple[str, str]] = {
    "RELEASE": ("high", "Results submitted (not yet posted)"),
    "RESET": ("medium", "Results returned after quality-control review (not posted)"),
    "UNRELEASE": ("medium", "Results submission cancelled"),
}
_NAMES = {"participant_flow": "participant flow", "baseline": "baseline characteristics",
          "adverse_events": "adverse events", "outcome_measures": "outcome measures"}
_COUNTS = {"groups": "groups", "periods": "periods", "measures": "measures",
           "serious": "serious event terms", "other": "other event terms"}


def _event(nct_id: str, field: str, old: Any, new: Any, severity: str,
           summary: str) -> ChangeEvent:
    return ChangeEvent(nct_id=nct_id, kind="results", field=f"results.{field}", old=old,
                       new=new, severity=severity, summary=summary)


def unposted_changes(nct_id: str, old: list[Any], new: list[Any]) -> list[ChangeEvent]:
    """One event per unposted event the new version adds (a multiset: the registry
    repeats ``UNRELEASE`` without a date); events that disappear (results posted) say
    nothing of their own."""
    seen = Counter(_key(e) for e in old if isinstance(e, Mapping))
    events = []
    for item in new:
        if not isinstance(item, Mapping):
            continue
        if seen[_key(item)] > 0:
            seen[_key(item)] -= 1
            continue
        severity, label = UNPOSTED.get(str(item.get("type")), (
            "medium", f"Results event {item.get('type')} (not posted)"))
        when = f": {item['date']}" if item.get("date") else ""
        events.append(_event(nct_id, "unposted_events", None, dict(item), severity,
                             f"{label}{when}"))
    return events


def _key(item: Mapping[str, Any]) -> tuple[str, str]:
    return str(item.get("type")), str(item.get("date"))


def content_changes(nct_id: str, key: str, old: Any, new: Any) -> list[ChangeEvent]:
    """What moved in one part of the posted results."""
    if key == "outcome_measures":
        return _measure_changes(nct_id, old if isinstance(old, list) else [],
                                new if isinstance(new, list) else [])
    name = _NAMES[key]
    if old is None or new is None:
        verb = "added" if old is None else "removed"
        return [_event(nct_id, key, old, new, "medium", f"Results {name} {verb}")]
    if not (isinstance(old, Mapping) and isinstance(new, Mapping)):
        return [_event(nct_id, key, old, new, "medium", f"Results updated: {name}")]
    moved = [f"{_COUNTS[k]} {_count(old.get(k))} → {_count(new.get(k))}"
             for k in _COUNTS if k in old and k in new and old[k] != new[k]]
    detail = f" ({shorten('; '.join(moved), 80)})" if moved else ""
    return [_event(nct_id, key, old, new, "medium", f"Results updated: {name}{detail}")]


def _count(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "(none)"
    return str(value)


def _measure_changes(nct_id: str, old: list[Any], new: list[Any]) -> list[ChangeEvent]:
    def by_title(items: list[Any]) -> dict[tuple[str, str], Mapping[str, Any]]:
        return {(str(m.get("type")), str(m.get("title"))): m for m in items
                if isinstance(m, Mapping)}

    before, after = by_title(old), by_title(new)
    events = []
    for ident in sorted(after.keys() - before.keys()):
        events.append(_event(nct_id, "outcome_measures", None, dict(after[ident]), "medium",
                             f"Results updated: outcome measure added: {shorten(ident[1], 90)}"))
    for ident in sorted(before.keys() - after.keys()):
        events.append(_event(nct_id, "outcome_measures", dict(before[ident]), None, "medium",
                             "Results updated: outcome measure removed: "
                             f"{shorten(ident[1], 90)}"))
    for ident in sorted(before.keys() & after.keys()):
        a, b = before[ident], after[ident]
        if a == b:
            continue
        status = (f" (reporting {a.get('status')} → {b.get('status')})"
                  if a.get("status") != b.get("status") else "")
        events.append(_event(nct_id, "outcome_measures", dict(a), dict(b), "medium",
                             "Results updated: outcome measures: "
                             f"{shorten(ident[1], 90)} changed{status}"))
    return events
