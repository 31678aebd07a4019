"""The diff as a specification: which edit of a real registry document gives which events.

Each test takes a real API v2 document, changes one thing (``tests/docmaker.py``) and
checks the change events ``diff_records`` reports: their kind, severity and summary, and
that what is not a change (reordering, registry bookkeeping, unknown fields) reports none.
"""

from __future__ import annotations

import pytest
from docmaker import (
    BIG,
    SEED_JSON,
    SEED_PAGE,
    add_criterion,
    add_site,
    edit,
    module,
    new_registry_day,
    post_results,
    record,
    reverse_criteria,
    reverse_sites,
    reword_criterion,
    reword_primary_outcome,
    set_date,
    set_enrollment,
    set_phases,
    set_status,
    study,
)

from trialwatch.monitor.diff import FIELD_RULES, diff_records
from trialwatch.monitor.events import KINDS, SEVERITIES, ChangeEvent
from trialwatch.monitor.record import SECTIONS, TrialRecord
from trialwatch.monitor.sources.text_page import parse_text_page


def events_between(old_doc: dict, new_doc: dict) -> list[ChangeEvent]:
    return diff_records(record(old_doc), record(new_doc))


def only_event(old_doc: dict, new_doc: dict) -> ChangeEvent:
    events = events_between(old_doc, new_doc)
    assert len(events) == 1, [e.summary for e in events]
    return events[0]


# --------------------------------------------------------------------------- one kind each


def test_status_change_is_one_high_status_event() -> None:
    event = only_event(study(SEED_JSON), set_status(study(SEED_JSON), "RECRUITING"))
    assert (event.kind, event.field, event.severity) == ("status", "overall_status", "high")
    assert (event.old, event.new) == ("NOT_YET_RECRUITING", "RECRUITING")
    assert event.summary == "Recruitment status: Not yet recruiting → Recruiting"
    assert event.nct_id == "NCT07328581"


def test_results_first_posted_is_one_high_results_event() -> None:
    event = only_event(study(SEED_JSON), post_results(study(SEED_JSON), "2026-06-01"))
    assert (event.kind, event.severity) == ("results", "high")
    assert event.summary.startswith("Results first posted")
    assert "2026-06-01" in event.summary


def test_enrollment_change_names_counts_and_types() -> None:
    event = only_event(study(SEED_JSON), set_enrollment(study(SEED_JSON), 24, "ACTUAL"))
    assert event.kind == "enrollment"
    assert event.summary == "Enrollment: 20 → 24 (estimated → actual)"


def test_primary_completion_moved_is_a_dates_event() -> None:
    new = set_date(study(SEED_JSON), "primaryCompletionDateStruct", "2028-09-30")
    event = only_event(study(SEED_JSON), new)
    assert (event.kind, event.field) == ("dates", "dates.primary_completion")
    assert event.summary == ("Primary completion date: 2028-06-30 (estimated) → "
                             "2028-09-30 (estimated)")


def test_phase_change_is_one_phase_event() -> None:
    event = only_event(study(SEED_JSON), set_phases(study(SEED_JSON), "PHASE2"))
    assert event.kind == "phase"
    assert (event.old, event.new) == (["PHASE1", "PHASE2"], ["PHASE2"])
    assert event.summary == "Phase: Phase 1, Phase 2 → Phase 2"


def test_one_criterion_added_is_exactly_one_eligibility_event() -> None:
    new = add_criterion(study(SEED_JSON), "exclusion", "Known hypersensitivity to tocilizumab")
    event = only_event(study(SEED_JSON), new)
    assert (event.kind, event.field) == ("eligibility", "eligibility.exclusion")
    assert event.old is None
    assert event.new == {"text": "Known hypersensitivity to tocilizumab"}
    assert event.summary == "Exclusion criterion added: Known hypersensitivity to tocilizumab"


def test_one_criterion_reworded_is_one_reworded_event() -> None:
    new = reword_criterion(study(SEED_JSON), "Has drug-induced SLE.",
                           "Has drug-induced SLE or cutaneous lupus only.")
    event = only_event(study(SEED_JSON), new)
    assert event.kind == "eligibility"
    assert event.summary == ("Exclusion criterion reworded: Has drug-induced SLE. → "
                             "Has drug-induced SLE or cutaneous lupus only.")


def test_primary_outcome_reworded_is_one_high_outcomes_event() -> None:
    base = study("NCT03934567")
    old_measure = module(base, "outcomesModule")["primaryOutcomes"][0]["measure"]
    new_measure = old_measure.replace("objective response rate", "complete response rate")
    assert new_measure != old_measure
    event = only_event(base, reword_primary_outcome(study("NCT03934567"), 0, new_measure))
    assert (event.kind, event.field, event.severity) == ("outcomes", "outcomes.primary", "high")
    assert event.old["measure"] == old_measure
    assert event.new["measure"] == new_measure


def test_one_site_added_among_1148_is_exactly_one_locations_event() -> None:
    new = add_site(study(BIG), "Hôpital Test de Lyon", "Lyon", "France")
    event = only_event(study(BIG), new)
    assert (event.kind, event.field) == ("locations", "locations.sites")
    assert event.summary == "Site added: Hôpital Test de Lyon, Lyon, France"


def test_a_changed_arm_spells_out_what_moved_inside_it() -> None:
    def add_intervention(doc: dict) -> None:
        arm = module(doc, "armsInterventionsModule")["armGroups"][0]
        arm["interventionNames"] = [*arm["interventionNames"], "Drug: Cyclophosphamide"]
        arm["type"] = "ACTIVE_COMPARATOR"

    event = only_event(study(SEED_JSON), edit(study(SEED_JSON), add_intervention))
    assert (event.kind, event.field) == ("arms", "arms.arm_groups")
    assert event.summary == ("Arm changed: Single arm: interventions + Cyclophosphamide; "
                             "type Experimental → Active comparator")


def test_every_site_closing_at_once_is_one_event_per_kind_of_change_not_one_per_site() -> None:
    def close_all(doc: dict) -> None:
        for site in module(doc, "contactsLocationsModule")["locations"]:
            site["status"] = "COMPLETED"

    events = events_between(study(BIG), edit(study(BIG), close_all))
    assert all(e.kind == "locations" for e in events)
    assert 1 <= len(events) <= 5  # one per distinct old status
    assert sum(e.new["count"] for e in events) == 1148
    assert all("→ Completed" in e.summary for e in events)


def test_a_whole_list_replaced_is_one_summary_event_per_direction() -> None:
    def rename_all(doc: dict) -> None:
        for site in module(doc, "contactsLocationsModule")["locations"]:
            site["facility"] = f"Renamed {site.get('facility')}"

    events = events_between(study(BIG), edit(study(BIG), rename_all))
    assert sorted(e.summary.split(",")[0] for e in events) == [
        "1148 sites added", "1148 sites removed"]


# --------------------------------------------------------------------------- not a change


def test_sites_reordered_is_no_event() -> None:
    assert events_between(study(BIG), reverse_sites(study(BIG))) == []


def test_criteria_reordered_is_no_event() -> None:
    assert events_between(study(SEED_JSON), reverse_criteria(study(SEED_JSON))) == []


def test_registry_bookkeeping_alone_is_no_event() -> None:
    new = new_registry_day(study("NCT03934567"), "2026-11-24")
    assert record(new).content_hash != record(study("NCT03934567")).content_hash
    assert events_between(study("NCT03934567"), new) == []


def test_derived_section_change_is_no_event() -> None:
    new = study("NCT03934567")
    new["derivedSection"]["conditionBrowseModule"] = {"meshes": [{"id": "D0", "term": "X"}]}
    new["derivedSection"]["miscInfoModule"]["versionHolder"] = "2026-11-24"
    assert events_between(study("NCT03934567"), new) == []


def test_unknown_fields_never_count_in_either_direction() -> None:
    page = parse_text_page(SEED_PAGE.read_text(encoding="utf-8"))
    full = record(study(SEED_JSON))
    assert page.content_hash != full.content_hash
    assert diff_records(page, full) == []
    assert diff_records(full, page) == []


def test_identity_field_a_partial_document_lacks_is_not_a_change() -> None:
    # the fields= restricted capture has interventions without their type
    partial, full = record(study("NCT02576665")), record(study("NCT02576665.full"))
    assert [i.get("type") for i in partial.get("arms", "interventions")] == [None, None]
    assert diff_records(partial, full) == []
    assert diff_records(full, partial) == []


def test_a_record_against_itself_is_no_event() -> None:
    big = record(study(BIG))
    assert diff_records(big, big) == []


# --------------------------------------------------------------------------- the contract


def test_events_are_deterministic_most_severe_first() -> None:
    new = set_status(set_enrollment(add_criterion(
        set_phases(study(SEED_JSON), "PHASE2"), "inclusion", "Weight at least 40 kg"),
        24, "ACTUAL"), "RECRUITING")
    first = events_between(study(SEED_JSON), new)
    again = events_between(study(SEED_JSON), new)
    assert first == again
    assert [e.kind for e in first] == ["status", "enrollment", "phase", "eligibility"]
    ranks = [SEVERITIES.index(e.severity) for e in first]
    assert ranks == sorted(ranks, reverse=True)


def test_events_carry_design_json_fields() -> None:
    event = only_event(study(SEED_JSON), set_status(study(SEED_JSON), "RECRUITING"))
    assert list(event.to_json()) == ["nct_id", "kind", "field", "old", "new", "severity",
                                     "from_version", "to_version", "detected_at", "summary"]


@pytest.mark.parametrize(("section", "field"),
                         [(s, f) for s, fields in SECTIONS.items() for f in fields])
def test_every_record_field_has_a_rule(section: str, field: str) -> None:
    rule = FIELD_RULES[(section, field)]
    assert rule.kind is None or rule.kind in KINDS
    assert rule.severity in SEVERITIES


def test_every_rule_names_a_record_field() -> None:
    assert set(FIELD_RULES) == {(s, f) for s, fields in SECTIONS.items() for f in fields}


def test_bookkeeping_fields_have_no_event_kind() -> None:
    silent = {key for key, rule in FIELD_RULES.items() if rule.kind is None}
    assert silent == {("status", "status_verified_date"), ("dates", "last_update_posted"),
                      ("dates", "last_update_submitted")}


def test_records_sections_are_what_diff_skips_by_hash() -> None:
    a = record(study(SEED_JSON))
    b = TrialRecord.from_canonical(a.to_canonical())
    assert a.section_hashes == b.section_hashes
    assert diff_records(a, b) == []
