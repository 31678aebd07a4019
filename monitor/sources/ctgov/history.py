"""The website's version-history endpoints: every past registry version of one trial.

ClinicalTrials.gov keeps every version of every record (its "History of Changes" view), but
only behind two endpoints that are *not* part of the documented API v2 (base URL
``ctgov.history_url``, default ``https://clinicaltrials.gov/api/int``)::

    GET /studies/{NCT}/history            {"changes": [{"version": 0, "date": "2019-05-01",
                                                         "moduleLabels": [...], "status": ...}]}
    GET /studies/{NCT}/history/{version}  {"studyVersion": N, "study": {<API v2 study>}}

Nobody promised their shape, so everything that depends on it lives here and nothing is
trusted unchecked: a list without ``changes``, a version that is not a non-negative integer,
a date that is not ``YYYY-MM-DD`` or goes backwards, a ``studyVersion`` other than the one
asked for, a study of another trial... each raises ``BadHistoryResponse`` (a
``BadRegistryResponse``) whose one line names the NCT id, what was wrong and the URL.

Text fields there may come HTML-rendered (``<p>``, ``<br/>``, ``<ul><li>``, ``&amp;``,
``&#39;``) where API v2 gives markdown-ish plain text. ``normalize_study`` turns them into
what API v2 would give (paragraphs → blank line, ``<li>`` → ``* `` / ``1. `` lines, entities
unescaped, ``<``/``>`` escaped as API v2's markdown does, other tags dropped), and marks the
document as full, so a backfilled version and the same version fetched from API v2 parse
into the same canonical record (otherwise every backfill would end with a spurious change).

HTTP is ``RegistryClient``'s: ``HistoryClient`` subclasses it for its rate limiter, retries
with backoff and ``Retry-After``, timeouts and JSON checks, and only adds the two endpoints::

    with HistoryClient(history_url, requests_per_second=1.0) as client:
        for entry in client.history("NCT03934567"):
            version = client.study_version("NCT03934567", entry.version)
            record = parse_study(version.document)
"""

from __future__ import annotations

import copy
import html
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from html.parser import HTMLParser
from itertools import pairwise
from typing import Any

from trialwatch.monitor.sources.ctgov.client import (
    BadRegistryResponse,
    RegistryBlocked,
    RegistryClient,
    RegistryError,
    RegistryUnavailable,
    TrialNotFound,
)
from trialwatch.monitor.sources.ctgov.ratelimit import RateLimiter

__all__ = [
    "DEFAULT_HISTORY_URL",
    "BadHistoryResponse",
    "HistoricalStudy",
    "HistoryClient",
    "HistoryEntry",
    "html_to_text",
    "normalize_study",
]

DEFAULT_HISTORY_URL = "https://clinicaltrials.gov/api/int"
_NCT_ID_RE = re.compile(r"^NCT\d{8}$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class BadHistoryResponse(BadRegistryResponse):
    """A history endpoint answered something whose shape cannot be trusted."""


@dataclass(frozen=True)
class HistoryEntry:
    """One registry version as the history list describes it."""

    version: int
    date: date  # the day the version was posted
    module_labels: tuple[str, ...] = ()
    status: str | None = None

    @property
    def posted_at(self) -> datetime:
        """The posting date at midnight UTC (what a backfilled version is "fetched" at)."""
        return datetime(self.date.year, self.date.month, self.date.day, tzinfo=UTC)


@dataclass(frozen=True)
class HistoricalStudy:
    """One past version: the study as received, and normalized for ``parse_study``."""

    nct_id: str
    version: int
    url: str
    study: dict[str, Any]  # as the endpoint sent it (stored as the raw document)
    document: dict[str, Any]  # HTML text converted, marked full: ready for parse_study


class HistoryClient(RegistryClient):
    """Client for the two history endpoints, with ``RegistryClient``'s HTTP machinery.

    Takes ``RegistryClient``'s arguments (``requests_per_second``, ``timeout``,
    ``max_retries``, ``transport``, ``sleep``, ``clock``, ...); ``base_url`` is the history
    base (``.../api/int``). ``requests_made`` counts every HTTP request, retries included.
    Pass ``limiter`` (e.g. a ``RegistryClient``'s) to share one request budget with it.
    """

    def __init__(self, base_url: str = DEFAULT_HISTORY_URL, *,
                 limiter: RateLimiter | None = None, **options: Any) -> None:
        super().__init__(base_url, **options)
        if limiter is not None:
            self._limiter = limiter

    def __enter__(self) -> HistoryClient:
        return self

    def history(self, nct_id: str) -> list[HistoryEntry]:
        """The trial's registry versions, oldest first (checked: see the module docstring)."""
        url = f"{self.base_url}/studies/{_checked_id(nct_id)}/history"
        body = self._fetch(nct_id, "history", url)
        return _history_entries(nct_id, body, url)

    def study_version(self, nct_id: str, version: int) -> HistoricalStudy:
        """One past version of the trial, checked and normalized."""
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            raise ValueError(f"registry version must be a non-negative integer, got {version!r}")
        what = f"history version {version}"
        url = f"{self.base_url}/studies/{_checked_id(nct_id)}/history/{version}"
        body = self._fetch(nct_id, what, url)
        number = body.get("studyVersion")
        if isinstance(number, bool) or not isinstance(number, int):
            raise _bad(nct_id, what, f"'studyVersion' is {_kind(number)}, not an integer", url)
        if number != version:
            raise _bad(nct_id, what, f"'studyVersion' is {number}, expected {version}", url)
        study = body.get("study")
        if not isinstance(study, dict):
            raise _bad(nct_id, what, f"'study' is {_kind(study)}, not an object", url)
        protocol = study.get("protocolSection")
        ident = protocol.get("identificationModule") if isinstance(protocol, dict) else None
        found = ident.get("nctId") if isinstance(ident, dict) else None
        if not isinstance(found, str):
            raise _bad(nct_id, what, "the study has no protocolSection.identificationModule"
                       ".nctId", url)
        if found != nct_id:
            raise _bad(nct_id, what, f"the study is {found}, not {nct_id}", url)
        return HistoricalStudy(nct_id, version, url, study, normalize_study(study))

    def _fetch(self, nct_id: str, what: str, url: str) -> dict[str, Any]:
        """GET one JSON object; every failure re-raised with the NCT id and ``what`` in it."""
        try:
            response = self._send(url, {})
            if response.status_code == 404:
                raise TrialNotFound(nct_id, f"{nct_id}: {what}: not found (HTTP 404)", url=url)
            _url, body = self._parse_json(response)
            return body
        except TrialNotFound:
            raise
        except RegistryError as exc:
            raise _with_context(exc, nct_id, what) from exc


# --------------------------------------------------------------------------- shape checks


def _history_entries(nct_id: str, body: Mapping[str, Any], url: str) -> list[HistoryEntry]:
    changes = body.get("changes")
    if not isinstance(changes, list):
        raise _bad(nct_id, "history", f"'changes' is {_kind(changes)}, not a list", url)
    if not changes:
        raise _bad(nct_id, "history", "'changes' is empty: no registry versions", url)
    entries: list[HistoryEntry] = []
    for index, item in enumerate(changes):
        where = f"history: changes[{index}]"
        if not isinstance(item, dict):
            raise _bad(nct_id, where, f"is {_kind(item)}, not an object", url)
        version = item.get("version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            raise _bad(nct_id, where, f"'version' is {version!r}, not a non-negative integer",
                       url)
        posted = item.get("date")
        if not isinstance(posted, str) or not _DATE_RE.match(posted):
            raise _bad(nct_id, where, f"'date' is {posted!r}, not YYYY-MM-DD", url)
        try:
            day = date.fromisoformat(posted)
        except ValueError:
            raise _bad(nct_id, where, f"'date' {posted!r} is not a calendar date", url) from None
        labels = item.get("moduleLabels", [])
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise _bad(nct_id, where, "'moduleLabels' is not a list of strings", url)
        status = item.get("status")
        if status is not None and not isinstance(status, str):
            raise _bad(nct_id, where, f"'status' is {_kind(status)}, not a string", url)
        entries.append(HistoryEntry(version, day, tuple(labels), status))
    entries.sort(key=lambda e: e.version)
    for before, after in pairwise(entries):
        if before.version == after.version:
            raise _bad(nct_id, "history", f"version {after.version} is listed twice", url)
        if after.date < before.date:
            raise _bad(nct_id, "history", f"version {after.version} is dated {after.date}, "
                       f"before version {before.version} ({before.date})", url)
    return entries


def _checked_id(nct_id: str) -> str:
    if not _NCT_ID_RE.match(nct_id):
        raise ValueError(f"not an NCT id: {nct_id!r}")
    return nct_id


def _bad(nct_id: str, what: str, problem: str, url: str) -> BadHistoryResponse:
    return BadHistoryResponse(f"{nct_id}: {what}: {problem}", url=url)


def _with_context(exc: RegistryError, nct_id: str, what: str) -> RegistryError:
    reason = f"{nct_id}: {what}: {exc.reason}"
    if isinstance(exc, BadRegistryResponse):
        return BadHistoryResponse(reason, url=exc.url, status_code=exc.status_code)
    kind = RegistryBlocked if isinstance(exc, RegistryBlocked) else RegistryUnavailable
    return kind(reason, url=exc.url, status_code=exc.status_code)


def _kind(value: object) -> str:
    if value is None:
        return "missing or null"
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
             int: "an integer", float: "a number"}
    return names.get(type(value), type(value).__name__)


# --------------------------------------------------------------------------- HTML → API v2 text

# Only strings holding one of these tags (or an entity) are treated as HTML: plain API v2
# text such as "a<b and c>d" or "Age >= 18" is left alone.
_HTML_TAG_RE = re.compile(
    r"</?(?:p|br|ul|ol|li|b|strong|i|em|u|sup|sub|a|span|div|h[1-6]|table|thead|tbody|tr|td|"
    r"th|blockquote|pre|hr|dl|dt|dd)(?:\s+[\w-]+\s*=\s*(?:\"[^\"]*\"|'[^']*'))*\s*/?>",
    re.IGNORECASE,
)
_ENTITY_RE = re.compile(r"&(?:#\d{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
_BLOCK_TAGS = frozenset({
    "p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "table", "thead",
    "tbody", "tr", "dl", "dt", "dd", "hr", "section", "article", "header", "footer",
})
_INLINE_MARKS = {"b": "**", "strong": "**", "i": "*", "em": "*", "sup": "^", "sub": "~"}
_LINE_BREAK = "\x00"  # <br/>: survives the whitespace collapse, becomes "\n"
_LIST_INDENT = "    "


def normalize_study(study: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of a history study with every HTML-rendered string as API v2 plain text.

    A history version is a whole record, so it is marked full (``hasResults`` from whether
    it has a ``resultsSection``) when it carries neither ``derivedSection`` nor
    ``hasResults``: absent fields then mean "known empty", as in an API v2 document.
    """
    document: dict[str, Any] = _normalize_value(copy.deepcopy(dict(study)))
    if "derivedSection" not in document and "hasResults" not in document:
        document["hasResults"] = "resultsSection" in document
    return document


def _normalize_value(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _normalize_value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_normalize_value(item) for item in value]
    if isinstance(value, str):
        return html_to_text(value)
    return value


def html_to_text(value: str) -> str:
    """One text field as API v2 would give it; strings without HTML come back unchanged.

    ``<p>A</p><ul><li>B &amp; C</li></ul>`` → ``"A\\n\\n* B & C"``; ``<ol>`` items are
    numbered, nested lists indented by four spaces, ``<br/>`` is a line break, ``<b>``/``<i>``
    /``<sup>``/``<sub>`` become ``**``/``*``/``^``/``~`` marks, other tags are dropped, and
    whitespace runs collapse as a browser collapses them. A string with entities but no tags
    is only unescaped (its line breaks kept).
    """
    if _HTML_TAG_RE.search(value):
        parser = _TextRenderer()
        parser.feed(value)
        parser.close()
        return parser.text()
    if _ENTITY_RE.search(value):
        return _ENTITY_RE.sub(lambda m: _escape_markdown(html.unescape(m.group(0))), value)
    return value


def _escape_markdown(text: str) -> str:
    """API v2's markdown escapes angle brackets: ``Age >= 18`` is ``Age \\>= 18`` there."""
    return text.replace("<", "\\<").replace(">", "\\>")


class _TextRenderer(HTMLParser):
    """Renders an HTML fragment as API v2's markdown-ish text (see ``html_to_text``)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._blocks: list[tuple[str, str]] = []  # ("para" | "item", text)
        self._inline: list[str] = []
        self._lists: list[list[Any]] = []  # [tag, items so far]
        self._prefix: str | None = None  # the open <li>'s marker, until its text is out

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br":
            self._inline.append(_LINE_BREAK)
        elif tag in ("ul", "ol"):
            self._flush()
            self._lists.append([tag, 0])
        elif tag == "li":
            self._flush()
            if not self._lists:  # a stray <li>: treat it as a bullet of an implicit list
                self._lists.append(["ul", 0])
            current = self._lists[-1]
            current[1] += 1
            marker = f"{current[1]}. " if current[0] == "ol" else "* "
            self._prefix = _LIST_INDENT * (len(self._lists) - 1) + marker
        elif tag in _BLOCK_TAGS:
            self._flush()
        elif tag in _INLINE_MARKS:
            self._inline.append(_INLINE_MARKS[tag])

    def handle_endtag(self, tag: str) -> None:
        if tag == "li":
            self._flush()
            self._prefix = None
        elif tag in ("ul", "ol"):
            self._flush()
            if self._lists:
                self._lists.pop()
        elif tag in _BLOCK_TAGS:
            self._flush()
        elif tag in _INLINE_MARKS:
            self._inline.append(_INLINE_MARKS[tag])

    def handle_data(self, data: str) -> None:
        self._inline.append(_escape_markdown(data))

    def _flush(self) -> None:
        raw = "".join(self._inline)
        self._inline = []
        lines = [" ".join(part.split()) for part in raw.split(_LINE_BREAK)]
        text = "\n".join(lines).strip()
        if not text:
            return
        if self._prefix is not None:
            self._blocks.append(("item", self._prefix + text))
            self._prefix = None
        else:
            self._blocks.append(("item" if self._lists else "para", text))

    def text(self) -> str:
        self._flush()
        out: list[str] = []
        previous = None
        for kind, text in self._blocks:
            if out:
                out.append("\n" if kind == previous == "item" else "\n\n")
            out.append(text)
            previous = kind
        return "".join(out)
