"""More of the record that users watch: results submitted but not posted, expanded access,
the IPD sharing statement, and what moved inside posted results."""

from __future__ import annotations

import copy
from typing import Any

from docmaker import SEED_JSON, WITH_RESULTS, module, record, study
from shared_data import real_study

from trialwatch.monitor.diff import diff_records
from trialwatch.monitor.events import ChangeEvent
from trialwatch.monitor.sources.ctgov.parser import parse_study


def events(old: dict[str, Any], new: dict[str, Any]) -> list[ChangeEvent]:
    return diff_records(record(old), record(new))


def only_event(old: dict[str, Any], new: dict[str, Any]) -> ChangeEvent:
    found = events(old, new)
    assert len(found) == 1, [e.summary for e in found]
    return found[0]


def with_unposted(doc: dict[str, Any], *items: dict[str, Any]) -> dict[str, Any]:
    doc["annotationSection"] = {"annotationModule": {"unpostedAnnotation": {
        "unpostedResponsibleParty": "Sponsor", "unpostedEvents": list(items)}}}
    return doc


def test_results_submitted_is_a_high_results_event() -> None:
    new = with_unposted(study(SEED_JSON), {"type": "RELEASE", "date": "2026-03-02"})
    event = only_event(study(SEED_JSON), new)
    assert (event.kind, event.severity, event.field) == ("results", "high",
                                                         "results.unposted_events")
    assert event.summary == "Results submitted (not yet posted): 2026-03-02"


def test_results_returned_after_quality_control_is_a_results_event() -> None:
    old = with_unposted(study(SEED_JSON), {"type": "RELEASE", "date": "2026-03-02"})
    new = with_unposted(study(SEED_JSON), {"type": "RELEASE", "date": "2026-03-02"},
                        {"type": "RESET", "date": "2026-04-10"})
    event = only_event(old, new)
    assert (event.kind, event.severity) == ("results", "medium")
    assert event.summary == \
        "Results returned after quality-control review (not posted): 2026-04-10"


def test_repeated_undated_cancellations_count_as_a_multiset() -> None:
    cancel = {"type": "UNRELEASE", "dateUnknown": True}
    old = with_unposted(study(SEED_JSON), {"type": "RELEASE", "date": "2026-01-01"}, cancel)
    new = with_unposted(study(SEED_JSON), {"type": "RELEASE", "date": "2026-01-01"}, cancel,
                        {"type": "RELEASE", "date": "2026-02-01"}, cancel)
    assert sorted(e.summary for e in events(old, new)) == [
        "Results submission cancelled", "Results submitted (not yet posted): 2026-02-01"]


def test_real_unposted_events_are_read() -> None:
    record_ = parse_study(real_study("NCT03447678"))
    unposted = record_.get("results", "unposted_events")
    assert unposted and {e["type"] for e in unposted} <= {"RELEASE", "RESET", "UNRELEASE"}


def test_expanded_access_becoming_available_is_a_status_event() -> None:
    old = study(SEED_JSON)
    module(old, "statusModule")["expandedAccessInfo"] = {"hasExpandedAccess": False}
    new = copy.deepcopy(old)
    module(new, "statusModule")["expandedAccessInfo"] = {"hasExpandedAccess": True}
    event = only_event(old, new)
    assert (event.kind, event.severity) == ("status", "medium")
    assert event.summary == "Expanded access available: no → yes"


def test_ipd_sharing_plan_change_is_an_event() -> None:
    old = study(SEED_JSON)
    module(old, "ipdSharingStatementModule")["ipdSharing"] = "UNDECIDED"
    new = copy.deepcopy(old)
    module(new, "ipdSharingStatementModule").update(
        {"ipdSharing": "YES", "description": "IPD via Vivli after publication."})
    summaries = sorted(e.summary for e in events(old, new))
    assert summaries == ["Data sharing statement: (none) → IPD via Vivli after publication.",
                         "Plan to share participant data: Undecided → Yes"]


def test_changed_outcome_measure_results_say_which_measure_moved() -> None:
    old = study(WITH_RESULTS)
    new = copy.deepcopy(old)
    measure = new["resultsSection"]["outcomeMeasuresModule"]["outcomeMeasures"][0]
    measure["classes"][0]["categories"][0]["measurements"][0]["value"] = "99"
    event = only_event(old, new)
    assert (event.kind, event.field) == ("results", "results.outcome_measures")
    assert event.summary == ("Results updated: outcome measures: "
                             "Local Injection Site Reactogenicity changed")


def test_added_outcome_measure_is_named() -> None:
    old = study(WITH_RESULTS)
    new = copy.deepcopy(old)
    measures = new["resultsSection"]["outcomeMeasuresModule"]["outcomeMeasures"]
    measures.append({**measures[0], "title": "Antibody titers at day 57", "type": "SECONDARY"})
    assert only_event(old, new).summary == \
        "Results updated: outcome measure added: Antibody titers at day 57"


def test_adverse_events_update_says_what_moved() -> None:
    old = study(WITH_RESULTS)
    new = copy.deepcopy(old)
    other = new["resultsSection"]["adverseEventsModule"]["otherEvents"]
    other.append({**other[0], "term": "Headache"})
    assert only_event(old, new).summary == \
        "Results updated: adverse events (other event terms 8 → 9)"


def test_participant_flow_update_is_a_results_event() -> None:
    old = study(WITH_RESULTS)
    new = copy.deepcopy(old)
    new["resultsSection"]["participantFlowModule"]["periods"][0]["title"] = "Treatment period"
    event = only_event(old, new)
    assert event.kind == "results"
    assert event.summary.startswith("Results updated: participant flow (periods ")


def test_results_first_posted_is_still_one_event() -> None:
    from docmaker import post_results

    summaries = [e.summary for e in events(study(SEED_JSON), post_results(study(SEED_JSON)))
                 if e.kind == "results"]
    assert summaries == ["Results first posted: 2026-06-01 (actual)"]


def test_expanded_access_the_registry_stops_mentioning_is_no_change() -> None:
    old = study(SEED_JSON)
    module(old, "statusModule")["expandedAccessInfo"] = {"hasExpandedAccess": False}
    assert events(old, study(SEED_JSON)) == []
