"""The fast paths of parsing and canonical serialization give the bytes the plain ones gave.

Stored content and section hashes were computed by earlier code: a parse that moves one byte
of canonical JSON raises false change alerts. The hashes below were computed before the
parser and ``TrialRecord`` were optimized; the other tests compare each fast path with the
plain computation it replaces.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest

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

CTGOV_DIR = Path(__file__).resolve().parent / "fixtures" / "ctgov"
# sha256 over the canonical JSON of split_criteria of every fixture study's criteria text.
CRITERIA_DIGEST = "a73aa0f01a77086b27a16700aa7ba9413edc94f4c92869356263ae8a7316251d"

# (file or page#index, content_hash, sha256 of the key-sorted section_hashes JSON); three
# moved once on purpose, when markdown escapes began to be undone in every text field.
KNOWN_HASHES = [
    ("NCT00184067.json", "c5801e4a55782a4c09813dba1b19da49c8d7892bbac773a7b19e4aff144a61f1",
     "b830af3bd589ee00e555c1f83afa66738f206b31dd4d33d31fa896a604ba8e53"),
    ("NCT02576665.full.json", "169d33145e1febc0514327f168786499329c4cb93efeb43d53e9e4ac62ab8f1e",
     "80a0e3febb1feeb1198f6e7bad537e9fcadb405d9fcd5dae8bd1c8a397cd3496"),
    ("NCT02576665.json", "2df3e4671c10176afdc2c38209d8a7cdd4468ca986871bfdbc0f2a7be29a2297",
     "65c85d620436cbac9048497fcc691e517a4c371aa2f463d15baf7a9b8f16e878"),
    ("NCT03722472.json", "fae4f467fcec85004956483f8d9b0713bc222466aa70b09c52e58d68fe088115",
     "cac36d2c401358bc4febe0f7fc08cade868d9aa4c02392ec327eb815b46aaf7d"),
    ("NCT03934567.json", "06679f7c210e6653137c9d7b216f0dc52f4997ffbdfdb22bc1268a181310f3b0",
     "bf0b48c2f71baa1f716a3d820a57b68c15c4255b414b878018e9119099a726a0"),
    ("NCT04267848.json", "3c4c5bcd5bcd3c277a09a0b330788b2cd65d4c0a9244a0011e63234a3472a3f9",
     "b3d35eeec74d94967f44d1ca73e19c819075ef098b186fcba0c0c7569bafce16"),
    ("NCT06323538.json", "10d6e3f4c99ef51baf914877582b849d6ea95684d14f62056d8c01f7ac11db21",
     "546ee02cd9532079df22e30956f45e2e76f1e3a9ce42cce0bc286698896a138d"),
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
        studies = list(iter_page_studies(orjson.loads((CTGOV_DIR / page).read_bytes())))
        study: dict[str, Any] = dict(studies[int(index)])
        return study
    doc: dict[str, Any] = orjson.loads((CTGOV_DIR / name).read_bytes())
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
