"""Turn ClinicalTrials.gov API v2 study documents into canonical ``TrialRecord``s.

Pure functions, no I/O. ``parse_study`` reads one study document, ``iter_page_studies`` the
studies of one ``/studies`` list page; eligibility text is split into single criteria by
``trialwatch.monitor.sources.criteria`` (the text-page parser uses it too).

Absence follows the record rule: a *full* document (it has ``derivedSection`` or
``hasResults``) says everything the registry knows, so every field is emitted and what the
document lacks is known-empty (``None`` / ``[]``); a *partial* document (fetched with
``fields=``) emits only what it carries. ``derivedSection`` (registry annotation, including
``miscInfoModule.versionHolder`` that moves daily) is ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from enum import Enum
from typing import Any, Final

import orjson

from trialwatch.monitor.record import ParseError, TrialRecord, is_valid_nct_id
from trialwatch.monitor.sources.criteria import normalize_text, split_criteria, unescape_markdown
from trialwatch.monitor.sources.ctgov.results import (
    not_understood,
    results_content,
    unposted_events,
)

__all__ = ["is_full_document", "iter_page_studies", "parse_study"]


class _Missing(Enum):
    TOKEN = 0


MISSING: Final = _Missing.TOKEN

# "Biological: X" in armGroups[].interventionNames -> "X" (display names of the API types).
_INTERVENTION_PREFIX_RE = re.compile(
    r"^(?:Drug|Device|Biological|Procedure|Radiation|Behavioral|Genetic|Dietary Supplement|"
    r"Combination Product|Diagnostic Test|Other)\s*:\s*",
    re.IGNORECASE,
)


def _kind(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", int: "integer", float: "number",
             bool: "boolean", type(None): "null"}
    return names.get(type(value), type(value).__name__)


# --------------------------------------------------------------------------- reading helpers


def _obj(parent: Mapping[str, Any] | None, key: str, path: str) -> Mapping[str, Any] | None:
    """The object at ``parent[key]``; ``None`` when absent or null."""
    if parent is None:
        return None
    value = parent.get(key)
    if value is None:
        return None
    if type(value) is not dict and not isinstance(value, Mapping):  # the ABC check is slow
        raise ParseError(f"{path}.{key}: expected an object, got {_kind(value)}")
    return value


def _str(parent: Mapping[str, Any] | None, key: str, path: str) -> str | _Missing | None:
    """A text field, its markdown escapes undone (``\\&`` → ``&``)."""
    value = _raw_str(parent, key, path)
    return unescape_markdown(value) if type(value) is str and "\\" in value else value


def _raw_str(parent: Mapping[str, Any] | None, key: str, path: str) -> str | _Missing | None:
    if parent is None or key not in parent:
        return MISSING
    value = parent[key]
    if value is None:
        return None
    if not isinstance(value, str):
        raise ParseError(f"{path}.{key}: expected a string, got {_kind(value)}")
    return value.strip() or None


def _text(parent: Mapping[str, Any] | None, key: str, path: str) -> str | _Missing | None:
    value = _str(parent, key, path)
    return normalize_text(value) or None if isinstance(value, str) else value


def _list(parent: Mapping[str, Any] | None, key: str, path: str) -> list[Any] | _Missing:
    if parent is None or key not in parent:
        return MISSING
    value = parent[key]
    if value is None:
        return []
    if not isinstance(value, list):
        raise ParseError(f"{path}.{key}: expected an array, got {_kind(value)}")
    return value


def _str_list(parent: Mapping[str, Any] | None, key: str, path: str) -> list[str] | _Missing:
    items = _list(parent, key, path)
    if isinstance(items, _Missing):
        return items
    out: list[str] = []
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise ParseError(f"{path}.{key}[{i}]: expected a string, got {_kind(item)}")
        if item.strip():
            out.append(unescape_markdown(item.strip()) if "\\" in item else item.strip())
    return out


def _objects(
    parent: Mapping[str, Any] | None, key: str, path: str
) -> list[tuple[Mapping[str, Any], str]] | _Missing:
    items = _list(parent, key, path)
    if isinstance(items, _Missing):
        return items
    out: list[tuple[Mapping[str, Any], str]] = []
    for i, item in enumerate(items):
        if type(item) is not dict and not isinstance(item, Mapping):
            raise ParseError(f"{path}.{key}[{i}]: expected an object, got {_kind(item)}")
        out.append((item, f"{path}.{key}[{i}]"))
    return out


class _Emitter:
    """Puts values into a section dict following the full/partial absence rule."""

    def __init__(self, full: bool) -> None:
        self.full = full

    def put(self, out: dict[str, Any], key: str, value: Any, empty: Any = None) -> None:
        if value is MISSING:
            if self.full:
                out[key] = empty
        else:
            out[key] = value

    def strings(self, src: Mapping[str, Any], path: str | tuple[str, str, int],
                spec: Mapping[str, str]) -> dict[str, Any]:
        """A dict of string fields ``out_key <- src[src_key]`` (``_str`` and ``put``, inlined:
        this runs for every site, outcome and contact of every document). ``path`` may be
        ``(path, key, index)``, formatted only for an error message."""
        out: dict[str, Any] = {}
        full = self.full
        get = src.get
        for out_key, src_key in spec.items():
            value = get(src_key, MISSING)
            if type(value) is str:
                if "\\" in value:
                    value = unescape_markdown(value)
                out[out_key] = value.strip() or None
            elif value is None or (value is MISSING and full):
                out[out_key] = None
            elif value is not MISSING:
                if not isinstance(value, str):
                    where = path if isinstance(path, str) else f"{path[0]}.{path[1]}[{path[2]}]"
                    raise ParseError(f"{where}.{src_key}: expected a string, got {_kind(value)}")
                out[out_key] = unescape_markdown(value).strip() or None
        return out

    def records(
        self, parent: Mapping[str, Any] | None, key: str, path: str, spec: Mapping[str, str]
    ) -> list[dict[str, Any]] | _Missing:
        items = _list(parent, key, path)
        if isinstance(items, _Missing):
            return items
        out = []
        strings = self.strings
        for i, item in enumerate(items):
            if type(item) is not dict and not isinstance(item, Mapping):
                raise ParseError(f"{path}.{key}[{i}]: expected an object, got {_kind(item)}")
            out.append(strings(item, (path, key, i), spec))
        return out

    def date(self, parent: Mapping[str, Any] | None, key: str, path: str) -> Any:
        if parent is None or key not in parent:
            return MISSING
        struct = _obj(parent, key, path)
        if struct is None:
            return None
        return self.strings(struct, f"{path}.{key}", {"date": "date", "type": "type"})


# --------------------------------------------------------------------------- the study


def is_full_document(doc: Mapping[str, Any]) -> bool:
    """A full (unrestricted) study document carries ``derivedSection`` or ``hasResults``."""
    return "derivedSection" in doc or "hasResults" in doc


def parse_study(doc: Mapping[str, Any]) -> TrialRecord:
    """Parse one API v2 study document; raise ``ParseError`` for anything that is not one."""
    if not isinstance(doc, Mapping):
        raise ParseError(
            f"not a ClinicalTrials.gov study: expected a JSON object, got {_kind(doc)}")
    _check_depth(doc)
    if "protocolSection" not in doc:
        raise ParseError("not a ClinicalTrials.gov study: no protocolSection")
    protocol = _obj(doc, "protocolSection", "document")
    if protocol is None:
        raise ParseError("not a ClinicalTrials.gov study: protocolSection is null")
    ps = "protocolSection"
    ident = _obj(protocol, "identificationModule", ps)
    nct_id = _str(ident, "nctId", f"{ps}.identificationModule")
    if not isinstance(nct_id, str):
        raise ParseError(f"study has no NCT ID ({ps}.identificationModule.nctId)")
    if not is_valid_nct_id(nct_id):
        raise ParseError(f"invalid NCT ID {nct_id!r} (expected NCT followed by 8 digits)")

    em = _Emitter(is_full_document(doc))

    def module(name: str) -> tuple[Mapping[str, Any] | None, str]:
        return _obj(protocol, name, ps), f"{ps}.{name}"

    sections: dict[str, dict[str, Any]] = {
        "identification": _identification(em, ident, f"{ps}.identificationModule"),
        "status": {},
        "dates": {},
        "sponsor": _sponsor(em, *module("sponsorCollaboratorsModule")),
        "description": {},
        "conditions": {},
        "design": _design(em, *module("designModule")),
        "arms": _arms(em, *module("armsInterventionsModule")),
        "outcomes": {},
        "eligibility": _eligibility(em, *module("eligibilityModule")),
        "contacts": {},
        "locations": {},
        "references": {},
        "results": _results(em, doc),
        "sharing": _sharing(em, *module("ipdSharingStatementModule")),
    }
    status, path = module("statusModule")
    _status_and_dates(em, status, path, sections["status"], sections["dates"])

    desc, path = module("descriptionModule")
    em.put(sections["description"], "brief_summary", _text(desc, "briefSummary", path))
    em.put(sections["description"], "detailed_description",
           _text(desc, "detailedDescription", path))

    cond, path = module("conditionsModule")
    for out_key, src_key in (("conditions", "conditions"), ("keywords", "keywords")):
        em.put(sections["conditions"], out_key, _sorted(_str_list(cond, src_key, path)), [])

    outcomes, path = module("outcomesModule")
    spec = {"measure": "measure", "time_frame": "timeFrame", "description": "description"}
    for out_key, src_key in (("primary", "primaryOutcomes"), ("secondary", "secondaryOutcomes"),
                             ("other", "otherOutcomes")):
        em.put(sections["outcomes"], out_key, em.records(outcomes, src_key, path, spec), [])

    contacts, path = module("contactsLocationsModule")
    em.put(sections["contacts"], "central_contacts", em.records(
        contacts, "centralContacts", path,
        {"name": "name", "role": "role", "phone": "phone", "email": "email"}), [])
    em.put(sections["contacts"], "overall_officials", em.records(
        contacts, "overallOfficials", path,
        {"name": "name", "affiliation": "affiliation", "role": "role"}), [])
    sites = em.records(contacts, "locations", path,
                       {"facility": "facility", "city": "city", "state": "state", "zip": "zip",
                        "country": "country", "status": "status"})
    if not isinstance(sites, _Missing):
        _add_coordinates(em, sites, _list(contacts, "locations", path))
    em.put(sections["locations"], "sites", sites, [])

    refs, path = module("referencesModule")
    em.put(sections["references"], "references", em.records(
        refs, "references", path, {"pmid": "pmid", "type": "type", "citation": "citation"}), [])

    return TrialRecord.build(nct_id, sections, unread=not_understood(doc))


# Real documents nest about 10 levels deep; the raw document is stored as JSON (orjson writes
# at most 254 levels), so anything deeper is refused here, before anything serializes it.
MAX_DEPTH = 64


def _orjson_depth_limit(cap: int = 1024) -> int | None:
    """How many nested containers ``orjson.dumps`` writes before it refuses (254 in orjson 3;
    ``None`` if not within ``cap``). Probed once, not assumed: the fast depth check below is
    only right with the limit of the orjson actually installed."""
    value: list[Any] = []
    for depth in range(1, cap + 1):
        try:
            orjson.dumps(value)
        except orjson.JSONEncodeError:
            return depth - 1
        value = [value]
    return None


_ORJSON_DEPTH_LIMIT: Final = _orjson_depth_limit()
# Lists to wrap a document in so that orjson's own limit becomes MAX_DEPTH (0: no fast check).
_DEPTH_PADDING: Final = max(0, (_ORJSON_DEPTH_LIMIT or 0) - MAX_DEPTH)
# Types that orjson would otherwise write without counting them as the depth walk does.
_PLAIN_JSON_ONLY: Final = (orjson.OPT_PASSTHROUGH_SUBCLASS | orjson.OPT_PASSTHROUGH_DATACLASS
                           | orjson.OPT_PASSTHROUGH_DATETIME)


def _check_depth(doc: Mapping[str, Any]) -> None:
    """Refuse a document nested deeper than ``MAX_DEPTH`` levels.

    Fast path: orjson, in C, proves that a document of plain dicts, lists and scalars is
    shallow enough, when wrapped in ``_DEPTH_PADDING`` lists it serializes within orjson's
    own depth limit. Anything orjson refuses (too deep, or a subclass, a non-dict
    ``Mapping``, a lone surrogate...) is decided by ``_check_depth_walk``, which gives the
    answer and the error message. orjson never counts fewer levels than the walk (it also
    counts tuples), so the fast path never lets through what the walk would refuse."""
    if _DEPTH_PADDING:
        wrapped: Any = doc
        for _ in range(_DEPTH_PADDING // 10):  # ten levels a step: one a step costs as much
            wrapped = [[[[[[[[[[wrapped]]]]]]]]]]  # as the dumps below
        for _ in range(_DEPTH_PADDING % 10):
            wrapped = [wrapped]
        try:
            orjson.dumps(wrapped, option=_PLAIN_JSON_ONLY)
        except orjson.JSONEncodeError:
            pass
        else:
            return
    _check_depth_walk(doc)


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _check_depth_walk(doc: Mapping[str, Any]) -> None:
    """Level by level; containers holding only scalars (most of them) are passed over at C
    speed, scalars are told by their exact type, and the slow abstract ``Mapping`` check is
    left for what is neither a scalar nor a dict or list."""
    level: list[Any] = [doc]
    depth = 1
    while True:
        below: list[Any] = []
        for value in level:
            kind = type(value)
            children = value.values() if kind is dict or (
                kind is not list and isinstance(value, Mapping)) else value
            if _SCALARS.issuperset(map(type, children)):  # a leaf: no container inside
                continue
            below.extend([
                child for child in children
                if (kind := type(child)) is dict or kind is list
                or (kind not in _SCALARS and isinstance(child, Mapping | list))])
        if not below:
            return
        if depth >= MAX_DEPTH:
            raise ParseError(f"document is nested deeper than {MAX_DEPTH} levels")
        level, depth = below, depth + 1


def _sorted(values: list[str] | _Missing) -> list[str] | _Missing:
    return values if isinstance(values, _Missing) else sorted(values)


def _identification(em: _Emitter, ident: Mapping[str, Any] | None, path: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    em.put(out, "brief_title", _str(ident, "briefTitle", path))
    em.put(out, "official_title", _str(ident, "officialTitle", path))
    em.put(out, "acronym", _str(ident, "acronym", path))
    org = _obj(ident, "organization", path)
    em.put(out, "organization", _str(org, "fullName", f"{path}.organization"))
    org_id = _obj(ident, "orgStudyIdInfo", path)
    em.put(out, "org_study_id", _str(org_id, "id", f"{path}.orgStudyIdInfo"))
    em.put(out, "secondary_ids", em.records(
        ident, "secondaryIdInfos", path, {"id": "id", "type": "type", "domain": "domain"}), [])
    return out


def _status_and_dates(
    em: _Emitter, status: Mapping[str, Any] | None, path: str,
    out: dict[str, Any], dates: dict[str, Any],
) -> None:
    em.put(out, "overall_status", _str(status, "overallStatus", path))
    em.put(out, "why_stopped", _text(status, "whyStopped", path))
    em.put(out, "last_known_status", _str(status, "lastKnownStatus", path))
    em.put(out, "status_verified_date", _str(status, "statusVerifiedDate", path))
    # Known only where the document says it: real records drop expandedAccessInfo now and
    # then without any change to the trial, and that must not read as "no longer available".
    access = _obj(status, "expandedAccessInfo", path)
    if access is not None and access.get("hasExpandedAccess") is not None:
        has_access = access["hasExpandedAccess"]
        if not isinstance(has_access, bool):
            raise ParseError(f"{path}.expandedAccessInfo.hasExpandedAccess: expected a boolean, "
                             f"got {_kind(has_access)}")
        out["expanded_access"] = has_access
    for out_key, src_key in (
        ("start", "startDateStruct"),
        ("primary_completion", "primaryCompletionDateStruct"),
        ("completion", "completionDateStruct"),
        ("first_posted", "studyFirstPostDateStruct"),
        ("results_first_posted", "resultsFirstPostDateStruct"),
        ("last_update_posted", "lastUpdatePostDateStruct"),
    ):
        em.put(dates, out_key, em.date(status, src_key, path))
    submitted = _str(status, "lastUpdateSubmitDate", path)
    em.put(dates, "last_update_submitted",
           {"date": submitted} if isinstance(submitted, str) else submitted)


def _sponsor(em: _Emitter, mod: Mapping[str, Any] | None, path: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    lead = _obj(mod, "leadSponsor", path)
    em.put(out, "lead_sponsor", _str(lead, "name", f"{path}.leadSponsor"))
    em.put(out, "lead_sponsor_class", _str(lead, "class", f"{path}.leadSponsor"))
    collaborators = em.records(mod, "collaborators", path, {"name": "name"})
    if not isinstance(collaborators, _Missing):
        collaborators = sorted(c["name"] for c in collaborators if c.get("name"))
    em.put(out, "collaborators", collaborators, [])
    if mod is not None and "responsibleParty" in mod:
        party = _obj(mod, "responsibleParty", path)
        spec = {"type": "type", "investigator": "investigatorFullName"}
        em.put(out, "responsible_party",
               None if party is None else em.strings(party, f"{path}.responsibleParty", spec))
    else:
        em.put(out, "responsible_party", MISSING)
    return out


def _design(em: _Emitter, mod: Mapping[str, Any] | None, path: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    em.put(out, "study_type", _str(mod, "studyType", path))
    em.put(out, "phases", _sorted(_str_list(mod, "phases", path)), [])
    info = _obj(mod, "designInfo", path)
    ipath = f"{path}.designInfo"
    em.put(out, "allocation", _str(info, "allocation", ipath))
    em.put(out, "intervention_model", _str(info, "interventionModel", ipath))
    em.put(out, "primary_purpose", _str(info, "primaryPurpose", ipath))
    masking = _obj(info, "maskingInfo", ipath)
    em.put(out, "masking", _str(masking, "masking", f"{ipath}.maskingInfo"))
    em.put(out, "observational_model", _str(info, "observationalModel", ipath))
    em.put(out, "time_perspective", _str(info, "timePerspective", ipath))
    enrollment: Any = MISSING
    if mod is not None and "enrollmentInfo" in mod:
        info = _obj(mod, "enrollmentInfo", path)
        enrollment = None
        if info is not None:
            epath = f"{path}.enrollmentInfo"
            enrollment = {}
            count = info.get("count", MISSING)
            if count is not MISSING and count is not None and (
                    isinstance(count, bool) or not isinstance(count, int)):
                raise ParseError(f"{epath}.count: expected an integer, got {_kind(count)}")
            em.put(enrollment, "count", count)
            em.put(enrollment, "type", _str(info, "type", epath))
    em.put(out, "enrollment", enrollment)
    return out


def _arms(em: _Emitter, mod: Mapping[str, Any] | None, path: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    groups = _objects(mod, "armGroups", path)
    arm_groups: list[dict[str, Any]] | _Missing = MISSING
    if not isinstance(groups, _Missing):
        arm_groups = []
        for item, item_path in groups:
            arm = em.strings(item, item_path, {"label": "label", "type": "type"})
            em.put(arm, "description", _text(item, "description", item_path))
            names = _str_list(item, "interventionNames", item_path)
            if not isinstance(names, _Missing):
                names = sorted(_INTERVENTION_PREFIX_RE.sub("", n, count=1) for n in names)
            em.put(arm, "interventions", names, [])
            arm_groups.append(arm)
    em.put(out, "arm_groups", arm_groups, [])
    items = _objects(mod, "interventions", path)
    interventions: list[dict[str, Any]] | _Missing = MISSING
    if not isinstance(items, _Missing):
        interventions = []
        for item, item_path in items:
            entry = em.strings(item, item_path, {"type": "type", "name": "name"})
            em.put(entry, "description", _text(item, "description", item_path))
            interventions.append(entry)
    em.put(out, "interventions", interventions, [])
    return out


def _eligibility(em: _Emitter, mod: Mapping[str, Any] | None, path: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    criteria = _raw_str(mod, "eligibilityCriteria", path)  # escapes undone per criterion
    if isinstance(criteria, _Missing):
        for key in ("inclusion", "exclusion", "other_criteria"):
            em.put(out, key, MISSING, [])
    else:
        out.update(split_criteria(criteria or ""))
    em.put(out, "sex", _str(mod, "sex", path))
    em.put(out, "minimum_age", _str(mod, "minimumAge", path))
    em.put(out, "maximum_age", _str(mod, "maximumAge", path))
    healthy: Any = MISSING
    if mod is not None and "healthyVolunteers" in mod:
        healthy = mod["healthyVolunteers"]
        if healthy is not None and not isinstance(healthy, bool):
            raise ParseError(f"{path}.healthyVolunteers: expected a boolean, got {_kind(healthy)}")
    em.put(out, "healthy_volunteers", healthy)
    em.put(out, "std_ages", _sorted(_str_list(mod, "stdAges", path)), [])
    return out


def _add_coordinates(em: _Emitter, sites: list[dict[str, Any]], raw: list[Any] | _Missing
                     ) -> None:
    """Each site's ``geoPoint`` as ``geo`` ``{"lat", "lon"}``: what tells apart two sites
    that share a facility, a city and even a zip. Anything but two numbers is no point."""
    if isinstance(raw, _Missing):
        return
    for site, item in zip(sites, raw, strict=True):
        point = item.get("geoPoint", MISSING) if isinstance(item, Mapping) else None
        geo: Any = MISSING if point is MISSING else None
        if isinstance(point, Mapping):
            lat, lon = point.get("lat"), point.get("lon")
            if all(isinstance(v, int | float) and not isinstance(v, bool) for v in (lat, lon)):
                geo = {"lat": lat, "lon": lon}
        em.put(site, "geo", geo)


def _results(em: _Emitter, doc: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    has = doc.get("hasResults", MISSING)
    if has is not MISSING and not isinstance(has, bool):
        raise ParseError(f"hasResults: expected a boolean, got {_kind(has)}")
    em.put(out, "has_results", has, False)
    modules: Any = MISSING
    if "resultsSection" in doc:
        section = _obj(doc, "resultsSection", "document")
        modules = sorted(section) if section is not None else []
    em.put(out, "modules", modules, [])
    if "resultsSection" in doc or em.full:
        section = _obj(doc, "resultsSection", "document")
        out.update(results_content(section))
    if "annotationSection" in doc or em.full:
        out["unposted_events"] = unposted_events(_obj(doc, "annotationSection", "document"))
    return out


def _sharing(em: _Emitter, mod: Mapping[str, Any] | None, path: str) -> dict[str, Any]:
    """The individual participant data (IPD) sharing statement."""
    out: dict[str, Any] = {}
    em.put(out, "ipd_sharing", _str(mod, "ipdSharing", path))
    em.put(out, "ipd_description", _text(mod, "description", path))
    em.put(out, "ipd_info_types", _sorted(_str_list(mod, "infoTypes", path)), [])
    em.put(out, "ipd_time_frame", _text(mod, "timeFrame", path))
    em.put(out, "ipd_access_criteria", _text(mod, "accessCriteria", path))
    em.put(out, "ipd_url", _str(mod, "url", path))
    return out


# --------------------------------------------------------------------------- list pages


def iter_page_studies(doc: Any) -> Iterator[Mapping[str, Any]]:
    """The study documents of one ``/studies`` page ``{"studies": [...], "nextPageToken"?}``."""
    if not isinstance(doc, Mapping):
        raise ParseError(
            f"not a ClinicalTrials.gov study page: expected a JSON object, got {_kind(doc)}")
    if "studies" not in doc:
        raise ParseError("not a ClinicalTrials.gov study page: no studies list")
    studies = doc["studies"]
    if not isinstance(studies, list):
        raise ParseError(f"studies: expected an array, got {_kind(studies)}")
    for i, study in enumerate(studies):
        if not isinstance(study, Mapping):
            raise ParseError(f"studies[{i}]: expected a study object, got {_kind(study)}")
        yield study
