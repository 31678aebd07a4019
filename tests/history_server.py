"""A fake of the website's version-history endpoints, and a realistic history to serve.

``FakeHistoryRegistry`` is ``FakeRegistry`` (same server, request log, ``fail_next`` and
``fault_hook``) plus ``/api/int/studies/{NCT}/history`` and ``.../history/{version}``::

    with FakeHistoryRegistry() as fake:
        fake.add_history(abexinostat_history())
        client = HistoryClient(fake.history_url, requests_per_second=0)

``abexinostat_history()`` builds seven registry versions of NCT03934567 from the real API v2
document in ``../shared/ctgov``: the trial opens (status, start date), enrollment grows,
the primary outcome is reworded, an eligibility criterion is added, recruitment closes with
the actual enrollment, and the completion dates move. Versions 2 and 6 (the latest) are
served HTML-rendered, as the website does, and no version carries ``derivedSection`` or
``hasResults``. ``current_api_document()`` is the latest version as API v2 serves it.
"""

from __future__ import annotations

import copy
import html
import re
from dataclasses import dataclass, field
from typing import Any

from registry_server import FakeRegistry, _json, _text, load_fixture

NCT_ID = "NCT03934567"
NEW_CRITERION = "Meet various hematological, liver function and renal function lab parameters"
OLD_MEASURE = "Objective response rate assessed by independent central review"
TEXT_FIELDS = ("briefSummary", "detailedDescription", "eligibilityCriteria", "description",
               "whyStopped")


@dataclass
class HistoryVersion:
    """One registry version: its history-list row and the study document it serves."""

    date: str
    study: dict[str, Any]
    module_labels: list[str] = field(default_factory=list)
    html: bool = False

    @property
    def status(self) -> str:
        return str(self.study["protocolSection"]["statusModule"]["overallStatus"])


class FakeHistoryRegistry(FakeRegistry):
    """``FakeRegistry`` that also serves registry version histories under ``/api/int``."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.histories: dict[str, list[HistoryVersion]] = {}
        self.list_override: dict[str, Any] | None = None  # served instead of the list

    def add_history(self, versions: list[HistoryVersion], nct_id: str = NCT_ID) -> None:
        self.histories[nct_id] = versions

    @property
    def history_url(self) -> str:
        return self.base_url.replace("/api/v2", "/api/int")

    def answer(self, path: str, params: dict[str, str]) -> tuple[int, bytes, str, dict[str, str]]:
        match = re.fullmatch(r"/api/int/studies/([^/]+)/history(?:/(\d+))?", path)
        if match is None:
            return super().answer(path, params)
        versions = self.histories.get(match.group(1))
        if versions is None:
            return _text(404, f"Study {match.group(1)} not found")
        if match.group(2) is None:
            if self.list_override is not None:
                return _json(200, self.list_override)
            return _json(200, {"changes": [
                {"version": n, "date": v.date, "moduleLabels": v.module_labels,
                 "status": v.status} for n, v in enumerate(versions)]})
        number = int(match.group(2))
        if number >= len(versions):
            return _text(404, f"No version {number}")
        version = versions[number]
        study = render_html(version.study) if version.html else version.study
        return _json(200, {"studyVersion": number, "study": study})


# ----------------------------------------------------------------- the realistic history


def current_api_document() -> dict[str, Any]:
    """NCT03934567 as API v2 serves it today, with text that needs escaping and entities."""
    doc = load_fixture("NCT03934567.json")
    protocol = doc["protocolSection"]
    eligibility = protocol["eligibilityModule"]
    eligibility["eligibilityCriteria"] = eligibility["eligibilityCriteria"].replace(
        "1. Life expectancy ≥ 3 months", "1. Age \\>= 18 years & life expectancy ≥ 3 months")
    description = protocol["descriptionModule"]
    description["detailedDescription"] += (
        "\n\nThe study's primary endpoint is assessed centrally:\n\n"
        "* Stage 1: 20 patients\n* Stage 2: up to 87 patients")
    return doc


def abexinostat_history() -> list[HistoryVersion]:
    """Seven registry versions of NCT03934567, oldest first (see the module docstring)."""
    current = current_api_document()

    def version(date: str, labels: list[str], *, html_text: bool = False,
                **changes: Any) -> HistoryVersion:
        study = copy.deepcopy(current)
        study.pop("derivedSection", None)
        study.pop("hasResults", None)
        protocol = study["protocolSection"]
        status = protocol["statusModule"]
        status["lastUpdatePostDateStruct"] = {"date": date, "type": "ACTUAL"}
        status["lastUpdateSubmitDate"] = date
        status["statusVerifiedDate"] = date[:7]
        for key, value in changes.items():
            _apply(protocol, key, value)
        return HistoryVersion(date, study, labels, html_text)

    estimated = "ESTIMATED"
    first = {
        "status": "NOT_YET_RECRUITING",
        "start": {"date": "2019-06", "type": estimated},
        "primary_completion": {"date": "2021-06", "type": estimated},
        "completion": {"date": "2022-06", "type": estimated},
        "enrollment": {"count": 110, "type": estimated},
        "measure": OLD_MEASURE,
        "drop_criterion": True,
    }
    opened = {**first, "status": "RECRUITING", "start": {"date": "2020-04-22", "type": "ACTUAL"}}
    grown = {**opened, "enrollment": {"count": 120, "type": estimated}}
    reworded = {k: v for k, v in grown.items() if k != "measure"}
    criterion = {k: v for k, v in reworded.items() if k != "drop_criterion"}
    closed = {**criterion, "status": "ACTIVE_NOT_RECRUITING",
              "enrollment": {"count": 87, "type": "ACTUAL"}}
    latest = current["protocolSection"]["statusModule"]["lastUpdatePostDateStruct"]["date"]
    history = [
        version("2019-05-02", [], **first),
        version("2020-05-01", ["Recruitment Status", "Study Status"], **opened),
        version("2020-09-15", ["Study Design", "Study Status"], html_text=True, **grown),
        version("2021-06-01", ["Outcome Measures", "Study Status"], **reworded),
        version("2022-03-01", ["Eligibility", "Study Status"], **criterion),
        version("2023-01-10", ["Recruitment Status", "Study Design", "Study Status"], **closed),
        version(latest, ["Study Status"], html_text=True),
    ]
    history[-1].study["protocolSection"]["statusModule"] = copy.deepcopy(
        current["protocolSection"]["statusModule"])
    return history


def _apply(protocol: dict[str, Any], key: str, value: Any) -> None:
    status = protocol["statusModule"]
    if key == "status":
        status["overallStatus"] = value
    elif key in ("start", "primary_completion", "completion"):
        name = {"start": "startDateStruct", "primary_completion": "primaryCompletionDateStruct",
                "completion": "completionDateStruct"}[key]
        status[name] = value
    elif key == "enrollment":
        protocol["designModule"]["enrollmentInfo"] = value
    elif key == "measure":
        protocol["outcomesModule"]["primaryOutcomes"][0]["measure"] = value
    elif key == "drop_criterion":
        eligibility = protocol["eligibilityModule"]
        criteria = eligibility["eligibilityCriteria"]
        criteria = criteria.replace(f"\n7. {NEW_CRITERION}", "")
        eligibility["eligibilityCriteria"] = criteria
    else:
        raise KeyError(key)


# ----------------------------------------------------------------- HTML as the website renders


def render_html(study: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``study`` whose text fields are HTML, as the website's endpoints send them."""
    return _render(copy.deepcopy(study))


def _render(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _render(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_render(v) for v in value]
    if isinstance(value, str) and key in TEXT_FIELDS:
        return markdown_to_html(value)
    return value


def markdown_to_html(text: str) -> str:
    """API v2 text → website HTML: paragraphs, ``<ul>``/``<ol>`` lists, entities."""
    parts = []
    for block in re.split(r"\n\s*\n", text.strip()):
        lines = block.split("\n")
        if all(re.match(r"^\* ", line) for line in lines):
            items = "".join(f"<li>{_inline(line[2:])}</li>" for line in lines)
            parts.append(f"<ul>{items}</ul>")
        elif all(re.match(r"^\d+\. ", line) for line in lines):
            items = "".join(f"<li>{_inline(line.split('. ', 1)[1])}</li>" for line in lines)
            parts.append(f"<ol>{items}</ol>")
        else:
            parts.append("<p>" + "<br/>".join(_inline(line) for line in lines) + "</p>")
    return "\n".join(parts)


def _inline(text: str) -> str:
    escaped = html.escape(text.replace("\\>", ">").replace("\\<", "<"), quote=True)
    return escaped.replace("&#x27;", "&#39;").replace("≥", "&ge;")
