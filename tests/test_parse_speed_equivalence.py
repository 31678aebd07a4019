"""The fast paths of parsing and canonical serialization give the bytes the plain ones gave.

Stored content and section hashes were computed by earlier code: a parse that moves one byte
of canonical JSON raises false change alerts. The hashes below were computed before the
parser and ``TrialRecord`` were optimized; the other tests compare each fast path with the
plain computation it replaces.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from typing import Any

import orjson
import pytest
from shared_data import ctgov_file

from trialwatch.monitor.record import (
    LIST_IDENTITY,
    ParseError,
    TrialRecord,
    canonical_dumps,
    collapse_whitespace,
    identity_key,
    sha256_hex,
)
from trialwatch.monitor.sources.criteria import split_criteria
from trialwatch.monitor.sources.ctgov.parser import (
    MAX_DEPTH,
    _check_depth_walk,
    iter_page_studies,
    parse_study,
)

# sha256 over the canonical JSON of split_criteria of every fixture study's criteria text.
CRITERIA_DIGEST = "a73aa0f01a77086b27a16700aa7ba9413edc94f4c92869356263ae8a7316251d"

# (file or page#index, content_hash, sha256 of the key-sorted section_hashes JSON); three
# moved once on purpose, when markdown escapes began to be undone in every text field.
KNOWN_HASHES = [
    ("NCT00184067.json", "2e1859ce463ed7360c1655ee89fed224308ad606bb664422b3fc1a682e2be451",
     "59d7ea551a2d73e520a0b73717f8dcfc5169d0dec6a818dce187d9833fa44dcd"),
    ("NCT02576665.full.json", "8ba6dcaac5c4215ed567151b01294e5fe5984a3378debaa4a3b45075e1aac29a",
     "c8cf002814a7454a7d9a8c5a63bd7534415f57e827ac1802b0d93f4c422674bd"),
    ("NCT02576665.json", "2df3e4671c10176afdc2c38209d8a7cdd4468ca986871bfdbc0f2a7be29a2297",
     "65c85d620436cbac9048497fcc691e517a4c371aa2f463d15baf7a9b8f16e878"),
    ("NCT03722472.json", "5cd91ea1b4e7a26cedd633bb60ee99a040021cbd7dfb6d82153abf480002b21f",
     "faba7aa0e148c18a63a55d069dbb2ab5cf8de2ac55c1195b02d3cedab34588de"),
    ("NCT03934567.json", "9b7288cf6a15cc571f98e715ca168c0653b0443a8c2135a6cd6971fe311fc857",
     "0149785912d881d1277f0c2acc98a09af1838856f5e24eb5078570fb07b77ffd"),
    ("NCT04267848.json", "7aabadb484973167d840e54447b2d5b3551586b4766809986ebd83d4650b6808",
     "0e78cc9b7f6fd0b7d82160276fb9d70c2521f2e271c2911ba981f1ebf38cd7f7"),
    ("NCT06323538.json", "ff56aae5dc462a2087d43d3f50f671be10a2d308d2365a16f80ec7b54b44cb8c",
     "cddf26cb0b4719e8bda55bd3bc1fb6a39f22ad13d5d4d9c094655e257ea0af8c"),
    ("page_example.json#0", "7a3cd594a3b5dddec51d85ebe84a45b621efd7df5007bf37712c0db6e124c356",
     "7acb38ffc7785d2e29fc01b92c252214891fd291bafdcef0ca4f964916617395"),
    ("page_example.json#1", "c8bf22c205b0d561402e59796e5a29a217a921e7b8d55b3e9eef58cca4023ef0",
     "d3d3646f7c4c39963b078825625770628342b2d0ffa8d8a481d90d13a93145bc"),
    ("page_example.json#2", "9a55fdb9efde02a44613be642850b6fe0a1168e4f3a14cd2aa27e1574b78553f",
     "54332e661f498af6e8d0d25af2f89705c5ba56f702c89015c61fcb497b035482"),
    ("page_example.json#3", "7f9523f8c6c1a6ba3c13bf7f555afebece127c638e1f5d899098b64672787a9b",
     "93c2305909eac2ec4c405ed39fd09647494955b34e06774150934d5f4c26a278"),
    ("page_example.json#4", "ada5c173724bfea121da9301eef18faed34c824ad5344ff47bd12acecb704cd6",
     "b8bf75e1ac08ce4dc2228989f986be73d63b1d2dcd5e36590f6833bc37851efd"),
]


def load_study(name: str) -> dict[str, Any]:
    if "#" in name:
        page, index = name.split("#")
        studies = list(iter_page_studies(orjson.loads(ctgov_file(page).read_bytes())))
        study: dict[str, Any] = dict(studies[int(index)])
        return study
    doc: dict[str, Any] = orjson.loads(ctgov_file(name).read_bytes())
    return doc


def all_studies() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, _, _ in KNOWN_HASHES:
        yield name, load_study(name)


@pytest.mark.parametrize(("name", "content_hash", "sections_digest"), KNOWN_HASHES,
                         ids=[n for n, _, _ in KNOWN_HASHES])
def test_fixture_hashes_are_those_computed_before_the_optimization(
        name: str, content_hash: str, sections_digest: str) -> None:
    record = parse_study(load_study(name))
    assert record.content_hash == content_hash
    digest = sha256_hex(canonical_dumps(record.section_hashes))
    assert digest == sections_digest


@pytest.mark.parametrize("first", ["canonical_json", "section_hashes"])
def test_canonical_json_and_section_hashes_equal_the_plain_serialization(first: str) -> None:
    for _, doc in all_studies():
        record = parse_study(doc)
        getattr(record, first)
        assert record.canonical_json == canonical_dumps(record.to_canonical())
        plain = {name: sha256_hex(canonical_dumps(body))
                 for name, body in record.sections.items()}
        assert list(record.section_hashes.items()) == list(plain.items())
        assert record.content_hash == hashlib.sha256(record.canonical_json).hexdigest()


def test_record_that_cannot_be_serialized_raises_the_plain_error() -> None:
    with pytest.raises(ParseError, match="surrogates not allowed"):
        TrialRecord.build("NCT00000001", {"status": {"overall_status": "\ud800"}})
    with pytest.raises(ParseError, match="64-bit"):
        TrialRecord.build("NCT00000001", {"design": {"enrollment": {"count": 2**70}}})


def test_record_nested_at_orjson_limit_fails_as_a_whole() -> None:
    deep: Any = 1
    for _ in range(252):  # + the section + the record = 254 levels: as deep as orjson goes
        deep = [deep]
    TrialRecord.build("NCT00000001", {"status": {"why_stopped": deep}})
    with pytest.raises(ParseError, match="cannot be stored"):
        TrialRecord.build("NCT00000001", {"status": {"why_stopped": [deep]}})


def test_non_dict_sections_serialize_as_before() -> None:
    class Section(Mapping[str, Any]):
        def __init__(self, data: dict[str, Any]) -> None:
            self.data = data

        def __getitem__(self, key: str) -> Any:
            return self.data[key]

        def __iter__(self) -> Iterator[str]:
            return iter(self.data)

        def __len__(self) -> int:
            return len(self.data)

    record = TrialRecord(nct_id="NCT00000001",
                         sections={"status": Section({"overall_status": "X"})})
    assert record.canonical_json == b'{"nct_id":"NCT00000001","status":{"overall_status":"X"}}'
    with pytest.raises(orjson.JSONEncodeError):
        record.section_hashes  # noqa: B018 - as before: a non-dict section cannot be hashed


WHITESPACE = [chr(c) for c in range(0x110000) if chr(c).isspace()]


@pytest.mark.parametrize("text", [
    "", " ", "a", "a b", " a", "a ", "a  b", "a\tb", "a\nb", "a\u00a0b", "a\u2003b",
    "a\x1cb", "a\x85b", "\u3000a", "a\u2028", "Ünïcödé  tëxt", "x" * 100,
    *[f"a{w}b" for w in WHITESPACE], *[f"{w}a" for w in WHITESPACE],
])
def test_collapse_whitespace_is_split_and_join(text: str) -> None:
    assert collapse_whitespace(text) == " ".join(text.split())


def test_identity_keyed_lists_sort_as_identity_key_says() -> None:
    items = [{"facility": f, "city": c} for f in ("B", "a ", "A", " a\tx", "ä", None, "")
             for c in ("Z", "z", None, "  y  ")]
    record = TrialRecord.build("NCT00000001", {"locations": {"sites": list(reversed(items))}})
    sites = record.get("locations", "sites")
    keys = [identity_key("locations", "sites", site) for site in sites]
    assert keys == sorted(keys)
    ties = {k for k in keys if keys.count(k) > 1}
    for key in ties:
        group = [canonical_dumps(s) for s, k in zip(sites, keys, strict=True) if k == key]
        assert group == sorted(group)
    assert ("locations", "sites") in LIST_IDENTITY


def nested(depth: int, kind: str) -> Any:
    value: Any = "leaf"
    for level in range(depth):
        if kind == "dict":
            value = {"k": value}
        elif kind == "list":
            value = [value]
        elif kind == "tuple":
            value = (value,)
        else:
            value = {"k": value} if level % 2 else [value]
    return value


def walk_verdict(doc: dict[str, Any]) -> str | None:
    try:
        _check_depth_walk(doc)
    except ParseError as exc:
        return str(exc)
    return None


@pytest.mark.parametrize("kind", ["dict", "list", "tuple", "mixed"])
@pytest.mark.parametrize("extra", range(MAX_DEPTH - 3, MAX_DEPTH + 3))
def test_depth_check_refuses_what_the_walk_refuses(kind: str, extra: int) -> None:
    doc = load_study("NCT02576665.json")
    doc["derivedSection"] = nested(extra - 1, kind)
    expected = walk_verdict(doc)
    if expected is None:
        try:
            parse_study(doc)
        except ParseError as exc:  # pragma: no cover - the assertion explains
            pytest.fail(f"refused: {exc}")
    else:
        with pytest.raises(ParseError) as info:
            parse_study(doc)
        assert str(info.value) == expected
        assert f"deeper than {MAX_DEPTH}" in expected


def test_split_criteria_of_fixtures_is_unchanged() -> None:
    digest = hashlib.sha256()
    for _, doc in all_studies():
        text = doc["protocolSection"].get("eligibilityModule", {}).get("eligibilityCriteria")
        if isinstance(text, str):
            digest.update(canonical_dumps(split_criteria(text)))
    assert digest.hexdigest() == CRITERIA_DIGEST
