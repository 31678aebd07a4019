"""The API v2 JSON parser on real ClinicalTrials.gov documents (../shared/ctgov)."""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Any

import orjson
import pytest
from shared_data import CONSTRUCTED, CTGOV

from trialwatch.monitor.record import SECTIONS, ParseError, TrialRecord
from trialwatch.monitor.sources.criteria import split_criteria
from trialwatch.monitor.sources.ctgov.parser import (
    is_full_document,
    iter_page_studies,
    parse_study,
)

CTGOV_DIR = CTGOV  # = the ctgov_dir fixture (../shared/ctgov)
STUDY_FILES = sorted(CTGOV_DIR.glob("NCT*.json"))
FULL_FILES = [p for p in STUDY_FILES if is_full_document(orjson.loads(p.read_bytes()))]


def load(ctgov_dir: Path, name: str) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads((ctgov_dir / name).read_bytes())
    return doc


def parse_file(ctgov_dir: Path, name: str) -> TrialRecord:
    return parse_study(load(ctgov_dir, name))


def test_every_sample_study_file_is_collected(ctgov_dir: Path) -> None:
    assert len(STUDY_FILES) >= 7
    assert len(FULL_FILES) == len(STUDY_FILES) - 1  # NCT02576665.json is fields-restricted


@pytest.mark.parametrize("path", STUDY_FILES, ids=lambda p: p.name)
def test_study_file_parses_to_its_own_nct_id(path: Path) -> None:
    record = parse_study(orjson.loads(path.read_bytes()))
    assert record.nct_id == path.name.split(".")[0]
    assert record.title
    assert record.overall_status
    assert len(record.content_hash) == 64


@pytest.mark.parametrize("path", FULL_FILES, ids=lambda p: p.name)
def test_full_document_emits_every_field_of_every_section(path: Path) -> None:
    record = parse_study(orjson.loads(path.read_bytes()))
    for section, fields in SECTIONS.items():
        assert set(record.sections[section]) == set(fields), section


@pytest.mark.parametrize("path", FULL_FILES, ids=lambda p: p.name)
def test_full_document_list_items_carry_every_key(path: Path) -> None:
    record = parse_study(orjson.loads(path.read_bytes()))
    for site in record.get("locations", "sites"):
        assert set(site) == {"facility", "city", "state", "zip", "country", "status", "geo"}
    for contact in record.get("contacts", "central_contacts"):
        assert set(contact) == {"name", "role", "phone", "email"}
    for arm in record.get("arms", "arm_groups"):
        assert set(arm) == {"label", "type", "description", "interventions"}


@pytest.mark.parametrize("path", FULL_FILES, ids=lambda p: p.name)
def test_version_holder_change_keeps_content_hash(path: Path) -> None:
    doc = orjson.loads(path.read_bytes())
    moved = copy.deepcopy(doc)
    assert doc["derivedSection"]["miscInfoModule"]["versionHolder"]
    moved["derivedSection"]["miscInfoModule"]["versionHolder"] = "2099-12-31"
    assert parse_study(moved).content_hash == parse_study(doc).content_hash


def test_derived_section_is_ignored_entirely(ctgov_dir: Path) -> None:
    doc = load(ctgov_dir, "NCT03934567.json")
    changed = copy.deepcopy(doc)
    changed["derivedSection"] = {"conditionBrowseModule": {"meshes": [{"id": "D1", "term": "X"}]}}
    assert parse_study(changed).content_hash == parse_study(doc).content_hash


def test_last_update_posted_change_changes_content_hash(ctgov_dir: Path) -> None:
    doc = load(ctgov_dir, "NCT03934567.json")
    changed = copy.deepcopy(doc)
    changed["protocolSection"]["statusModule"]["lastUpdatePostDateStruct"]["date"] = "2025-05-01"
    assert parse_study(changed).content_hash != parse_study(doc).content_hash


def test_terminated_study_has_why_stopped(ctgov_dir: Path) -> None:
    record = parse_file(ctgov_dir, "NCT00184067.json")
    assert record.overall_status == "TERMINATED"
    assert record.get("status", "why_stopped") == "Primary PI left institution"
    assert record.get("design", "phases") == ["PHASE2"]
    assert len(record.get("locations", "sites")) == 1


def test_full_document_missing_values_are_known_empty(ctgov_dir: Path) -> None:
    record = parse_file(ctgov_dir, "NCT00184067.json")
    assert record.get("eligibility", "maximum_age") is None
    assert record.get("description", "detailed_description") is None
    assert record.get("outcomes", "primary") == []
    assert record.get("dates", "results_first_posted") is None
    assert record.get("dates", "start") == {"date": "2004-05", "type": None}
    assert record.get("locations", "sites")[0]["status"] is None
    assert record.get("results", "has_results") is False


def test_big_record_has_1148_sites(ctgov_dir: Path) -> None:
    record = parse_file(ctgov_dir, "NCT04267848.json")
    sites = record.get("locations", "sites")
    assert len(sites) == 1148
    assert {s["status"] for s in sites} >= {"RECRUITING", "SUSPENDED"}
    assert record.get("design", "phases") == ["PHASE3"]
    assert record.get("dates", "last_update_posted") == {"date": "2025-09-10", "type": "ESTIMATED"}
    assert record.get("sponsor", "lead_sponsor_class") == "NIH"


def test_results_study_has_results_and_modules(ctgov_dir: Path) -> None:
    record = parse_file(ctgov_dir, "NCT03722472.json")
    assert record.overall_status == "COMPLETED"
    assert record.get("results", "has_results") is True
    assert record.get("results", "modules") == [
        "adverseEventsModule", "baselineCharacteristicsModule", "moreInfoModule",
        "outcomeMeasuresModule", "participantFlowModule",
    ]
    assert record.get("dates", "results_first_posted") == {"date": "2023-06-01", "type": "ACTUAL"}
    assert record.get("eligibility", "healthy_volunteers") is True


def test_observational_study_has_observational_design(ctgov_dir: Path) -> None:
    record = parse_file(ctgov_dir, "NCT06323538.json")
    design = record.sections["design"]
    assert design["study_type"] == "OBSERVATIONAL"
    assert design["observational_model"] == "COHORT"
    assert design["time_perspective"] == "PROSPECTIVE"
    assert design["phases"] == []
    assert design["allocation"] is None
    assert design["enrollment"] == {"count": 6000, "type": "ESTIMATED"}
    sites = record.get("locations", "sites")
    assert len(sites) == 8
    assert "NOT_YET_RECRUITING" in {s["status"] for s in sites}


def test_central_contacts_keep_phone_and_email(ctgov_dir: Path) -> None:
    record = parse_file(ctgov_dir, "NCT06323538.json")
    contact = next(c for c in record.get("contacts", "central_contacts")
                   if c["name"] == "Christine Dawczynski, PhD")
    assert contact == {"name": "Christine Dawczynski, PhD", "role": "CONTACT",
                       "phone": "+49 3641 949656", "email": "christine.dawczynski@uni-jena.de"}


def test_contact_without_email_has_email_none_in_full_document(ctgov_dir: Path) -> None:
    record = parse_file(CONSTRUCTED, "NCT07328581.json")
    assert record.get("contacts", "central_contacts") == [
        {"name": "Kevin Pinz, MS", "role": "CONTACT", "phone": "6315386218", "email": None}]


def test_collaborators_are_sorted_names(ctgov_dir: Path) -> None:
    record = parse_file(ctgov_dir, "NCT03722472.json")
    assert record.get("sponsor", "collaborators") == [
        "National Institute of Allergy and Infectious Diseases (NIAID)",
        "National Institutes of Health (NIH)",
    ]
    assert record.get("sponsor", "responsible_party") == {"type": "SPONSOR", "investigator": None}


def test_secondary_ids_keep_type_and_domain(ctgov_dir: Path) -> None:
    record = parse_file(ctgov_dir, "NCT03722472.json")
    assert {"id": "DMID 17-0104", "type": "OTHER", "domain": "NIH/NIAID/DMID"} in record.get(
        "identification", "secondary_ids")
    assert record.get("identification", "org_study_id")


def test_arm_intervention_names_lose_their_type_prefix(ctgov_dir: Path) -> None:
    record = parse_file(ctgov_dir, "NCT03934567.json")
    assert record.get("arms", "arm_groups") == [{
        "label": "Abexinostat 80 mg bis in die (BID)", "type": "EXPERIMENTAL",
        "description": "Experimental: Abexinostat 80 mg BID", "interventions": ["Abexinostat"],
    }]
    assert record.get("arms", "interventions") == [
        {"type": "DRUG", "name": "Abexinostat", "description": "Abexinostat tablets"}]


def test_outcomes_map_measure_time_frame_description(ctgov_dir: Path) -> None:
    record = parse_file(ctgov_dir, "NCT03934567.json")
    primary = record.get("outcomes", "primary")
    assert len(primary) == 1
    assert primary[0]["time_frame"] == "up to 56 days"
    assert primary[0]["measure"].startswith("Clinical effect of abexinostat")
    assert len(record.get("outcomes", "secondary")) == 2
    assert record.get("outcomes", "other") == []


def test_conditions_and_keywords_are_sorted(ctgov_dir: Path) -> None:
    record = parse_file(ctgov_dir, "NCT03934567.json")
    assert record.get("conditions", "keywords") == ["lymph nodes", "refractory", "relapsed"]
    conditions = parse_file(ctgov_dir, "NCT06323538.json").get("conditions", "conditions")
    assert conditions == sorted(conditions)


def test_references_keep_pmid_type_citation(ctgov_dir: Path) -> None:
    record = parse_file(ctgov_dir, "NCT03722472.json")
    (reference,) = record.get("references", "references")
    assert reference["pmid"] == "36878897"
    assert reference["type"] == "RESULT"
    assert reference["citation"].startswith("Sagawa ZK")


def test_partial_document_emits_only_fields_it_carries(ctgov_dir: Path) -> None:
    record = parse_file(ctgov_dir, "NCT02576665.json")
    assert record.sections["identification"] == {"brief_title": record.title}
    assert record.sections["status"] == {"overall_status": "TERMINATED"}
    assert record.sections["dates"] == {"start": {"date": "2016-07"},
                                        "completion": {"date": "2019-12-20"}}
    assert record.sections["design"] == {"study_type": "INTERVENTIONAL", "phases": ["PHASE1"],
                                         "enrollment": {"count": 21}}
    assert record.sections["arms"] == {"interventions": [{"name": "Toca 511"},
                                                         {"name": "Toca FC"}]}
    for absent in ("outcomes", "results", "references", "contacts"):
        assert absent not in record.sections
    assert "healthy_volunteers" not in record.sections["eligibility"]
    assert set(record.get("locations", "sites")[0]) == {"facility", "city", "state", "zip",
                                                        "country", "geo"}


def test_partial_document_knows_less_than_full_document_of_same_version(
        ctgov_dir: Path) -> None:
    partial = parse_file(ctgov_dir, "NCT02576665.json")
    full = parse_file(ctgov_dir, "NCT02576665.full.json")
    assert partial.knows_less_or_equal(full)
    assert not full.knows_less_or_equal(partial)


def test_page_example_iterates_its_partial_studies(ctgov_dir: Path) -> None:
    page = load(ctgov_dir, "page_example.json")
    records = [parse_study(s) for s in iter_page_studies(page)]
    assert [r.nct_id for r in records] == [
        "NCT02710084", "NCT05105685", "NCT01525901", "NCT03493607", "NCT07119606"]
    assert records[0].sections["eligibility"] == {"minimum_age": "5 Years",
                                                  "maximum_age": "17 Years"}
    assert all("results" not in r.sections for r in records)


def test_full_page_studies_equal_their_single_study_documents(ctgov_dir: Path) -> None:
    page = load(ctgov_dir, "page_example_full.json")
    records = [parse_study(s) for s in iter_page_studies(page)]
    assert [r.nct_id for r in records] == ["NCT00184067", "NCT03934567"]
    for record in records:
        assert record.content_hash == parse_file(ctgov_dir, f"{record.nct_id}.json").content_hash


def test_description_text_is_normalized() -> None:
    doc = {"protocolSection": {
        "identificationModule": {"nctId": "NCT00000001"},
        "descriptionModule": {"briefSummary": "  Line one.  \r\nLine two.\t\r\n\r\n"},
    }}
    record = parse_study(doc)
    assert record.get("description", "brief_summary") == "Line one.\nLine two."


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ([], "expected a JSON object"),
        ("NCT00000001", "expected a JSON object"),
        ({"studies": []}, "no protocolSection"),
        ({"protocolSection": None}, "protocolSection is null"),
        ({"protocolSection": []}, "expected an object"),
        ({"protocolSection": {}}, "no NCT ID"),
        ({"protocolSection": {"identificationModule": "x"}}, "expected an object"),
        ({"protocolSection": {"identificationModule": {"nctId": 12345678}}}, "expected a string"),
        ({"protocolSection": {"identificationModule": {"nctId": "NCT123"}}}, "invalid NCT ID"),
        ({"protocolSection": {"identificationModule": {"nctId": "nct00000001"}}}, "invalid NCT ID"),
    ],
)
def test_non_study_raises_parse_error_with_reason(doc: Any, reason: str) -> None:
    with pytest.raises(ParseError, match=reason):
        parse_study(doc)


@pytest.mark.parametrize(
    ("module", "body", "reason"),
    [
        ("statusModule", {"overallStatus": 3}, "overallStatus: expected a string"),
        ("statusModule", {"startDateStruct": "2020-01"}, "startDateStruct: expected an object"),
        ("designModule", {"phases": "PHASE1"}, "phases: expected an array"),
        ("designModule", {"phases": [1]}, r"phases\[0\]: expected a string"),
        ("designModule", {"enrollmentInfo": {"count": "20"}}, "count: expected an integer"),
        ("designModule", {"enrollmentInfo": {"count": True}}, "count: expected an integer"),
        ("designModule", {"designInfo": ["x"]}, "designInfo: expected an object"),
        ("contactsLocationsModule", {"locations": {"a": 1}}, "locations: expected an array"),
        ("contactsLocationsModule", {"locations": ["x"]}, r"locations\[0\]: expected an object"),
        ("eligibilityModule", {"healthyVolunteers": "No"}, "expected a boolean"),
        ("eligibilityModule", {"eligibilityCriteria": ["a"]}, "expected a string"),
        ("armsInterventionsModule", {"armGroups": [{"interventionNames": "Drug: X"}]},
         "interventionNames: expected an array"),
        ("sponsorCollaboratorsModule", {"collaborators": [{"name": 5}]}, "expected a string"),
    ],
)
def test_wrong_field_type_raises_parse_error(module: str, body: Any, reason: str) -> None:
    doc = {"protocolSection": {"identificationModule": {"nctId": "NCT00000001"}, module: body}}
    with pytest.raises(ParseError, match=reason):
        parse_study(doc)


def test_wrong_has_results_type_raises_parse_error() -> None:
    doc = {"protocolSection": {"identificationModule": {"nctId": "NCT00000001"}},
           "hasResults": "yes"}
    with pytest.raises(ParseError, match="hasResults"):
        parse_study(doc)


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ([], "expected a JSON object"),
        ({"protocolSection": {}}, "no studies list"),
        ({"studies": {}}, "expected an array"),
        ({"studies": [1]}, r"studies\[0\]"),
    ],
)
def test_non_page_raises_parse_error(doc: Any, reason: str) -> None:
    with pytest.raises(ParseError, match=reason):
        list(iter_page_studies(doc))


# --------------------------------------------------------------------------- criteria


def texts(items: list[dict[str, str]]) -> list[str]:
    return [item["text"] for item in items]


def test_criteria_split_into_inclusion_and_exclusion_numbered_items() -> None:
    result = split_criteria(
        "Inclusion Criteria:\n\n1. Adults\n2) Consent given\n\nExclusion Criteria:\n\n1. Pregnant")
    assert texts(result["inclusion"]) == ["Adults", "Consent given"]
    assert texts(result["exclusion"]) == ["Pregnant"]
    assert result["other_criteria"] == []


def test_criteria_headings_accept_markdown_case_and_missing_colon() -> None:
    result = split_criteria("**Inclusion Criteria:**\n* a\ninclusion criteria\n- b\n"
                            "EXCLUSION CRITERIA\n• c\n## Key Exclusion Criteria:\na. d")
    assert texts(result["inclusion"]) == ["a", "b"]
    assert texts(result["exclusion"]) == ["c", "d"]


def test_criteria_continuation_lines_join_previous_criterion() -> None:
    result = split_criteria(
        "Inclusion Criteria:\n\n1. Good health\n\n   *Temperature below 38\n   NOTE: athletes\n"
        "2. Consent")
    assert texts(result["inclusion"]) == ["Good health *Temperature below 38 NOTE: athletes",
                                          "Consent"]


def test_criteria_escaped_star_line_is_a_continuation_not_a_bullet(ctgov_dir: Path) -> None:
    doc = load(ctgov_dir, "NCT03722472.json")
    result = split_criteria(doc["protocolSection"]["eligibilityModule"]["eligibilityCriteria"])
    assert len(result["inclusion"]) == 9
    assert len(result["exclusion"]) == 29
    second = texts(result["inclusion"])[1]
    assert second.startswith("In good general health")
    assert "*Temperature <38°C" in second
    assert "NOTE: Athletically trained subjects" in second


def test_criteria_nested_sub_bullets_are_separate_criteria(ctgov_dir: Path) -> None:
    doc = load(ctgov_dir, "NCT00184067.json")
    result = split_criteria(doc["protocolSection"]["eligibilityModule"]["eligibilityCriteria"])
    inclusion = texts(result["inclusion"])
    assert len(inclusion) == 11
    assert inclusion[0].endswith("are eligible for this study provided that:")
    assert inclusion[1] == "They have received all injections with evidence of an immune response."
    assert len(result["exclusion"]) == 7


def test_criteria_text_before_any_heading_is_other_criteria() -> None:
    result = split_criteria("Healthy adults only\n\nInclusion Criteria:\n* a")
    assert texts(result["other_criteria"]) == ["Healthy adults only"]
    assert texts(result["inclusion"]) == ["a"]


def test_criteria_under_other_heading_go_to_other_criteria() -> None:
    result = split_criteria("Inclusion Criteria:\n* a\n**Study population:**\n* b")
    assert texts(result["inclusion"]) == ["a"]
    assert texts(result["other_criteria"]) == ["b"]


def test_criteria_without_bullets_are_one_per_line() -> None:
    result = split_criteria("Inclusion Criteria:\nAge over 18\nSigned consent")
    assert texts(result["inclusion"]) == ["Age over 18", "Signed consent"]


def test_criteria_collapse_whitespace_and_markdown_escapes() -> None:
    result = split_criteria("Inclusion Criteria:\n*   Age  \\>= 18   years\n* HCV RNA \\[qual\\]")
    assert texts(result["inclusion"]) == ["Age >= 18 years", "HCV RNA [qual]"]


def test_criteria_keep_decimal_numbers_at_line_start() -> None:
    result = split_criteria("Inclusion Criteria:\n1.5 mg/kg dose tolerated\n2. Next")
    assert texts(result["inclusion"]) == ["1.5 mg/kg dose tolerated", "Next"]


# --------------------------------------------------------------------------- robustness

WRONG_VALUES: list[Any] = [None, 7, "x", True, [], {}, [1], {"a": 1}]


def node_paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path] if path else []
    if isinstance(node, dict):
        for key, value in node.items():
            found.extend(node_paths(value, (*path, key)))
    elif isinstance(node, list):
        for index, value in enumerate(node[:2]):
            found.extend(node_paths(value, (*path, index)))
    return found


def test_any_wrong_value_anywhere_gives_parse_error_or_record(ctgov_dir: Path) -> None:
    raw = (ctgov_dir / "NCT00184067.json").read_bytes()
    doc = orjson.loads(raw)
    paths = node_paths(doc)
    assert len(paths) > 100
    for path in paths:
        for wrong in WRONG_VALUES:
            mutated = orjson.loads(raw)
            target = mutated
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = wrong
            with contextlib.suppress(ParseError):
                parse_study(mutated)


def test_a_heading_with_a_turkish_dotted_capital_i_is_an_inclusion_heading() -> None:
    result = split_criteria("İnclusion Criteria:\n* adults\nExclusion Criteria:\n* pregnancy")
    assert result["inclusion"] == [{"text": "adults"}]
    assert result["exclusion"] == [{"text": "pregnancy"}]
