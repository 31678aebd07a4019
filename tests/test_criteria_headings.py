"""Eligibility headings as real registries write them: never a criterion, the right list,
sub-headings kept as the context of the criteria under them (API JSON and text page alike)."""

from __future__ import annotations

import re

import pytest
from shared_data import real_documents, real_study

from trialwatch.monitor.sources.criteria import split_criteria
from trialwatch.monitor.sources.ctgov.parser import parse_study
from trialwatch.monitor.sources.text_page import parse_text_page

LISTS = ("inclusion", "exclusion", "other_criteria")


def texts(items: list[dict[str, str]]) -> list[str]:
    return [item["text"] for item in items]


def contexts(items: list[dict[str, str]]) -> list[str | None]:
    return [item.get("context") for item in items]


@pytest.mark.parametrize("heading", [
    "* Key Inclusion Criteria:", "* INCLUSION CRITERIA:", "-INCLUSION CRITERIA:",
    "SUBJECT INCLUSION CRITERIA:", "**Inclusion Criteria**", "Inclusion criteria-",
])
def test_bulleted_dashed_and_prefixed_headings_open_the_inclusion_list(heading: str) -> None:
    result = split_criteria(f"{heading}\n\n* Adults\n\nExclusion Criteria:\n\n* Pregnant")
    assert texts(result["inclusion"]) == ["Adults"]
    assert texts(result["exclusion"]) == ["Pregnant"]
    assert result["other_criteria"] == []


@pytest.mark.parametrize(("heading", "kind"), [
    ("Phase 1 Key Exclusion Criteria:", "exclusion"),
    ("Sibling Inclusion Criteria for Genetic Testing:", "inclusion"),
    ("Cohort-specific inclusion criteria:", "inclusion"),
    ("Module 2 specific exclusion criteria:", "exclusion"),
    ("Hematologic Malignancies Inclusion Criteria:", "inclusion"),
    ("Criteria for non-inclusion in the \"control\" group:", "exclusion"),
])
def test_qualified_heading_opens_its_list_and_is_the_context(heading: str, kind: str) -> None:
    result = split_criteria(f"Inclusion Criteria:\n\n* Adults\n\n{heading}\n\n* Item under it")
    assert texts(result[kind])[-1] == "Item under it"
    assert contexts(result[kind])[-1] == heading.rstrip(":")
    assert not any(t.rstrip(":") == heading.rstrip(":") for k in LISTS for t in texts(result[k]))


def test_sub_heading_without_list_words_keeps_the_list_and_sets_the_context() -> None:
    result = split_criteria("Exclusion Criteria:\n\n* Lung criteria:\n\n  * FEV1 < 50%\n"
                            "* Cohort One Criteria:\n  * Prior CAR-T")
    assert texts(result["exclusion"]) == ["FEV1 < 50%", "Prior CAR-T"]
    assert contexts(result["exclusion"]) == ["Lung criteria", "Cohort One Criteria"]


def test_sub_heading_under_a_qualified_heading_names_both() -> None:
    result = split_criteria("Inclusion Criteria for Part C\n\n* Treatment criteria:\n  * Age 18")
    assert result["inclusion"] == [
        {"text": "Age 18", "context": "Inclusion Criteria for Part C › Treatment criteria"}]


def test_sub_headings_glued_to_the_previous_numbered_criterion_are_split_off() -> None:
    # NCT00584051: numbered criteria, then un-coloned group headings on lines of their own
    result = parse_study(real_study("NCT00584051"))
    inclusion = result.get("eligibility", "inclusion")
    assert [c["context"] for c in inclusion].count("Inclusion criteria for asthma group") == 4
    assert [c["context"] for c in inclusion].count(
        "Inclusion criteria for allergic rhinitis group") == 2
    assert [c["context"] for c in inclusion].count("Inclusion criteria for control group") == 3
    assert "Have a decreased FEV1 with 12% improvement in FEV1 documented within 12 weeks" in \
        texts(inclusion)


def test_heading_glued_to_the_end_of_a_criterion_line_is_split_off() -> None:
    result = split_criteria("Inclusion Criteria:\n\n* Body weight between 20 to 150 kg "
                            "Exclusion Criteria\n* Active lung disease")
    assert texts(result["inclusion"]) == ["Body weight between 20 to 150 kg"]
    assert texts(result["exclusion"]) == ["Active lung disease"]


def test_lead_in_sentences_naming_criteria_stay_criteria() -> None:
    result = split_criteria("Inclusion Criteria:\n\n* Subjects must meet all of the following "
                            "inclusion criteria:\n* Adults\n* Other protocol defined inclusion "
                            "criteria may apply")
    assert len(result["inclusion"]) == 3
    assert result["exclusion"] == []


def test_group_name_after_a_headings_colon_is_context_not_a_criterion() -> None:
    result = split_criteria("INCLUSION CRITERIA FOR ENROLLMENT: Stratum 2\n\n* Age < 22")
    assert result["inclusion"] == [
        {"text": "Age < 22", "context": "INCLUSION CRITERIA FOR ENROLLMENT: Stratum 2"}]


def test_text_page_gives_the_same_criteria_as_the_json() -> None:
    text = ("Phase 1 Key Inclusion Criteria\n\n* Adults\n\nPhase 1 Key Exclusion Criteria:\n\n"
            "* Pregnant\n* Lung criteria:\n  * FEV1 < 50%")
    page = parse_text_page(f"Some trial\nNCT ID: NCT01234567\n\nEligibility Criteria\n\n{text}")
    doc = {"protocolSection": {"identificationModule": {"nctId": "NCT01234567"},
                               "eligibilityModule": {"eligibilityCriteria": text}}}
    assert page.sections["eligibility"] == parse_study(doc).sections["eligibility"]
    assert {"text": "FEV1 < 50%", "context": "Phase 1 Key Exclusion Criteria › Lung criteria"} \
        in page.get("eligibility", "exclusion")


# --------------------------------------------------------------- every real record

# What a heading looks like, said independently of the parser: a short phrase ending in
# "inclusion/exclusion criteria" with no verb, or a heading still glued to its criterion.
_HEADING_LIKE = re.compile(r"^(?:\S+\s+){0,6}(?:inclusion|exclusion)\s+criteri(?:a|on)$", re.I)
_VERBS = re.compile(r"\b(must|meet|meets|meeting|not|do|does|following|satisfy|above|below|"
                    r"fulfil\w*|may|apply|are|is|were|will|include)\b", re.I)
_GLUED_START = re.compile(r"^(?:key\s+|main\s+)?(?:inclusion|exclusion)\s+criteria\s*:", re.I)


def _looks_like_heading(text: str) -> bool:
    bare = text.rstrip(" :.-")
    return bool((_HEADING_LIKE.match(bare) and not _VERBS.search(bare))
                or _GLUED_START.match(text))


def test_no_stored_criterion_of_any_real_record_is_a_heading() -> None:
    headings = []
    count = 0
    for where, doc in real_documents():
        record = parse_study(doc)
        count += 1
        for kind in LISTS:
            for item in record.get("eligibility", kind) or []:
                if _looks_like_heading(item["text"]):
                    headings.append((where, kind, item["text"]))
    assert count > 1300  # studies, pairs, pages and the 1,181-trial corpus
    assert headings == []


# Labeled by reading each record's eligibility text: (inclusion, exclusion, other).
LABELED: dict[str, tuple[int, int, int]] = {
    "NCT00584051": (9, 10, 0),   # three group sub-headings, numbered lists
    "NCT00001245": (5, 2, 0),    # "* INCLUSION CRITERIA:", paragraphs without markers
    "NCT01524536": (7, 9, 0),    # "SUBJECT INCLUSION CRITERIA:", lead-in + numbered items
    "NCT02519556": (3, 6, 0),    # "No inclusion / Exclusion Criteria:" opens the exclusions
    "NCT00084097": (17, 5, 0),   # "-INCLUSION CRITERIA:", nested sub-bullets
    "NCT00527878": (8, 7, 0),    # "* INCLUSION CRITERIA:" written as a bullet
}


@pytest.mark.parametrize("nct_id", sorted(LABELED))
def test_labeled_real_records_give_exactly_their_criteria_counts(nct_id: str) -> None:
    record = parse_study(real_study(nct_id))
    counts = tuple(len(record.get("eligibility", kind)) for kind in LISTS)
    assert counts == LABELED[nct_id]

