"""Turn a rendered trial page (the text format of ``seeds/NCT07328581.txt``) into a record.

Pure function, no I/O. The page is a sequence of heading lines, each followed by its
content. *Group* headings ("Brief Summary", "Study Design", "Sponsors", ...) are followed by
an explanatory sentence addressed to the reader ("Review the sponsor-provided synopsis...");
that sentence is dropped by a structural rule: the first paragraph after a group heading is
boilerplate when it is one sentence starting with an imperative verb, or, in sections whose
content is data rather than prose, any one-line sentence of six or more words.

The page shows less than the API document: no date or enrollment types, no emails unless
shown, no site list. Only what the page shows is emitted; everything else stays unknown, so
the page's record is a subset of the API record of the same version. "More Related Trials"
and everything after it belongs to other trials and is ignored.
"""

from __future__ import annotations

import re
from typing import Any

from trialwatch.monitor.record import ParseError, TrialRecord, is_valid_nct_id
from trialwatch.monitor.sources.criteria import normalize_text, split_criteria, unescape_markdown

__all__ = ["parse_text_page", "split_conditions"]

# Group headings: value is True when the section holds prose (boilerplate rule is stricter).
_GROUPS: dict[str, bool] = {
    "basic information": False, "key dates": False, "study results": True,
    "brief summary": True, "detailed description": True, "conditions": False,
    "study design": False, "study groups": True, "interventions": True,
    "eligibility criteria": True, "sponsors": False, "responsible party": False,
    "central contacts": False, "contacts": False, "locations": False,
    "other identifiers": False, "more related trials": False,
}
# Field headings -> (section, field); the value follows (next paragraph or same line).
_FIELDS: dict[str, tuple[str, str]] = {
    "official title": ("identification", "official_title"),
    "acronym": ("identification", "acronym"),
    "recruitment status": ("status", "overall_status"),
    "why stopped": ("status", "why_stopped"),
    "clinical phase": ("design", "phases"),
    "total enrollment": ("design", "enrollment"),
    "study classification": ("design", "study_type"),
    "study start date": ("dates", "start"),
    "primary completion date": ("dates", "primary_completion"),
    "study completion date": ("dates", "completion"),
    "first posted": ("dates", "first_posted"),
    "study first posted": ("dates", "first_posted"),
    "results first posted": ("dates", "results_first_posted"),
    "last update posted": ("dates", "last_update_posted"),
    "allocation method": ("design", "allocation"),
    "intervention model": ("design", "intervention_model"),
    "primary study purpose": ("design", "primary_purpose"),
    "blinding strategy": ("design", "masking"),
    "observational model": ("design", "observational_model"),
    "time perspective": ("design", "time_perspective"),
    "minimum eligible age": ("eligibility", "minimum_age"),
    "maximum eligible age": ("eligibility", "maximum_age"),
    "eligible sex": ("eligibility", "sex"),
    "accepts healthy volunteers": ("eligibility", "healthy_volunteers"),
}
_FIELD_INLINE_RE = re.compile(
    r"^(" + "|".join(sorted((re.escape(k) for k in _FIELDS), key=len, reverse=True))
    + r")(?:\s*:)?\s+(\S.{0,59})$",  # not "\s*:?\s+": quadratic on long blank runs
    re.IGNORECASE,
)
# Sections of free text, where "Time Perspective of ..." is text, not an inline field heading.
_FREE_TEXT = frozenset({"brief summary", "detailed description", "study groups", "interventions"})
_NCT_LINE_RE = re.compile(r"^NCT ID\s*:\s*(\S*)\s*$", re.IGNORECASE)
_UPDATED_RE = re.compile(r"^Last Updated\s*:\s*(.*\S)$", re.IGNORECASE)
_EXPLAINER_VERB_RE = re.compile(
    r"^(?:Get|Review|Dive|See|Understand|Learn|Check|Meet|Identify|Reach|Explore|Find|"
    r"Discover|Browse|View|Read|Track|Compare|Additional)\b"
)
_TYPE_SUFFIX_RE = re.compile(r"\(?\b(actual|estimated|anticipated)\b\)?$", re.IGNORECASE)
_MONTHS = {m: i for i, m in enumerate(
    ["january", "february", "march", "april", "may", "june", "july", "august", "september",
     "october", "november", "december"], start=1)}
MAX_PHONE_LENGTH = 40  # also keeps _PHONE_RE's backtracking bounded
_PHONE_RE = re.compile(r"^\+?[\d\s().\-/]{6,}(?:\s*(?:x|ext\.?)\s*\d+)?$", re.IGNORECASE)
_ENUM_WORDS_RE = re.compile(r"[^A-Za-z0-9]+")

Blocks = list[tuple[str, list[str]]]


def parse_text_page(text: str) -> TrialRecord:
    """Parse a rendered trial page; ``ParseError`` when it has no well-formed "NCT ID:" line."""
    lines = normalize_text(text).split("\n")
    title, nct_id, updated, blocks = _scan(lines)
    if nct_id is None:
        raise ParseError('text page has no "NCT ID: NCT........" line')
    if not is_valid_nct_id(nct_id):
        raise ParseError(f"invalid NCT ID {nct_id!r} (expected NCT followed by 8 digits)")
    sections: dict[str, dict[str, Any]] = {}

    def put(section: str, field: str, value: Any) -> None:
        if section != "eligibility" or field not in _CRITERIA_LISTS:  # those are done already
            value = _unescaped(value)
        sections.setdefault(section, {})[field] = value

    if title:
        put("identification", "brief_title", title)
    if updated:
        put("dates", "last_update_posted", _date(updated))
    for heading, body in blocks:
        if heading in _FIELDS:
            value = _field_value(heading, _paragraphs(body))
            if value is not None:
                put(*_FIELDS[heading], value)
            continue
        handler = _HANDLERS.get(heading)
        if handler is not None:
            for section, field, value in handler(_drop_explainer(heading, body)):
                put(section, field, value)
    return TrialRecord.build(nct_id, sections)


_CRITERIA_LISTS = frozenset({"inclusion", "exclusion", "other_criteria"})


def _unescaped(value: Any) -> Any:
    """Markdown escapes undone in every text of a value, as the API v2 parser does."""
    if isinstance(value, str):
        return unescape_markdown(value)
    if isinstance(value, list):
        return [_unescaped(v) for v in value]
    if isinstance(value, dict):
        return {k: _unescaped(v) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------- scanning


def _heading_of(line: str, inline: bool) -> tuple[str, str | None] | None:
    """``(heading, inline_value)`` when ``line`` is a known heading.

    With ``inline``, "Accepts Healthy Volunteers No" is a field heading with its value; inside
    prose sections only a heading alone on its line counts.
    """
    key = line.strip().rstrip(":").strip().casefold()
    if key in _GROUPS or key in _FIELDS:
        return key, None
    match = _FIELD_INLINE_RE.match(line.strip()) if inline else None
    if match:
        return match.group(1).casefold(), match.group(2).strip()
    return None


def _scan(lines: list[str]) -> tuple[str | None, str | None, str | None, Blocks]:
    title: str | None = None
    nct_id: str | None = None
    updated: str | None = None
    blocks: Blocks = []
    prose = False
    first = next((i for i, line in enumerate(lines) if line.strip()), -1)
    for index, line in enumerate(lines):
        stripped = line.strip()
        if not stripped:
            if blocks:
                blocks[-1][1].append("")
            continue
        nct = _NCT_LINE_RE.match(stripped)
        if nct:
            if nct_id is not None and nct.group(1) != nct_id:
                raise ParseError(f"text page has two NCT IDs: {nct_id} and {nct.group(1)}")
            nct_id = nct.group(1)
            continue
        last_updated = _UPDATED_RE.match(stripped)
        if last_updated:
            updated = last_updated.group(1)
            continue
        head = _heading_of(stripped, inline=not prose)
        if head is not None:
            if head[0] == "more related trials":
                break
            blocks.append((head[0], [head[1]] if head[1] else []))
            prose = head[0] in _FREE_TEXT
        elif index == first:
            title = stripped
        elif blocks:
            blocks[-1][1].append(stripped)
    return title, nct_id, updated, blocks


def _paragraphs(body: list[str]) -> list[list[str]]:
    paragraphs: list[list[str]] = [[]]
    for line in body:
        if line:
            paragraphs[-1].append(line)
        elif paragraphs[-1]:
            paragraphs.append([])
    return [p for p in paragraphs if p]


def _drop_explainer(heading: str, body: list[str]) -> list[str]:
    """The body without the explanatory sentence that follows a group heading."""
    if heading == "study results":
        return body
    paragraphs = _paragraphs(body)
    if not paragraphs or len(paragraphs[0]) != 1:
        return body
    sentence = paragraphs[0][0]
    explainer = sentence.endswith(".") and (
        bool(_EXPLAINER_VERB_RE.match(sentence))
        or (not _GROUPS.get(heading, True) and len(sentence.split()) >= 6)
    )
    if not explainer:
        return body
    start = body.index(sentence)
    return body[start + 1:]


# --------------------------------------------------------------------------- values


def _enum(value: str) -> str:
    """Display text to the API's enum spelling: "Not yet recruiting" -> "NOT_YET_RECRUITING"."""
    if value.upper() in ("N/A", "NA", "NOT APPLICABLE"):
        return "NA"
    return _ENUM_WORDS_RE.sub("_", value.strip()).strip("_").upper()


def _iso(value: str) -> str:
    """"2026-01-31" / "2026-01" as given; "January 31, 2026" / "January 2026" -> ISO."""
    match = re.match(r"^([A-Za-z]+)\s+(?:(\d{1,2}),?\s+)?(\d{4})$", value)
    if match and match.group(1).casefold() in _MONTHS:
        month = _MONTHS[match.group(1).casefold()]
        day = f"-{int(match.group(2)):02d}" if match.group(2) else ""
        return f"{match.group(3)}-{month:02d}{day}"
    return value


def _date(value: str) -> dict[str, str]:
    """A date as shown; a shown "(Actual)" / "(Estimated)" becomes its type."""
    value = value.strip()
    match = _TYPE_SUFFIX_RE.search(value)  # a search: "^(.*?)\s*..." is quadratic on blanks
    shown = value[:match.start()].rstrip() if match else ""
    if match and shown:
        kind = match.group(1).upper()
        return {"date": _iso(shown), "type": "ESTIMATED" if kind != "ACTUAL" else kind}
    return {"date": _iso(value.strip())}


def _field_value(heading: str, paragraphs: list[list[str]]) -> Any:
    if not paragraphs:
        return None
    value = " ".join(" ".join(p) for p in paragraphs[:1]).strip()
    section, field = _FIELDS[heading]
    if section == "dates":
        return _date(value)
    if field == "phases":
        if _enum(value) == "NA":
            return ["NA"]
        return sorted(_enum(p).replace("PHASE_", "PHASE") for p in re.split(r"[/,]", value)
                      if p.strip())
    if field == "enrollment":
        match = re.match(r"^(\d[\d,]*)\b(.*)$", value)
        digits = match.group(1).replace(",", "") if match else ""
        if not match or len(digits) > 12:  # not a participant count (nor a 64-bit integer)
            return None
        enrollment: dict[str, Any] = {"count": int(digits)}
        kind = re.search(r"\b(actual|estimated|anticipated)\b", match.group(2), re.IGNORECASE)
        if kind:
            enrollment["type"] = "ACTUAL" if kind.group(1).lower() == "actual" else "ESTIMATED"
        return enrollment
    if field == "healthy_volunteers":
        answer = value.casefold()
        return {"yes": True, "true": True, "no": False, "false": False}.get(answer)
    if field in ("minimum_age", "maximum_age", "official_title", "acronym", "why_stopped"):
        return value
    return _enum(value)


# --------------------------------------------------------------------------- group sections

Emitted = list[tuple[str, str, Any]]


def _prose(section: str, field: str) -> Any:
    def handler(body: list[str]) -> Emitted:
        text = "\n\n".join(" ".join(p) for p in _paragraphs(body))
        return [(section, field, text)] if text else []
    return handler


def split_conditions(line: str) -> list[str]:
    """Split conditions the page joins with spaces.

    Heuristic: a condition ends at a ")" that is followed by a space and a capital letter
    ("Systemic Lupus Erythematosus (SLE) Lupus Nephritis (LN)" -> two conditions).
    Conditions without a parenthesised abbreviation cannot be told apart and stay joined.
    """
    return [part.strip() for part in re.split(r"(?<=\))\s+(?=[A-Z])", line) if part.strip()]


def _conditions(body: list[str]) -> Emitted:
    found = [c for line in body if line for c in split_conditions(line)]
    return [("conditions", "conditions", sorted(found))] if found else []


def _study_results(body: list[str]) -> Emitted:
    paragraphs = _paragraphs(body)
    if not paragraphs:
        return []
    status = " ".join(paragraphs[0]).casefold()
    if "pending" in status or "no results" in status or "not " in status:
        return [("results", "has_results", False)]
    if "posted" in status or "available" in status:
        return [("results", "has_results", True)]
    return []


def _label_value(line: str, label: str) -> str | None:
    match = re.match(rf"^{label}\b\s*:?\s*(.*)$", line, re.IGNORECASE)
    return match.group(1).strip() if match else None


def _study_groups(body: list[str]) -> Emitted:
    """Arm blocks: label, [subtitle], "Group Type X", description, ("Intervention Type X", name)*.

    The line(s) between the label and "Group Type" (e.g. "Biologic drug infusion") have no
    counterpart in the API document and are ignored. A following arm starts after the last
    intervention name; without interventions, its header is assumed as long as the first arm's.
    """
    lines = [line for line in body if line]
    group_rows = [i for i, line in enumerate(lines) if _label_value(line, "Group Type")]
    if not group_rows:
        return []
    header_len = group_rows[0]
    arms: list[dict[str, Any]] = []
    start = 0
    for n, row in enumerate(group_rows):
        header = lines[start:row]
        end = group_rows[n + 1] if n + 1 < len(group_rows) else len(lines)
        rest = lines[row + 1:end]
        type_rows = [i for i, line in enumerate(rest) if _label_value(line, "Intervention Type")]
        last_arm = n + 1 == len(group_rows)
        if type_rows:
            description = rest[:type_rows[0]]
            names = [rest[i + 1] for i in type_rows if i + 1 < len(rest)]
            start = row + 1 + type_rows[-1] + 2
        else:
            cut = len(rest) if last_arm else max(len(rest) - max(header_len, 1), 0)
            description = rest[:cut]
            names = []
            start = row + 1 + cut
        if not header:
            continue
        arm: dict[str, Any] = {"label": header[0],
                               "type": _enum(_label_value(lines[row], "Group Type") or "")}
        if description:
            arm["description"] = " ".join(description)
        arm["interventions"] = sorted(names)
        arms.append(arm)
    return [("arms", "arm_groups", arms)]


def _interventions(body: list[str]) -> Emitted:
    """Intervention blocks: description line(s), name, "Intervention Type X"."""
    lines = [line for line in body if line]
    found: list[dict[str, Any]] = []
    start = 0
    for i, line in enumerate(lines):
        kind = _label_value(line, "Intervention Type")
        if kind is None:
            continue
        block = lines[start:i]
        start = i + 1
        if not block:
            continue
        entry: dict[str, Any] = {"type": _enum(kind), "name": block[-1]}
        if block[:-1]:
            entry["description"] = " ".join(block[:-1])
        found.append(entry)
    return [("arms", "interventions", found)] if found else []


def _eligibility(body: list[str]) -> Emitted:
    text = "\n".join(body).strip()
    if not text:
        return []
    return [("eligibility", key, value) for key, value in split_criteria(text).items()]


def _sponsors(body: list[str]) -> Emitted:
    """Sponsor blocks: name, [class], "Sponsor Role lead|collaborator"."""
    lines = [line for line in body if line]
    out: Emitted = []
    collaborators: list[str] = []
    start = 0
    for i, line in enumerate(lines):
        role = _label_value(line, "Sponsor Role")
        if role is None:
            continue
        block, start = lines[start:i], i + 1
        if not block:
            continue
        if role.casefold() == "lead":
            out.append(("sponsor", "lead_sponsor", block[0]))
            classes = [b for b in block[1:] if re.fullmatch(r"[A-Z][A-Z_]*", b)]
            if classes:
                out.append(("sponsor", "lead_sponsor_class", classes[0]))
        else:
            collaborators.append(block[0])
    if out or collaborators:
        out.append(("sponsor", "collaborators", sorted(collaborators)))
    return out


def _responsible_party(body: list[str]) -> Emitted:
    for line in body:
        role = _label_value(line, "Responsibility Role")
        if role:
            return [("sponsor", "responsible_party", {"type": _enum(role)})]
    return []


def _contacts(body: list[str]) -> Emitted:
    """Contact blocks: name, "Role: X", then phone / email lines."""
    lines = [line for line in body if line]
    role_rows = [i for i, line in enumerate(lines) if re.match(r"^Role\s*:", line)]
    contacts: list[dict[str, Any]] = []
    for n, row in enumerate(role_rows):
        if row == 0:
            continue
        contact: dict[str, Any] = {"name": lines[row - 1],
                                   "role": _enum(_label_value(lines[row], "Role") or "")}
        end = role_rows[n + 1] - 1 if n + 1 < len(role_rows) else len(lines)
        for detail in lines[row + 1:end]:
            if "@" in detail and " " not in detail.strip():
                contact["email"] = detail.strip()
            elif len(detail) <= MAX_PHONE_LENGTH and _PHONE_RE.match(detail):
                contact["phone"] = detail.strip()
        contacts.append(contact)
    return [("contacts", "central_contacts", contacts)] if contacts else []


def _identifiers(body: list[str]) -> Emitted:
    """Identifier blocks: id, "Identifier Type: X", "Identifier Source: org_study_id|...";"""
    lines = [line for line in body if line]
    items: list[dict[str, str | None]] = []
    for line in lines:
        kind = _label_value(line, "Identifier Type")
        source = _label_value(line, "Identifier Source")
        if kind is not None and items:
            items[-1]["type"] = None if kind in ("", "-") else kind
        elif source is not None and items:
            items[-1]["source"] = source
        elif kind is None and source is None:
            items.append({"id": line})
    out: Emitted = []
    secondary = []
    for item in items:
        if (item.get("source") or "").casefold().replace(" ", "_") in ("org_study_id",
                                                                        "organization_study_id"):
            out.append(("identification", "org_study_id", item["id"]))
        else:
            secondary.append({k: v for k, v in item.items() if k in ("id", "type")})
    if items:
        out.append(("identification", "secondary_ids", secondary))
    return out


_HANDLERS: dict[str, Any] = {
    "brief summary": _prose("description", "brief_summary"),
    "detailed description": _prose("description", "detailed_description"),
    "conditions": _conditions,
    "study results": _study_results,
    "study groups": _study_groups,
    "interventions": _interventions,
    "eligibility criteria": _eligibility,
    "sponsors": _sponsors,
    "responsible party": _responsible_party,
    "central contacts": _contacts,
    "contacts": _contacts,
    "other identifiers": _identifiers,
    # "basic information", "study design" and "key dates" only hold field headings;
    # "locations" is recognised so its lines are not taken for another section, but the
    # page layout of sites is not known, so sites stay unknown.
}
