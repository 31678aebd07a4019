"""The canonical trial record: one registry version, normalized, whatever source it came from.

A ``TrialRecord`` holds an NCT ID and a fixed set of *sections* (see ``SECTIONS``). Each
section is a dict of the fields the source carried. The rule that makes different sources
comparable is about *absence*:

* a key that is **missing** means *unknown* (the source did not carry it): it never counts
  as a change;
* a key whose value is ``None`` / ``[]`` means *known to be empty* (a full API v2 document
  without ``whyStopped`` says the trial has no stop reason).

The same rule applies inside nested values: a date is ``{"date": "2026-01-31", "type":
"ESTIMATED"}`` and a text page that shows no date type gives ``{"date": "2026-01-31"}``.

Lists whose order carries no meaning are stored sorted (phases, conditions); lists of
things with an identity (sites, outcomes, criteria, arms) are lists of dicts and the diff
compares them by the identity key in ``LIST_IDENTITY``.

Canonical JSON is key-sorted and compact; its SHA-256 is the content hash. Each section is
also hashed on its own so the diff can skip sections that did not move.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from operator import itemgetter
from typing import Any

import orjson

NCT_ID_RE = re.compile(r"^NCT\d{8}$")

# Section name -> the fields it may hold. Parsers emit only these keys.
SECTIONS: dict[str, tuple[str, ...]] = {
    "identification": (
        "brief_title", "official_title", "acronym", "organization",
        "org_study_id", "secondary_ids",
    ),
    "status": ("overall_status", "why_stopped", "last_known_status", "status_verified_date",
               "expanded_access"),
    "dates": (
        "start", "primary_completion", "completion", "first_posted",
        "results_first_posted", "last_update_posted", "last_update_submitted",
    ),
    "sponsor": ("lead_sponsor", "lead_sponsor_class", "collaborators", "responsible_party"),
    "description": ("brief_summary", "detailed_description"),
    "conditions": ("conditions", "keywords"),
    "design": (
        "study_type", "phases", "allocation", "intervention_model", "primary_purpose",
        "masking", "observational_model", "time_perspective", "enrollment",
    ),
    "arms": ("arm_groups", "interventions"),
    "outcomes": ("primary", "secondary", "other"),
    "eligibility": (
        "inclusion", "exclusion", "other_criteria", "sex", "minimum_age", "maximum_age",
        "healthy_volunteers", "std_ages",
    ),
    "contacts": ("central_contacts", "overall_officials"),
    "locations": ("sites",),
    "references": ("references",),
    "results": ("has_results", "modules", "unposted_events", "participant_flow", "baseline",
                "outcome_measures", "adverse_events"),
    "sharing": ("ipd_sharing", "ipd_description", "ipd_info_types", "ipd_time_frame",
                "ipd_access_criteria", "ipd_url"),
}

# (section, field) -> how items of a list of dicts are identified across versions.
LIST_IDENTITY: dict[tuple[str, str], tuple[str, ...]] = {
    ("identification", "secondary_ids"): ("id", "domain"),
    ("arms", "arm_groups"): ("label",),
    ("arms", "interventions"): ("type", "name"),
    ("outcomes", "primary"): ("measure",),
    ("outcomes", "secondary"): ("measure",),
    ("outcomes", "other"): ("measure",),
    ("eligibility", "inclusion"): ("text",),
    ("eligibility", "exclusion"): ("text",),
    ("eligibility", "other_criteria"): ("text",),
    ("contacts", "central_contacts"): ("name",),
    ("contacts", "overall_officials"): ("name",),
    ("locations", "sites"): ("facility", "city"),
    ("references", "references"): ("pmid", "citation"),
}


# Lookup tables derived from the two above, so that ``build`` does no per-record set-up.
_ALLOWED: dict[str, frozenset[str]] = {name: frozenset(f) for name, f in SECTIONS.items()}
_SECTION_IDENTITY: dict[str, dict[str, tuple[str, ...]]] = {
    name: {f: parts for (s, f), parts in LIST_IDENTITY.items() if s == name} for name in SECTIONS}
_SECTION_NAMES = frozenset(SECTIONS)
# '"name":' of every key a built record's canonical JSON can have.
_KEY_PREFIX: dict[str, bytes] = {
    name: orjson.dumps(name) + b":" for name in (*SECTIONS, "nct_id")}


class ParseError(ValueError):
    """A document could not be turned into a ``TrialRecord``; the message says why."""


def canonical_dumps(value: Any) -> bytes:
    """Key-sorted, compact JSON bytes: the one serialization every hash is taken over."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_valid_nct_id(value: str) -> bool:
    return bool(NCT_ID_RE.match(value))


def identity_key(section: str, field_name: str, item: Mapping[str, Any]) -> str:
    """The identity of one list item, e.g. a site's ``facility|city`` (case-insensitive)."""
    parts = LIST_IDENTITY[(section, field_name)]
    if len(parts) == 1:
        return _identity_part(item.get(parts[0]))
    return "|".join([_identity_part(item.get(p)) for p in parts])


def collapse_whitespace(text: str) -> str:
    """``" ".join(text.split())``: runs of whitespace to one space, none at the ends.

    Most text (criteria, titles) is already collapsed, which is cheap to see: printable
    text has no whitespace but the plain space (``str.isprintable`` is false for every other
    ``str.isspace`` character), so no double, leading or trailing space means nothing to
    collapse, and the costly split and join are skipped."""
    if text.isprintable() and "  " not in text and text.strip() == text:
        return text
    return " ".join(text.split())


def _identity_part(value: Any) -> str:
    """``collapse_whitespace(str(value)).casefold()``, with that function's test inlined:
    this runs for every criterion, outcome and site of every record."""
    if not value:
        return ""
    text = value if type(value) is str else str(value)
    if text.isprintable() and "  " not in text and text.strip() == text:
        return text.casefold()
    return " ".join(text.split()).casefold()


def _identity_keys(parts: tuple[str, ...], items: Sequence[Any]) -> list[str]:
    """``identity_key`` of every item, one identity part at a time."""
    columns = [[_identity_part(item.get(part)) for item in items] for part in parts]
    if len(columns) == 1:
        return columns[0]
    return list(map("|".join, zip(*columns, strict=True)))


@dataclass(frozen=True)
class TrialRecord:
    """One version of one trial, in canonical form. Build it with ``TrialRecord.build``."""

    nct_id: str
    sections: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # Fields of the source document this release does not understand (not part of the
    # record nor its hash): recording the version logs them, the raw document keeps them.
    unread: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def build(cls, nct_id: str, sections: Mapping[str, Mapping[str, Any]],
              unread: tuple[str, ...] = ()) -> TrialRecord:
        """Validate the shape, drop empty sections, and sort identity-keyed lists."""
        if not is_valid_nct_id(nct_id):
            raise ParseError(f"invalid NCT ID {nct_id!r} (expected NCT followed by 8 digits)")
        clean: dict[str, dict[str, Any]] = {}
        for name, fields in sections.items():
            allowed = _ALLOWED.get(name)
            if allowed is None:
                raise ValueError(f"unknown record section {name!r}")
            if not allowed.issuperset(fields):
                unknown = set(fields) - allowed
                raise ValueError(f"unknown fields in section {name!r}: {sorted(unknown)}")
            if not fields:
                continue
            section = dict(fields.items())
            for key, parts in _SECTION_IDENTITY[name].items():
                value = section.get(key)
                if isinstance(value, list):
                    section[key] = _sorted_by_identity(parts, value)
            clean[name] = section
        record = cls(nct_id=nct_id, sections=clean, unread=unread)
        try:
            record.canonical_json  # noqa: B018 - what cannot be serialized cannot be stored
        except orjson.JSONEncodeError as exc:  # lone surrogates, integers beyond 64 bits
            raise ParseError(f"record cannot be stored: {exc}") from None
        return record

    @classmethod
    def from_canonical(cls, data: Mapping[str, Any], *, content_hash: str | None = None,
                       section_hashes: Mapping[str, str] | None = None) -> TrialRecord:
        """Rebuild a record from its canonical dict (as stored in the database).

        ``content_hash`` / ``section_hashes``, when given, are the hashes stored with it:
        they are trusted instead of serializing and hashing the record again.
        """
        sections = {k: v for k, v in data.items() if k != "nct_id"}
        record = cls(nct_id=str(data["nct_id"]), sections=sections)
        if content_hash is not None:
            record.__dict__["content_hash"] = content_hash
        if section_hashes is not None and set(section_hashes) == set(sections):
            record.__dict__["section_hashes"] = dict(section_hashes)
        return record

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled (the fetch worker sends records to the cycle) as its canonical JSON and
        # hashes: orjson reads that back several times faster than pickle rebuilds nested
        # dicts, and the hashes are not computed again.
        return (_from_canonical_json,
                (self.canonical_json, self.content_hash, self.section_hashes, self.unread))

    def to_canonical(self) -> dict[str, Any]:
        return {"nct_id": self.nct_id, **{k: dict(v) for k, v in self.sections.items()}}

    @cached_property
    def canonical_json(self) -> bytes:
        pieces = self._canonical_pieces()
        if pieces is None:
            return canonical_dumps(self.to_canonical())
        self.__dict__.setdefault("section_hashes", _hashes(self.sections, pieces))
        return _joined(pieces)

    @cached_property
    def content_hash(self) -> str:
        return sha256_hex(self.canonical_json)

    @cached_property
    def section_hashes(self) -> dict[str, str]:
        pieces = self._canonical_pieces()
        if pieces is None:
            return {name: sha256_hex(canonical_dumps(body))
                    for name, body in self.sections.items()}
        self.__dict__.setdefault("canonical_json", _joined(pieces))
        return _hashes(self.sections, pieces)

    def _canonical_pieces(self) -> dict[str, bytes] | None:
        """The canonical JSON of ``nct_id`` and of each section, so that the record and its
        sections are serialized once for both ``canonical_json`` and ``section_hashes``.

        ``None`` when that would not give the same bytes or errors as serializing them
        separately: a section that is not a plain dict or not a known name, or a value
        that cannot be serialized (the caller's plain path raises the usual error). Each
        value is serialized inside a list so that it is as deep as in the whole record.
        """
        sections = self.sections
        if not (_SECTION_NAMES.issuperset(sections)
                and all(type(body) is dict for body in sections.values())):
            return None
        try:
            return {name: canonical_dumps([value])[1:-1] for name, value in
                    sorted([("nct_id", self.nct_id), *sections.items()], key=itemgetter(0))}
        except orjson.JSONEncodeError:
            return None

    def get(self, section: str, field_name: str, default: Any = None) -> Any:
        return self.sections.get(section, {}).get(field_name, default)

    @property
    def title(self) -> str | None:
        return self.get("identification", "brief_title")

    @property
    def overall_status(self) -> str | None:
        return self.get("status", "overall_status")

    @property
    def phases(self) -> list[str]:
        phases = self.get("design", "phases")
        return [str(p) for p in phases] if isinstance(phases, list) else []

    @property
    def last_update_posted(self) -> str | None:
        posted = self.get("dates", "last_update_posted")
        return posted.get("date") if isinstance(posted, dict) else posted

    def knows_less_or_equal(self, other: TrialRecord) -> bool:
        """True when every field this record knows is known to ``other`` with the same value.

        A partial record (a text page) arriving after a fuller one (the API document) adds
        nothing: it is not worth a new version.
        """
        if self.nct_id != other.nct_id:
            return False
        mine, theirs = self.section_hashes, other.section_hashes
        for name, body in self.sections.items():
            if name not in other.sections:
                return False
            if mine[name] != theirs[name] and not _is_subset(body, other.sections[name]):
                return False
        return True


def _joined(pieces: dict[str, bytes]) -> bytes:
    """``canonical_dumps`` of the whole record from its pieces (in key order)."""
    return b"{" + b",".join([_KEY_PREFIX[name] + data for name, data in pieces.items()]) + b"}"


def _hashes(sections: Mapping[str, Any], pieces: dict[str, bytes]) -> dict[str, str]:
    return {name: sha256_hex(pieces[name]) for name in sections}


def _sorted_by_identity(parts: tuple[str, ...], items: list[Any]) -> list[Any]:
    """Items by identity; ties (two sites alike) by their canonical JSON, so the order is
    total. The JSON is only serialized when identities do collide."""
    if len(items) < 2:
        return list(items)
    keys = _identity_keys(parts, items)
    keyed = list(zip(keys, items, strict=True))
    if len(set(keys)) == len(keys):
        return [item for _, item in sorted(keyed, key=itemgetter(0))]

    def key(pair: tuple[str, Any]) -> tuple[str, str]:
        return pair[0], canonical_dumps(pair[1]).decode()

    return [item for _, item in sorted(keyed, key=key)]


def _is_subset(small: Any, big: Any) -> bool:
    if isinstance(small, dict) and isinstance(big, dict):
        return all(k in big and _is_subset(v, big[k]) for k, v in small.items())
    if isinstance(small, list) and isinstance(big, list):
        if len(small) != len(big):
            return False
        return all(_is_subset(a, b) for a, b in zip(small, big, strict=True))
    return bool(small == big)


def _from_canonical_json(data: bytes, content_hash: str, section_hashes: Mapping[str, str],
                         unread: tuple[str, ...] = ()) -> TrialRecord:
    record = TrialRecord.from_canonical(orjson.loads(data), content_hash=content_hash,
                                        section_hashes=section_hashes)
    record.__dict__["canonical_json"] = data
    if unread:
        object.__setattr__(record, "unread", unread)
    return record
