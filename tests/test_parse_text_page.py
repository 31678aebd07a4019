"""The rendered text-page parser on the shipped seed, and its agreement with API v2 JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shared_data import CONSTRUCTED, CTGOV

from trialwatch.monitor.record import ParseError, TrialRecord
from trialwatch.monitor.sources.ctgov.parser import parse_study
from trialwatch.monitor.sources.text_page import parse_text_page, split_conditions

CTGOV_DIR = CTGOV  # = the ctgov_dir fixture (../shared/ctgov)
STUDY_FILES = sorted(CTGOV_DIR.glob("NCT*.json"))


@pytest.fixture(scope="module")
def seed_text(seed_path: Path) -> str:
    return seed_path.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def seed(seed_text: str) -> TrialRecord:
    return parse_text_page(seed_text)


@pytest.fixture(scope="module")
def constructed(ctgov_dir: Path) -> TrialRecord:
    return parse_study(orjson.loads((CONSTRUCTED / "NCT07328581.json").read_bytes()))


def differences(small: Any, big: Any, path: str = "") -> list[str]:
    """Where ``small`` is not contained in ``big`` (for a readable failure)."""
    if isinstance(small, dict) and isinstance(big, dict):
        out = []
        for key, value in small.items():
            if key not in big:
                out.append(f"{path}.{key}: missing in JSON record")
            else:
                out.extend(differences(value, big[key], f"{path}.{key}"))
        return out
    if isinstance(small, list) and isinstance(big, list) and len(small) == len(big):
        return [d for i, (a, b) in enumerate(zip(small, big, strict=True))
                for d in differences(a, b, f"{path}[{i}]")]
    return [] if small == big else [f"{path}: page {small!r} != JSON {big!r}"]


# --------------------------------------------------------------------------- the key requirement


def test_text_page_agrees_with_api_json_of_same_version(
        seed: TrialRecord, constructed: TrialRecord) -> None:
    assert differences(seed.to_canonical(), constructed.to_canonical()) == []
    assert seed.knows_less_or_equal(constructed)


def test_api_json_knows_more_than_the_text_page(
        seed: TrialRecord, constructed: TrialRecord) -> None:
    assert not constructed.knows_less_or_equal(seed)
    assert "std_ages" not in seed.sections["eligibility"]
    assert "type" not in seed.get("dates", "start")


def test_text_page_covers_every_section_the_page_shows(seed: TrialRecord) -> None:
    assert set(seed.sections) == {
        "identification", "status", "dates", "sponsor", "description", "conditions", "design",
        "arms", "eligibility", "contacts", "results",
    }


# --------------------------------------------------------------------------- seed values


def test_seed_identification(seed: TrialRecord) -> None:
    assert seed.nct_id == "NCT07328581"
    assert seed.title == "BCMA-CD19 cCAR T for the Treatment of Refractory Lupus"
    assert seed.get("identification", "org_study_id") == "ICG318-001"
    assert seed.get("identification", "secondary_ids") == []


def test_seed_status_and_dates_carry_no_type(seed: TrialRecord) -> None:
    assert seed.overall_status == "NOT_YET_RECRUITING"
    assert seed.sections["dates"] == {
        "last_update_posted": {"date": "2026-01-09"},
        "start": {"date": "2026-01-31"},
        "completion": {"date": "2028-12-31"},
    }
    assert seed.last_update_posted == "2026-01-09"


def test_seed_design(seed: TrialRecord) -> None:
    assert seed.sections["design"] == {
        "study_type": "INTERVENTIONAL", "phases": ["PHASE1", "PHASE2"],
        "enrollment": {"count": 20}, "allocation": "NA", "intervention_model": "SEQUENTIAL",
        "primary_purpose": "TREATMENT", "masking": "NONE",
    }


def test_seed_boilerplate_sentences_are_dropped(seed: TrialRecord) -> None:
    canonical = seed.canonical_json.decode()
    for sentence in ("Get a concise snapshot", "Review the sponsor-provided synopsis",
                     "Dive into the extended narrative", "See the medical conditions",
                     "Learn about the drugs", "Check the participation requirements",
                     "Meet the organizations", "Reach out to these", "Review additional registry"):
        assert sentence not in canonical


def test_seed_descriptions_keep_paragraphs(seed: TrialRecord) -> None:
    assert seed.get("description", "brief_summary").startswith("This is a Phase I, IIa")
    detailed = seed.get("description", "detailed_description")
    assert detailed.count("\n\n") == 4
    assert detailed.endswith("regimen will be evaluated.")


def test_seed_conditions_split_after_parenthesis(seed: TrialRecord) -> None:
    assert seed.get("conditions", "conditions") == [
        "Lupus Nephritis (LN)", "Systemic Lupus Erythematosus (SLE)"]
    assert "keywords" not in seed.sections["conditions"]


def test_seed_study_group_maps_label_type_description_and_intervention(
        seed: TrialRecord) -> None:
    assert seed.get("arms", "arm_groups") == [{
        "label": "Single arm",
        "type": "EXPERIMENTAL",
        "description": "ICG318, BCMA-CD19-IL-15/IL-15 sushi Compound CAR T following "
                       "cyclophosphamide-only lymphodepletion",
        "interventions": ["Anti-BCMA, Anti-CD19 Compound CAR-T Cells"],
    }]
    assert "Biologic drug infusion" not in seed.canonical_json.decode()


def test_seed_interventions(seed: TrialRecord) -> None:
    assert seed.get("arms", "interventions") == [{
        "type": "BIOLOGICAL",
        "name": "Anti-BCMA, Anti-CD19 Compound CAR-T Cells",
        "description": "ICG318, BCMA-CD19-IL-15/IL-15 sushi Compound CAR T following "
                       "cyclophosphamide-only lymphodepletion",
    }]


def test_seed_eligibility_has_6_inclusion_and_12_exclusion_criteria(seed: TrialRecord) -> None:
    eligibility = seed.sections["eligibility"]
    assert len(eligibility["inclusion"]) == 6
    assert len(eligibility["exclusion"]) == 12
    assert eligibility["other_criteria"] == []
    assert {"text": "Age 16-70 years at the time of signing the informed consent"} in (
        eligibility["inclusion"])
    assert {"text": "Has drug-induced SLE."} in eligibility["exclusion"]


def test_seed_eligibility_limits(seed: TrialRecord) -> None:
    eligibility = seed.sections["eligibility"]
    assert eligibility["minimum_age"] == "16 Years"
    assert eligibility["maximum_age"] == "70 Years"
    assert eligibility["sex"] == "ALL"
    assert eligibility["healthy_volunteers"] is False


def test_seed_sponsor_and_responsible_party(seed: TrialRecord) -> None:
    assert seed.sections["sponsor"] == {
        "lead_sponsor": "iCell Gene Therapeutics", "lead_sponsor_class": "INDUSTRY",
        "collaborators": [], "responsible_party": {"type": "SPONSOR"},
    }


def test_seed_central_contact_without_email_key(seed: TrialRecord) -> None:
    assert seed.sections["contacts"] == {"central_contacts": [
        {"name": "Kevin Pinz, MS", "role": "CONTACT", "phone": "6315386218"}]}


def test_seed_results_pending_means_no_results(seed: TrialRecord) -> None:
    assert seed.sections["results"] == {"has_results": False}


def test_related_trials_are_not_this_trials_data(seed: TrialRecord) -> None:
    canonical = seed.canonical_json.decode()
    for other in ("NCT07219563", "NCT06189157", "Alnuctamab", "MB-CART19.1"):
        assert other not in canonical


# --------------------------------------------------------------------------- robustness


def test_crlf_page_parses_like_lf_page(seed_text: str, seed: TrialRecord) -> None:
    assert parse_text_page(seed_text.replace("\n", "\r\n")).content_hash == seed.content_hash


def test_reworded_boilerplate_is_still_dropped(seed_text: str, seed: TrialRecord) -> None:
    text = seed_text.replace(
        "Review the sponsor-provided synopsis that highlights what the study is about and why "
        "it is being conducted.", "Read the short synopsis provided by the sponsor.",
    ).replace(
        "See the medical conditions and disease areas that this research is targeting or "
        "investigating.", "These are the conditions this research is looking into today.",
    )
    assert parse_text_page(text).content_hash == seed.content_hash


def test_summary_without_boilerplate_is_kept(seed_text: str) -> None:
    text = seed_text.replace(
        "Review the sponsor-provided synopsis that highlights what the study is about and why "
        "it is being conducted.\n\n", "")
    record = parse_text_page(text)
    assert record.get("description", "brief_summary").startswith("This is a Phase I, IIa")


def test_inline_field_value_is_read(seed_text: str) -> None:
    text = seed_text.replace("Accepts Healthy Volunteers\n\nNo", "Accepts Healthy Volunteers No")
    assert parse_text_page(text).get("eligibility", "healthy_volunteers") is False


def test_page_without_nct_id_raises_parse_error(seed_text: str) -> None:
    with pytest.raises(ParseError, match="no \"NCT ID"):
        parse_text_page(seed_text.replace("NCT ID: NCT07328581", "Registry entry"))


@pytest.mark.parametrize("bad", ["NCT0732858", "NCT073285811", "nct07328581", "NCTABCDEFGH", ""])
def test_page_with_malformed_nct_id_raises_parse_error(seed_text: str, bad: str) -> None:
    with pytest.raises(ParseError, match="NCT ID"):
        parse_text_page(seed_text.replace("NCT ID: NCT07328581", f"NCT ID: {bad}"))


def test_page_with_two_different_nct_ids_raises_parse_error(seed_text: str) -> None:
    with pytest.raises(ParseError, match="two NCT IDs"):
        parse_text_page(seed_text.replace("Study Results", "NCT ID: NCT00000001\n\nStudy Results"))


def test_nct_id_lines_after_related_trials_are_ignored(seed_text: str, seed: TrialRecord) -> None:
    assert parse_text_page(seed_text + "\nNCT ID: NCT00000001\n").content_hash == seed.content_hash


@pytest.mark.parametrize("path", STUDY_FILES, ids=lambda p: p.name)
def test_api_json_is_not_mistaken_for_a_text_page(path: Path) -> None:
    with pytest.raises(ParseError):
        parse_text_page(path.read_text(encoding="utf-8"))


def test_minimal_page_emits_only_what_it_shows() -> None:
    record = parse_text_page("A small trial\n\nNCT ID: NCT00000001\n\nRecruitment Status\n\n"
                             "Recruiting\n")
    assert record.to_canonical() == {
        "nct_id": "NCT00000001",
        "identification": {"brief_title": "A small trial"},
        "status": {"overall_status": "RECRUITING"},
    }


def test_key_dates_section_maps_dates_with_shown_type() -> None:
    record = parse_text_page(
        "T\n\nNCT ID: NCT00000001\n\nKey Dates\n\nExplore the milestones of this trial.\n\n"
        "Primary Completion Date\n\n2028-06-30 (Estimated)\n\nFirst Posted\n\n"
        "January 9, 2026\n")
    assert record.sections["dates"] == {
        "primary_completion": {"date": "2028-06-30", "type": "ESTIMATED"},
        "first_posted": {"date": "2026-01-09"},
    }


def test_locations_section_is_recognised_but_sites_stay_unknown(seed_text: str) -> None:
    text = seed_text.replace(
        "Other Identifiers",
        "Locations\n\nFind the sites where the trial is run.\n\nSome Hospital\n\nBoston\n\n"
        "Other Identifiers", 1)
    record = parse_text_page(text)
    assert "locations" not in record.sections
    assert len(record.get("contacts", "central_contacts")) == 1


def test_study_results_posted_means_results() -> None:
    record = parse_text_page("T\n\nNCT ID: NCT00000001\n\nStudy Results\n\nResults posted\n")
    assert record.sections["results"] == {"has_results": True}


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("Systemic Lupus Erythematosus (SLE) Lupus Nephritis (LN)",
         ["Systemic Lupus Erythematosus (SLE)", "Lupus Nephritis (LN)"]),
        ("Melanoma", ["Melanoma"]),
        ("Lymphoma (NHL) non-Hodgkin (adult)", ["Lymphoma (NHL) non-Hodgkin (adult)"]),
        ("HIV (Human) Hepatitis C (HCV) Asthma", ["HIV (Human)", "Hepatitis C (HCV)", "Asthma"]),
    ],
)
def test_conditions_split_heuristic(line: str, expected: list[str]) -> None:
    assert split_conditions(line) == expected


SEED_LINES = (Path(__file__).resolve().parents[1] / "seeds" / "NCT07328581.txt").read_text(
    encoding="utf-8").split("\n")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(SEED_LINES), st.text(max_size=40)), max_size=80))
def test_any_shuffle_of_page_lines_gives_parse_error_or_record(lines: list[str]) -> None:
    try:
        record = parse_text_page("\n".join(lines))
    except ParseError:
        return
    assert record.nct_id.startswith("NCT")


def test_inline_field_heading_is_not_read_inside_free_text(seed_text: str) -> None:
    text = seed_text.replace("A single dose of ICG318", "Time Perspective of ICG318 is short.\n\n"
                             "A single dose of ICG318")
    record = parse_text_page(text)
    assert "time_perspective" not in record.sections["design"]
    assert "Time Perspective of ICG318 is short." in record.get(
        "description", "detailed_description")
