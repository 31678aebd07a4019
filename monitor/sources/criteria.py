"""Eligibility criteria text split into single criteria: inclusion, exclusion, other.

Pure functions. ``split_criteria`` is shared by the API v2 parser (``ctgov_json``) and the
rendered-page parser (``text_page``), so both give the same criteria for the same text;
``normalize_text`` is the line clean-up both apply first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from operator import itemgetter

from trialwatch.monitor.record import collapse_whitespace

__all__ = ["Heading", "heading_of", "normalize_text", "split_criteria", "unescape_markdown"]


def normalize_text(value: str) -> str:
    """Line endings to ``\\n``, trailing whitespace stripped per line and overall."""
    lines = value.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join([line.rstrip() for line in lines]).strip()


_BULLET_RE = re.compile(
    r"^(?:[*\-•+▪◦‣·]\s+|\(?\d{1,3}[.)](?:\s+|(?=[A-Za-z]))|\(?(?:[A-Za-z]|[ivxIVX]{1,5})[.)]\s+)"
)
# Emphasis, heading marks and a glued dash ("-INCLUSION CRITERIA:") around a heading line.
_HEADING_MARKS = "*_#-–—•\\ "
# "... Inclusion Criteria ...", "Non-inclusion criteria", "EXCLUSION CRITIERIA" (sic).
_LIST_WORDS_RE = re.compile(
    r"\b(?:(?P<neg>non[-\s]?|no\s+)?(?P<kind>inclusion|exclusion)(?:ary)?\s*(?:/\s*(?:inclusion|"
    r"exclusion)\s+)?(?:criteri(?:a|on)|critieria)|criteria\s+(?:for|of)\s+(?P<neg2>non[-\s]?)?"
    r"(?P<kind2>inclusion|exclusion))\b", re.IGNORECASE)
# "Stratum 2", "Cohort A", "Part B": after a heading's colon, a group name, not a criterion.
_GROUP_NAME_RE = re.compile(
    r"^(?:stratum|strata|cohorts?|parts?|arms?|groups?|modules?|phases?|stages?|sub-?stud(?:y|ies)"
    r")\b[\w\s\-,&/]{0,30}:?$", re.IGNORECASE)
# Every heading has one of these near its start (a list word, or _OTHER_HEADING_RE's markup).
_HEADING_WORDS = ("criteri", "critie", "inclusion", "exclusion", "eligib", "#", "**")
_PARENTHESES_RE = re.compile(r"\([^()]*\)")
_BOTH_RE = re.compile(r"\binclusion\s*(?:and|&|/|or)\s*exclusion\b", re.IGNORECASE)
# Words that make a line a sentence (a criterion or a lead-in), never a heading.
_SENTENCE_WORDS = frozenset([
    "must", "meet", "met", "meets", "may", "apply", "applies", "applied", "are", "is", "be",
    "been", "being", "will", "were", "was", "following", "below", "above", "any", "these",
    "this", "those", "not", "do", "does", "did", "fulfil", "fulfill", "fulfilling",
    "fulfilled", "satisfy", "satisfies", "conform", "include", "includes", "included",
    "including", "considered", "available", "have", "has", "had", "should", "can", "cannot",
    "could", "would", "shall", "per", "see", "according", "defined", "than", "who", "which",
    "that", "if", "unless", "also", "other", "others",
])
# A sub-heading that names no list: "Cohort One Criteria:", "Lung criteria:", "Criteria for
# treatment:", "Cancer-Specific Exclusions:", "Treatment eligibility".
_SUBHEADING_RE = re.compile(
    r"^(?:(?:[\w\-/()&,+'\"]+\s+){0,5}(?:criteria|exclusions|eligibility)(?:\s*\([^()]{1,60}\))?|"
    r"criteria\s+(?:for|related\s+to)\s+[^:]{1,50})\s*:?$",
    re.IGNORECASE,
)
_OTHER_HEADING_RE = re.compile(
    r"^(?:#{1,6}\s+.*|\*\*[^*]+\*\*:?|(?:inclusion\s*(?:and|&|/)\s*exclusion|eligibility|selection|"
    r"enrollment|participant|patient|subject)\s+criteria\s*:?)$",
    re.IGNORECASE,
)
# Bare list headings, which give the criteria under them no context of their own.
_BARE_HEADING_RE = re.compile(
    r"^(?:key|main|general|principal|major|the|subjects?|patients?|participants?|study)?\s*"
    r"(?:inclusion|exclusion|non[-\s]?inclusion)"
    r"(?:ary)?\s+(?:criteria|criterion|critieria)$", re.IGNORECASE)
# A heading glued to the end of the criterion before it on one line: "... 150 kg Exclusion
# Criteria", "... organ transplant Additional Exclusion Criteria For Sub-Study 2 Part B".
_GLUED_RE = re.compile(
    r"^(?P<criterion>.*?\S)(?:\.\s+|\s+)(?P<heading>(?:[A-Z0-9][\w\-/]*\s+){0,4}"
    r"(?:Inclusion|Exclusion|INCLUSION|EXCLUSION|inclusion|exclusion)\s+"
    r"(?:Criteria|CRITERIA|criteria)\b[^.:;]{0,60}(?::[^.:;]{0,60})?[.:]?)$")
# Last words of a sentence that goes on into "... inclusion criteria": not a glued heading.
_RUNS_ON = frozenset([
    "the", "of", "with", "to", "by", "and", "or", "all", "for", "on", "in", "as", "an", "a",
    "into", "above", "below", "following", "these", "any", "other", "per", "meet", "met",
    "meets", "satisfy", "fulfil", "fulfill", "fulfilling", "according", "defined", "protocol",
    "no", "not", "specific", "additional", "study", "key", "main", "general",
])
_MD_ESCAPE_RE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!<>=|~^&])")


def unescape_markdown(text: str) -> str:
    r"""API v2 text with its markdown backslash escapes undone: ``\&`` → ``&``, ``\<`` →
    ``<``, ``\*`` → ``*``, ``\[`` → ``[``, ``\_`` → ``_`` (and the other markdown escapes).
    Both parsers apply it to every text field, so the page and the JSON stay identical."""
    # A callable, not r"\1": a template is expanded by Python code for every match.
    return _MD_ESCAPE_RE.sub(itemgetter(1), text) if "\\" in text else text


@dataclass(frozen=True)
class Heading:
    """A heading line: the list it opens (``None``: the current list goes on), the context
    it gives the criteria under it (``None`` for a bare "Inclusion Criteria:") and the text
    after its colon, when a criterion follows on the same line."""

    kind: str | None
    context: str | None
    rest: str = ""


def _heading_text(line: str) -> str:
    """The line without bullet, emphasis, markdown escapes and outer punctuation."""
    text = unescape_markdown(line.strip())
    bullet = _BULLET_RE.match(text)
    if bullet and not text[:1].isdigit() and text[:2].lower() not in ("i.", "v."):
        text = text[bullet.end():]
    return text.strip(_HEADING_MARKS).strip()


def _word_count(text: str) -> int:
    """Words of a heading's prefix, not counting "and" / "or" nor one-letter names ("Part A")."""
    words = _PARENTHESES_RE.sub("", text).split()
    return sum(1 for w in words if len(w) > 1 and w.casefold() not in ("and", "or"))


def _is_sentence(words: str) -> bool:
    return any(w in _SENTENCE_WORDS for w in re.findall(r"[a-z]+", words.casefold()))


def heading_of(line: str) -> Heading | None:
    """The heading a criteria line is, if it is one (see ``split_criteria``)."""
    start = line[:160].lower()  # most lines hold no word a heading needs: done at C speed
    if not any(word in start for word in _HEADING_WORDS):
        return None
    text = _heading_text(line)
    if not text:
        return None
    if len(text) <= 80 and _OTHER_HEADING_RE.match(line.strip()) and not _LIST_WORDS_RE.search(
            text.replace("inclusion/exclusion", "")):
        return Heading("other_criteria", None)
    match = _LIST_WORDS_RE.search(text, 0, 100)
    if match is None:
        return _subheading(text)
    before, after = text[:match.start()], text[match.end():]
    rest = ""
    head, colon, tail = after.partition(":")
    if colon and tail.strip(" *_:"):
        after, rest = head, tail.strip().lstrip("*_ ").strip()
        if (rest.endswith(":") and len(rest) <= 60 and not _is_sentence(rest)) \
                or _GROUP_NAME_RE.match(rest):
            after, rest = f"{head}: {rest}", ""  # "INCLUSION CRITERIA: Stratum 1"
    if after.lstrip()[:1] in (",", ";") or _word_count(before) > 5 \
            or _is_sentence(
            _PARENTHESES_RE.sub("", before + " " + after)) \
            or len(after.strip(" :.-")) > 80 or (after.endswith(".") and len(before.split()) > 2):
        return None
    name = " ".join((before + match.group(0) + after).split()).rstrip(" :.-").strip()
    written = match.group("kind") or match.group("kind2")
    if match.group("neg") or match.group("neg2"):
        kind = "exclusion"  # "Non-inclusion criteria", "No inclusion / Exclusion Criteria"
    elif _BOTH_RE.search(name):
        kind = "other_criteria"
    else:
        kind = "exclusion" if written[0] in "eE" else "inclusion"
    context = None if _BARE_HEADING_RE.match(name) else name
    return Heading(kind, context, rest)


def _subheading(text: str) -> Heading | None:
    """A cohort/module/group sub-heading that names no list: it keeps the list, sets a context."""
    if len(text) > 70 or not _SUBHEADING_RE.match(text) or _is_sentence(text):
        return None
    if text.endswith(".") or (len(text.split()) < 2 and not text.endswith(":")):
        return None
    return Heading(None, " ".join(text.split()).rstrip(" :").strip())


def _unglued(stripped: str) -> list[str]:
    """A criterion with a heading glued to its end, as two lines (else the line itself)."""
    if "riteria" not in stripped and "RITERIA" not in stripped:
        return [stripped]
    match = _GLUED_RE.match(stripped)
    if match is None or heading_of(stripped) is not None:
        return [stripped]
    criterion = match.group("criterion")
    last = criterion.rsplit(None, 1)[-1].casefold().strip(",;")
    if last in _RUNS_ON:
        return [stripped]
    head = heading_of(match.group("heading"))
    if head is None or head.kind is None or len(criterion.split()) < 2:
        return [stripped]
    return [criterion, match.group("heading")]


def _criterion_text(text: str) -> str:
    return unescape_markdown(collapse_whitespace(text))


# One line of criteria text: (line, line.strip(), its bullet or number marker if any).
_Line = tuple[str, str, re.Match[str] | None]


def split_criteria(text: str) -> dict[str, list[dict[str, str]]]:
    """Split eligibility text into ``{"inclusion", "exclusion", "other_criteria"}`` lists.

    Lists start at their headings as registries write them: "Inclusion Criteria:", bulleted
    ("* Key Inclusion Criteria:"), dashed ("-INCLUSION CRITERIA:"), prefixed or qualified
    ("Phase 1 Key Exclusion Criteria:", "SUBJECT INCLUSION CRITERIA:", "Inclusion Criteria
    for Part C", "Non-inclusion criteria"), any case, colon optional, markdown emphasis
    allowed, even glued to the end of the criterion before them. Text before them or under
    other headings is ``other_criteria``. A heading is never a criterion: a qualified one
    and a sub-heading naming no list ("Cohort One Criteria:", "Lung criteria:") become the
    ``context`` of the criteria under it. Each bullet or numbered line is one criterion
    (the marker stripped, whitespace collapsed, markdown backslash escapes removed); nested
    sub-bullets are criteria of their own; a line without a marker continues the criterion
    before it, except that in a section without any marker every line is a criterion, and
    an unindented line ending in ":" after a blank line starts a new one.
    """
    # (list, context of its list heading, context of these lines, the lines)
    segments: list[tuple[str, str | None, str | None, list[_Line]]] = [
        ("other_criteria", None, None, [])]
    for raw in normalize_text(text).split("\n"):
        for line in _unglued(raw) if raw else [raw]:
            stripped = line.strip()
            head = heading_of(stripped) if stripped else None
            if head is None:
                segments[-1][3].append((line, stripped, _BULLET_RE.match(stripped)))
            elif head.kind is None:  # a sub-heading: the same list, a narrower context
                kind, outer = segments[-1][0], segments[-1][1]
                context = f"{outer} › {head.context}" if outer else head.context
                segments.append((kind, outer, context, []))
            else:
                rest = head.rest
                segments.append((head.kind, head.context, head.context,
                                 [(rest, rest, _BULLET_RE.match(rest))] if rest else []))
    result: dict[str, list[dict[str, str]]] = {
        "inclusion": [], "exclusion": [], "other_criteria": []}
    for kind, _outer, context, lines in segments:
        texts = _split_segment(lines)
        if context is None:
            result[kind].extend([{"text": t} for t in texts])
        else:
            result[kind].extend([{"text": t, "context": context} for t in texts])
    return result


def _split_segment(lines: list[_Line]) -> list[str]:
    has_bullets = any(bullet for _, _, bullet in lines)
    items: list[str] = []
    current: list[str] | None = None
    previous_blank = True
    for line, stripped, bullet in lines:
        if not stripped:
            previous_blank = True
            continue
        starts_new = (
            bullet is not None
            or not has_bullets
            or current is None
            or (previous_blank and line == stripped and stripped.endswith(":"))
        )
        body = stripped[bullet.end():] if bullet else stripped
        if starts_new:
            if current:
                items.append(" ".join(current))
            current = [body]
        else:
            assert current is not None
            current.append(body)
        previous_blank = False
    if current:
        items.append(" ".join(current))
    return [t for t in map(_criterion_text, items) if t]
