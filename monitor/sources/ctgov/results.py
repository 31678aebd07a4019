"""What the registry says about a trial's results, beyond which results sections exist.

Pure functions, used by the API v2 parser. Posted results are large (a megabyte of tables),
so the record keeps what a change is told by, not the tables: per outcome measure its
title, type, reporting status and a digest of its content; per other module (participant
flow, baseline characteristics, adverse events) a digest and its size in words a person
checks (groups, periods, measures, event terms). The raw document is stored beside the
record, so the tables are never lost. ``annotationSection`` adds the *unposted* events:
results submitted to the registry, returned after quality-control review, or cancelled,
before anything is posted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import orjson

__all__ = ["not_understood", "results_content", "unposted_events"]

RESULTS_FIELDS = ("participant_flow", "baseline", "outcome_measures", "adverse_events")


def _digest(value: Any) -> str:
    data = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(data).hexdigest()[:16]


def _items(module: Mapping[str, Any], key: str) -> list[Any]:
    value = module.get(key)
    return value if isinstance(value, list) else []


def _module(section: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    value = section.get(name)
    return value if isinstance(value, Mapping) else None


def _text(value: Any) -> str | None:
    return " ".join(value.split()) or None if isinstance(value, str) else None


def results_content(section: Mapping[str, Any] | None) -> dict[str, Any]:
    """The record's results fields from ``resultsSection`` (``None``: no results posted)."""
    if section is None:
        return {"participant_flow": None, "baseline": None, "outcome_measures": [],
                "adverse_events": None}
    out: dict[str, Any] = {}
    flow = _module(section, "participantFlowModule")
    out["participant_flow"] = None if flow is None else {
        "groups": len(_items(flow, "groups")),
        "periods": [_text(p.get("title")) for p in _items(flow, "periods")
                    if isinstance(p, Mapping)],
        "digest": _digest(flow)}
    baseline = _module(section, "baselineCharacteristicsModule")
    out["baseline"] = None if baseline is None else {
        "groups": len(_items(baseline, "groups")),
        "measures": len(_items(baseline, "measures")),
        "digest": _digest(baseline)}
    outcomes = _module(section, "outcomeMeasuresModule")
    measures = _items(outcomes, "outcomeMeasures") if outcomes is not None else []
    out["outcome_measures"] = [
        {"title": _text(m.get("title")), "type": _text(m.get("type")),
         "status": _text(m.get("reportingStatus")), "digest": _digest(m)}
        for m in measures if isinstance(m, Mapping)]
    events = _module(section, "adverseEventsModule")
    out["adverse_events"] = None if events is None else {
        "serious": len(_items(events, "seriousEvents")),
        "other": len(_items(events, "otherEvents")),
        "digest": _digest(events)}
    return out


def unposted_events(annotations: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """``annotationSection.annotationModule.unpostedAnnotation.unpostedEvents`` in the
    registry's order: ``{"type": RELEASE | RESET | UNRELEASE, "date"}`` (``date`` None
    when the registry does not know it)."""
    module = _module(annotations or {}, "annotationModule") or {}
    unposted = _module(module, "unpostedAnnotation") or {}
    found = []
    for event in _items(unposted, "unpostedEvents"):
        if isinstance(event, Mapping) and isinstance(event.get("type"), str):
            date = event.get("date")
            found.append({"type": event["type"], "date": date if isinstance(date, str) else None})
    return found


# What this release reads or knowingly passes over; anything else in a document is news.
KNOWN_SECTIONS = frozenset({"protocolSection", "derivedSection", "hasResults", "resultsSection",
                            "documentSection", "annotationSection"})
KNOWN_MODULES = frozenset({
    "identificationModule", "statusModule", "sponsorCollaboratorsModule", "oversightModule",
    "descriptionModule", "conditionsModule", "designModule", "armsInterventionsModule",
    "outcomesModule", "eligibilityModule", "contactsLocationsModule", "referencesModule",
    "ipdSharingStatementModule"})
KNOWN_RESULTS = frozenset({"participantFlowModule", "baselineCharacteristicsModule",
                           "outcomeMeasuresModule", "adverseEventsModule", "moreInfoModule"})
KNOWN_UNPOSTED = frozenset({"RELEASE", "RESET", "UNRELEASE"})


def not_understood(doc: Mapping[str, Any]) -> tuple[str, ...]:
    """The fields of a study document this release does not know (a section, a module, an
    unposted event type the registry added since): the version is stored all the same,
    its raw document kept, and a later release can read them."""
    found = [key for key in doc if key not in KNOWN_SECTIONS]
    protocol = doc.get("protocolSection")
    if isinstance(protocol, Mapping):
        found += [f"protocolSection.{k}" for k in protocol if k not in KNOWN_MODULES]
    results = doc.get("resultsSection")
    if isinstance(results, Mapping):
        found += [f"resultsSection.{k}" for k in results if k not in KNOWN_RESULTS]
    for event in unposted_events(_module(doc, "annotationSection")):
        if event["type"] not in KNOWN_UNPOSTED:
            found.append(f"annotationSection.unpostedEvents.type={event['type']}")
    return tuple(sorted(set(found)))
