r"""API v2 markdown escapes (``\&``, ``\<``, ``\>``, ``\*``, ``\[``, ``\_``) are undone the same
way in every text field and by both parsers, so the page and the JSON of one version agree."""

from __future__ import annotations

import pytest
from shared_data import real_study

from trialwatch.monitor.sources.criteria import unescape_markdown
from trialwatch.monitor.sources.ctgov.parser import parse_study
from trialwatch.monitor.sources.text_page import parse_text_page

ESCAPED = r"Age \>= 18 \& \<65, \*star\*, \[ref\], snake\_case"
PLAIN = "Age >= 18 & <65, *star*, [ref], snake_case"


@pytest.mark.parametrize(("escape", "plain"), [
    (r"\&", "&"), (r"\<", "<"), (r"\>", ">"), (r"\*", "*"), (r"\[", "["), (r"\_", "_")])
def test_each_escape_is_undone(escape: str, plain: str) -> None:
    assert unescape_markdown(f"a {escape} b") == f"a {plain} b"


def test_a_plain_backslash_is_kept() -> None:
    assert unescape_markdown(r"C:\path and 5\4") == r"C:\path and 5\4"


def doc_with(text: str) -> dict[str, object]:
    return {"protocolSection": {
        "identificationModule": {"nctId": "NCT01234567", "briefTitle": text,
                                 "officialTitle": text, "acronym": r"A\_B"},
        "statusModule": {"whyStopped": text},
        "descriptionModule": {"briefSummary": text, "detailedDescription": text},
        "conditionsModule": {"conditions": [text], "keywords": [text]},
        "armsInterventionsModule": {
            "armGroups": [{"label": text, "description": text, "interventionNames": [text]}],
            "interventions": [{"type": "DRUG", "name": text, "description": text}]},
        "outcomesModule": {"primaryOutcomes": [
            {"measure": text, "timeFrame": text, "description": text}]},
        "eligibilityModule": {"eligibilityCriteria": f"Inclusion Criteria:\n\n* {text}"},
        "contactsLocationsModule": {"locations": [{"facility": text, "city": "Paris"}]},
    }}


def strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


def test_every_text_field_of_the_json_is_unescaped() -> None:
    record = parse_study(doc_with(ESCAPED))
    texts = strings(record.to_canonical())
    assert not [t for t in texts if "\\" in t]
    assert texts.count(PLAIN) >= 15  # every field above that carries the text
    assert record.get("identification", "acronym") == "A_B"


def test_text_page_unescapes_like_the_json() -> None:
    page = parse_text_page(
        f"{ESCAPED}\nNCT ID: NCT01234567\n\nOfficial Title\n\n{ESCAPED}\n\nBrief Summary\n\n"
        f"{ESCAPED}\n\nEligibility Criteria\n\nInclusion Criteria:\n\n* {ESCAPED}\n")
    record = parse_study(doc_with(ESCAPED))
    for section, field in (("identification", "brief_title"), ("identification", "official_title"),
                           ("description", "brief_summary"), ("eligibility", "inclusion")):
        assert page.get(section, field) == record.get(section, field)
    assert page.get("description", "brief_summary") == PLAIN


def test_real_ampersand_escape_is_undone_in_criteria() -> None:
    # NCT01776177: "Received Omalizumab therapy per steps 5 \& 6 of the NHLBI guidelines"
    record = parse_study(real_study("NCT01776177"))
    criteria = [c["text"] for c in record.get("eligibility", "inclusion")]
    assert "Received Omalizumab therapy per steps 5 & 6 of the NHLBI guidelines" in criteria
    assert not [t for t in strings(record.to_canonical()) if "\\&" in t]
