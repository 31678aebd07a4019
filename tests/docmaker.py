"""Modified copies of real registry documents, for tests that change one thing at a time.

Every document starts as a real ClinicalTrials.gov API v2 file from ``../shared/ctgov``
(a test that needs one is skipped without it), or as the project's own constructed API v2
version of the seed (``SEED_JSON``, ``tests/fixtures/ctgov/constructed``) or the shipped seed
text page, and a test edits exactly what it is about, so the expected
change events follow from the edit. ``study(name)`` returns a fresh deep copy each call;
the helpers below edit it in place and return it, so they chain:

    new = add_criterion(set_status(study(SEED_JSON), "RECRUITING"), "exclusion", "...")
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import orjson
from shared_data import ctgov_file

from trialwatch.monitor.record import TrialRecord
from trialwatch.monitor.sources.ctgov.parser import parse_study

TESTS_DIR = Path(__file__).resolve().parent
SEED_PAGE = TESTS_DIR.parent / "seeds" / "NCT07328581.txt"
SEED_JSON = "constructed/NCT07328581"  # the API v2 JSON of the seed page's version
BIG = "NCT04267848"  # 369 KB, 1,148 sites
WITH_RESULTS = "NCT03722472"  # hasResults true, full resultsSection

Study = dict[str, Any]


@cache
def _raw(name: str) -> bytes:
    return fixture_path(name).read_bytes()


def fixture_path(name: str) -> Path:
    """``../shared/ctgov/<name>.json`` (``constructed/...``: the project's own copy)."""
    return ctgov_file(f"{name}.json")


def study(name: str) -> Study:
    """A fresh, editable copy of the document ``<name>`` (see ``fixture_path``)."""
    return copy.deepcopy(_parsed(name))


@cache
def _parsed(name: str) -> Study:
    doc = orjson.loads(_raw(name))
    assert isinstance(doc, dict)
    return doc


def record(doc: Study) -> TrialRecord:
    return parse_study(doc)


def write(doc: Study, path: Path) -> Path:
    """Write ``doc`` as API JSON (compact, as the registry serves it); returns ``path``."""
    path.write_bytes(orjson.dumps(doc))
    return path


def module(doc: Study, name: str) -> dict[str, Any]:
    """``protocolSection.<name>`` (e.g. ``"statusModule"``), created if absent."""
    found: dict[str, Any] = doc["protocolSection"].setdefault(name, {})
    return found


def edit(doc: Study, change: Callable[[Study], object]) -> Study:
    change(doc)
    return doc


# --------------------------------------------------------------------------- status, dates


def set_status(doc: Study, status: str) -> Study:
    module(doc, "statusModule")["overallStatus"] = status
    return doc


def set_date(doc: Study, struct: str, date: str, kind: str = "ESTIMATED") -> Study:
    """``statusModule.<struct>`` (e.g. ``primaryCompletionDateStruct``) := date + type."""
    module(doc, "statusModule")[struct] = {"date": date, "type": kind}
    return doc


def new_registry_day(doc: Study, day: str) -> Study:
    """What moves when the registry republishes a record without a change by the sponsor."""
    status = module(doc, "statusModule")
    status["lastUpdatePostDateStruct"] = {"date": day, "type": "ACTUAL"}
    status["lastUpdateSubmitDate"] = day
    status["statusVerifiedDate"] = day[:7]
    doc.setdefault("derivedSection", {}).setdefault("miscInfoModule", {})["versionHolder"] = day
    return doc


def post_results(doc: Study, date: str = "2026-06-01") -> Study:
    """Results first posted: ``hasResults``, a real ``resultsSection``, the posting date."""
    doc["hasResults"] = True
    doc["resultsSection"] = study(WITH_RESULTS)["resultsSection"]
    set_date(doc, "resultsFirstPostDateStruct", date, "ACTUAL")
    return doc


# --------------------------------------------------------------------------- design


def set_enrollment(doc: Study, count: int, kind: str) -> Study:
    module(doc, "designModule")["enrollmentInfo"] = {"count": count, "type": kind}
    return doc


def set_phases(doc: Study, *phases: str) -> Study:
    module(doc, "designModule")["phases"] = list(phases)
    return doc


# --------------------------------------------------------------------------- eligibility


def _criteria(doc: Study) -> str:
    text = module(doc, "eligibilityModule")["eligibilityCriteria"]
    assert isinstance(text, str)
    return text


def _set_criteria(doc: Study, text: str) -> Study:
    module(doc, "eligibilityModule")["eligibilityCriteria"] = text
    return doc


def _split_sections(text: str) -> tuple[str, list[str], str, list[str]]:
    """``(inclusion heading, its lines, exclusion heading, its lines)`` of a numbered text."""
    inclusion, exclusion = text.split("Exclusion Criteria:", 1)
    inc_head, inc_body = inclusion.split("\n", 1)
    return (inc_head, [line for line in inc_body.split("\n") if line.strip()],
            "Exclusion Criteria:", [line for line in exclusion.split("\n") if line.strip()])


def _join(inc_head: str, inc: list[str], exc_head: str, exc: list[str]) -> str:
    def numbered(lines: list[str]) -> str:
        bodies = [line.split(". ", 1)[1] if line[:1].isdigit() else line for line in lines]
        return "\n".join(f"{i}. {body}" for i, body in enumerate(bodies, start=1))
    return f"{inc_head}\n\n{numbered(inc)}\n\n{exc_head}\n\n{numbered(exc)}"


def add_criterion(doc: Study, which: str, text: str) -> Study:
    """Append a numbered criterion to the inclusion or exclusion list."""
    inc_head, inc, exc_head, exc = _split_sections(_criteria(doc))
    (inc if which == "inclusion" else exc).append(text)
    return _set_criteria(doc, _join(inc_head, inc, exc_head, exc))


def reword_criterion(doc: Study, old: str, new: str) -> Study:
    text = _criteria(doc)
    assert old in text, f"criterion text not found: {old!r}"
    return _set_criteria(doc, text.replace(old, new, 1))


def reverse_criteria(doc: Study) -> Study:
    """Both criteria lists in reverse order (renumbered, as a sponsor's edit would be)."""
    inc_head, inc, exc_head, exc = _split_sections(_criteria(doc))
    return _set_criteria(doc, _join(inc_head, inc[::-1], exc_head, exc[::-1]))


# --------------------------------------------------------------------------- outcomes, sites


def reword_primary_outcome(doc: Study, index: int, measure: str) -> Study:
    module(doc, "outcomesModule")["primaryOutcomes"][index]["measure"] = measure
    return doc


def sites(doc: Study) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = module(doc, "contactsLocationsModule")["locations"]
    return found


def add_site(doc: Study, facility: str, city: str, country: str, **more: Any) -> Study:
    """A recruiting site; ``more`` adds or overrides fields (``zip``, ``status``, ...)."""
    sites(doc).append({"facility": facility, "status": "RECRUITING", "city": city,
                       "country": country, **more})
    return doc


def reverse_sites(doc: Study) -> Study:
    sites(doc).reverse()
    return doc


# --------------------------------------------------------------------------- text pages


def seed_page(last_updated: str | None = None) -> str:
    """The seed text page, optionally as republished on another day (``Last Updated``)."""
    text = SEED_PAGE.read_text(encoding="utf-8")
    if last_updated is not None:
        assert "Last Updated: 2026-01-09" in text
        text = text.replace("Last Updated: 2026-01-09", f"Last Updated: {last_updated}")
    return text


# --------------------------------------------------------------------------- bad files


def truncated(name: str, keep: float = 0.5) -> bytes:
    """The first part of a real document: JSON cut off mid-way, as a dropped download is."""
    data = _raw(name)
    return data[: int(len(data) * keep)]


def recruiting_copy(tmp_path: Path, *, title: str | None = None) -> Path:
    """The seed trial's API document, now recruiting (a new registry version), as a file."""
    doc = new_registry_day(set_status(study(SEED_JSON), "RECRUITING"), "2026-02-01")
    if title is not None:
        module(doc, "identificationModule")["briefTitle"] = title
    return write(doc, tmp_path / "recruiting.json")
