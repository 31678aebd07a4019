"""Eligibility criteria text split into single criteria: inclusion, exclusion, other.

Pure functions. ``split_criteria`` is shared by the API v2 parser (``ctgov_json``) and the
rendered-page parser (``text_page``), so both give the same criteria for the same text;
``normalize_text`` is the line clean-up both apply first.
"""

from __future__ import annotations

import re
from operator import itemgetter

from trialwatch.monitor.record import collapse_whitespace

__all__ = ["normalize_text", "split_criteria"]


def normalize_text(value: str) -> str:
    """Line endings to ``\\n``, trailing whitespace stripped per line and overall."""
    lines = value.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join([line.rstrip() for line in lines]).strip()


_BULLET_RE = re.compile(
    r"^(?:[*\-•+▪◦‣·]\s+|\(?\d{1,3}[.)](?:\s+|(?=[A-Za-z]))|\(?(?:[A-Za-z]|[ivxIVX]{1,5})[.)]\s+)"
)
_HEADING_RE = re.compile(
    r"^(?:key\s+|main\s+|general\s+|additional\s+)?(inclusion|exclusion)\s+criteria\b(.*)$",
    re.IGNORECASE,
)
_OTHER_HEADING_RE = re.compile(
    r"^(?:#{1,6}\s+.*|\*\*[^*]+\*\*:?|(?:inclusion\s*(?:and|&|/)\s*exclusion|eligibility|selection|"
    r"enrollment|participant|patient|subject)\s+criteria\s*:?)$",
    re.IGNORECASE,
)
_MD_ESCAPE_RE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!<>=|~^])")


def _clean_heading(line: str) -> str:
    return line.strip().strip("*_#").strip().rstrip(":").strip().strip("*_").strip()


def _heading(stripped: str) -> tuple[str, str] | None:
    """``(kind, inline_rest)`` if the stripped, non-bullet line is an inclusion/exclusion/
    other heading."""
    match = _HEADING_RE.match(stripped.lstrip("*_# ").strip())
    if match:
        # not .lower(): IGNORECASE also matches a Turkish dotted capital I ("İnclusion"),
        # whose lower case is two characters
        kind = "exclusion" if match.group(1)[0] in "eE" else "inclusion"
        tail = match.group(2).strip().strip("*_").strip()
        if tail in ("", ":"):
            return kind, ""
        if tail.startswith(":"):
            return kind, tail[1:].strip().lstrip("*_").strip()
        if tail.endswith(":") and len(tail) <= 60:
            return kind, ""
        return None
    if len(stripped) <= 80 and _OTHER_HEADING_RE.match(stripped):
        return "other_criteria", ""
    return None


def _criterion_text(text: str) -> str:
    text = collapse_whitespace(text)
    # A callable, not r"\1": a template is expanded by Python code for every match.
    return _MD_ESCAPE_RE.sub(itemgetter(1), text) if "\\" in text else text


# One line of criteria text: (line, line.strip(), its bullet or number marker if any).
_Line = tuple[str, str, re.Match[str] | None]


def split_criteria(text: str) -> dict[str, list[dict[str, str]]]:
    """Split eligibility text into ``{"inclusion", "exclusion", "other_criteria"}`` lists.

    Sections start at "Inclusion Criteria:" / "Exclusion Criteria:" lines (any case, colon
    optional, markdown emphasis allowed); text before them or under other headings is
    ``other_criteria``. Each bullet or numbered line is one criterion (the marker stripped,
    whitespace collapsed, markdown backslash escapes removed); nested sub-bullets are
    criteria of their own; a line without a marker continues the criterion before it, except
    that in a section without any marker every line is a criterion, and an unindented line
    ending in ":" after a blank line starts a new one.
    """
    segments: list[tuple[str, list[_Line]]] = [("other_criteria", [])]
    for line in normalize_text(text).split("\n"):
        stripped = line.strip()
        bullet = _BULLET_RE.match(stripped)
        head = _heading(stripped) if stripped and bullet is None else None
        if head is None:
            segments[-1][1].append((line, stripped, bullet))
        else:
            kind, rest = head
            segments.append((kind, [(rest, rest, _BULLET_RE.match(rest))] if rest else []))
    result: dict[str, list[dict[str, str]]] = {
        "inclusion": [], "exclusion": [], "other_criteria": []}
    for kind, lines in segments:
        result[kind].extend([{"text": t} for t in _split_segment(lines)])
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
