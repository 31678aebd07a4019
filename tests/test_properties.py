"""Property-based tests (hypothesis): parsers never crash or hang, the diff is consistent.

Parsing: random mutations of the real API v2 documents in ``../shared/ctgov`` and of the
seed text page (truncation, deleted keys, wrong types, huge strings, invalid UTF-8 and lone
surrogates, deep nesting, shuffled / duplicated / injected lines) go through
``parse_record_bytes`` and give either records that can be stored (canonical JSON, hash) or a
clean ``ParseError`` — never another exception, never a hang.

Diff: for records made by mutating real documents, ``diff(a, a)`` is empty, every event of
``diff(a, b)`` has its mirror in ``diff(b, a)``, reordering identity-keyed lists is never a
change, dropping what a source does not carry is never a change, and events are deterministic.

Example counts are bounded so the default run stays fast; set ``HYPOTHESIS_PROFILE=thorough``
for a longer search.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import random
import re
import tempfile
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from shared_data import CTGOV, ctgov_file

from trialwatch.monitor.diff import _deepdiff_change_parts, diff_records, item_change_parts
from trialwatch.monitor.events import ChangeEvent
from trialwatch.monitor.record import LIST_IDENTITY, ParseError, TrialRecord, is_valid_nct_id
from trialwatch.monitor.sources.ctgov.parser import parse_study
from trialwatch.monitor.sources.files import MAX_FILE_BYTES, parse_record_bytes, read_record_file
from trialwatch.monitor.sources.text_page import parse_text_page

FIXTURES = CTGOV  # ../shared/ctgov; "constructed/..." is the project's own
SEED = Path(__file__).resolve().parents[1] / "seeds" / "NCT07328581.txt"
JSON_FIXTURES = [*sorted(p.name for p in FIXTURES.glob("*.json")), "constructed/NCT07328581.json"]
STUDY_FIXTURES = [n for n in JSON_FIXTURES if not n.startswith("page_")]

settings.register_profile("default", max_examples=60, deadline=10_000,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.data_too_large])
settings.register_profile("thorough", max_examples=2_000, deadline=30_000,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.data_too_large])
PROFILE_NAME = os.environ.get("HYPOTHESIS_PROFILE", "default")
PROFILE = settings.get_profile(PROFILE_NAME)
# The 369 KB record (1,148 sites) costs ~0.5 s per diff: only the thorough profile diffs it.
DIFF_FIXTURES = [n for n in STUDY_FIXTURES
                 if PROFILE_NAME == "thorough" or n != "NCT04267848.json"]


@cache
def _fixture_bytes(name: str) -> bytes:
    return ctgov_file(name).read_bytes()


def fixture(name: str) -> Any:
    return orjson.loads(_fixture_bytes(name))


@cache
def seed_text() -> str:
    return SEED.read_text(encoding="utf-8")


def assert_records_or_parse_error(data: bytes) -> None:
    """The contract every parser entry point keeps."""
    try:
        documents = parse_record_bytes(data, "mutated")
    except ParseError as exc:
        assert str(exc), "a ParseError must say what is wrong"
        assert "\n" not in str(exc)
        return
    for document in documents:
        record = document.record
        assert is_valid_nct_id(record.nct_id)
        assert len(record.content_hash) == 64  # canonical JSON serializes: storable
        again = TrialRecord.from_canonical(orjson.loads(record.canonical_json))
        assert again.content_hash == record.content_hash
        assert diff_records(record, again) == []


# --------------------------------------------------------------------------- mutations

DEEP = "\x00deep\x00"  # placeholder replaced by a deeply nested value after serializing

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=30),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=12,
)
huge_strings = st.builds(lambda ch, n: ch * n,
                         st.sampled_from(["a", " ", "\n", "é", "1", "- ", "(", "\t\r"]),
                         st.integers(min_value=10_000, max_value=300_000))
nasty_strings = st.one_of(
    st.text(max_size=50),
    st.text(alphabet=st.characters(blacklist_categories=()), max_size=50),
    st.sampled_from(["\ud800", "a\udfffb", "\u202e", "\x00", "NCT0000000'1", "'; DROP --",
                     "\r\nBcc: x@y", "<script>", "Inclusion Criteria:", "1. ", "NCT ID: X"]),
    huge_strings,
)


def _containers(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths of every dict and list inside ``value`` (the root included)."""
    found = [path] if isinstance(value, dict | list) and value else []
    if isinstance(value, dict):
        for key, child in value.items():
            found += _containers(child, (*path, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _containers(child, (*path, index))
    return found


def _at(value: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        value = value[step]
    return value


@st.composite
def mutated_documents(draw: st.DrawFn, names: list[str] = JSON_FIXTURES) -> bytes:
    """A real document with a few structural edits, then maybe a byte-level edit."""
    doc = copy.deepcopy(fixture(draw(st.sampled_from(names))))
    deep: tuple[str, int] | None = None
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        paths = _containers(doc)
        if not paths:
            break
        parent = _at(doc, draw(st.sampled_from(paths)))
        keys = list(parent) if isinstance(parent, dict) else list(range(len(parent)))
        key = draw(st.sampled_from(keys))
        action = draw(st.sampled_from(["delete", "wrong type", "nasty string", "deep", "null",
                                       "empty", "duplicate"]))
        if action == "delete":
            del parent[key]
        elif action == "wrong type":
            parent[key] = draw(json_values)
        elif action == "nasty string":
            parent[key] = draw(nasty_strings)
        elif action == "deep" and deep is None:
            parent[key] = DEEP
            deep = (draw(st.sampled_from("[{")), draw(st.integers(min_value=50, max_value=3000)))
        elif action == "null":
            parent[key] = None
        elif action == "empty":
            parent[key] = type(parent[key])() if isinstance(parent[key], dict | list | str) \
                else parent[key]
        elif action == "duplicate" and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[key]))
    # stdlib json writes lone surrogates as \\ud800 escapes, as a broken producer would
    text = json.dumps(doc, ensure_ascii=draw(st.booleans()))
    if deep is not None:
        opener, depth = deep
        nested = ("[" * depth + "]" * depth) if opener == "[" else \
            ('{"a":' * depth + "1" + "}" * depth)
        text = text.replace(json.dumps(DEEP), nested, 1)
    data = text.encode("utf-8", "surrogatepass")
    return draw(byte_mutations(data))


@st.composite
def byte_mutations(draw: st.DrawFn, data: bytes) -> bytes:
    action = draw(st.sampled_from(["none", "none", "truncate", "flip", "insert", "bom"]))
    if action == "truncate":
        return data[: draw(st.integers(min_value=0, max_value=len(data)))]
    if action == "flip":
        at = draw(st.integers(min_value=0, max_value=max(0, len(data) - 1)))
        return data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1:]
    if action == "insert":
        at = draw(st.integers(min_value=0, max_value=len(data)))
        junk = draw(st.sampled_from([b"\xff\xfe", b"\xed\xa0\x80", b"\xc3", b"\x00", b"\x1b[2J",
                                     b"\xef\xbb\xbf", b"}", b"]", b",", b'"']))
        return data[:at] + junk + data[at:]
    if action == "bom":
        return b"\xef\xbb\xbf" + data
    return data


heading_lines = st.sampled_from([
    "NCT ID: NCT07328581", "NCT ID: NCT00000001", "NCT ID:", "Last Updated: ", "Last Updated: x",
    "Recruitment Status", "Total Enrollment", "Study Start Date", "Eligibility Criteria",
    "Inclusion Criteria:", "Exclusion Criteria", "Central Contacts", "Role: CONTACT",
    "Study Groups", "Group Type EXPERIMENTAL", "Intervention Type BIOLOGICAL", "Sponsors",
    "Sponsor Role lead", "Other Identifiers", "Identifier Type: X", "Identifier Source: y",
    "More Related Trials", "Accepts Healthy Volunteers Maybe", "Clinical Phase", "N/A", "",
])


@st.composite
def mutated_pages(draw: st.DrawFn) -> bytes:
    lines = seed_text().split("\n")
    for _ in range(draw(st.integers(min_value=1, max_value=8))):
        at = draw(st.integers(min_value=0, max_value=len(lines)))
        action = draw(st.sampled_from(["delete", "duplicate", "shuffle", "heading", "text",
                                       "huge", "number"]))
        if action == "delete" and lines:
            del lines[min(at, len(lines) - 1)]
        elif action == "duplicate" and lines:
            lines.insert(at, lines[min(at, len(lines) - 1)])
        elif action == "shuffle":
            end = min(len(lines), at + draw(st.integers(min_value=2, max_value=30)))
            chunk = lines[at:end]
            draw(st.randoms(use_true_random=False)).shuffle(chunk)
            lines[at:end] = chunk
        elif action == "heading":
            lines.insert(at, draw(heading_lines))
        elif action == "text":
            lines.insert(at, draw(nasty_strings))
        elif action == "huge":
            lines.insert(at, draw(huge_strings))
        elif action == "number":
            lines.insert(at, draw(st.sampled_from(["9" * 5000, "1," * 3000, "12345678901234567890",
                                                   "+1 " + " " * 20_000 + "x"])))
    data = "\n".join(lines).encode("utf-8", "surrogatepass")
    return draw(byte_mutations(data))


# --------------------------------------------------------------------------- parsing


@settings(PROFILE, max_examples=PROFILE.max_examples * 2)
@given(mutated_documents())
def test_mutated_api_documents_give_records_or_a_clean_parse_error(data: bytes) -> None:
    assert_records_or_parse_error(data)


@PROFILE
@given(mutated_pages())
def test_mutated_text_pages_give_a_record_or_a_clean_parse_error(data: bytes) -> None:
    assert_records_or_parse_error(data)


@PROFILE
@given(st.text(max_size=2000))
def test_any_text_given_to_the_text_page_parser_is_a_record_or_a_parse_error(text: str) -> None:
    page = f"Title\n\nNCT ID: NCT07328581\n\n{text}"
    try:
        record = parse_text_page(page)
    except ParseError:
        return
    assert len(record.content_hash) == 64


@PROFILE
@given(st.binary(max_size=4000))
def test_arbitrary_bytes_are_a_record_or_a_parse_error(data: bytes) -> None:
    assert_records_or_parse_error(data)


@settings(PROFILE, max_examples=max(10, PROFILE.max_examples // 3))
@given(st.one_of(mutated_documents(), mutated_pages()))
def test_read_record_file_answers_as_parse_record_bytes(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "record.json"
        path.write_bytes(data)
        try:
            from_file = [d.record.content_hash for d in read_record_file(path)]
        except ParseError as exc:
            with pytest.raises(ParseError, match=re.escape(str(exc))):
                parse_record_bytes(data, str(path))
            return
    assert [d.record.content_hash for d in parse_record_bytes(data, "x")] == from_file


@pytest.mark.parametrize("depth", [200, 255, 300, 1000, 1025, 100_000])
@pytest.mark.parametrize("where", ["study", "page"])
def test_deeply_nested_json_is_a_parse_error_not_a_crash(depth: int, where: str) -> None:
    doc = fixture("NCT03934567.json")
    doc["protocolSection"]["descriptionModule"]["briefSummary"] = DEEP
    if where == "page":
        doc = {"studies": [doc]}
    nested = "[" * depth + "]" * depth
    text = json.dumps(doc).replace(json.dumps(DEEP), nested)
    with pytest.raises(ParseError):
        parse_record_bytes(text.encode(), "deep.json")
    deep_unknown = json.dumps(doc).replace(json.dumps(DEEP), '"x"').replace(
        '"derivedSection": {', '"derivedSection": {"deep": ' + nested + ", ", 1)
    with pytest.raises(ParseError):  # even inside a part the parser ignores
        parse_record_bytes(deep_unknown.encode(), "deep.json")


def test_parse_study_rejects_a_deep_document_before_anything_serializes_it() -> None:
    doc = fixture("NCT03934567.json")
    value: Any = "x"
    for _ in range(400):
        value = {"a": value}
    doc["resultsSection"] = value
    with pytest.raises(ParseError, match="nested"):
        parse_study(doc)


def test_lone_surrogates_in_a_text_page_string_are_a_parse_error() -> None:
    text = seed_text().replace("BCMA-CD19 cCAR T", "BCMA\ud800CD19", 1)
    with pytest.raises(ParseError):
        parse_text_page(text)


def test_input_larger_than_the_file_limit_is_refused_without_parsing() -> None:
    data = b"{" + b" " * MAX_FILE_BYTES + b"}"
    started = time.monotonic()
    with pytest.raises(ParseError, match="larger"):
        parse_record_bytes(data, "huge.json")
    assert time.monotonic() - started < 5


def _spaced(line: str, run: str) -> str:
    middle = max(1, len(line) // 2)
    return line[:middle] + run + line[middle:]


@pytest.mark.parametrize("run", [" " * 100_000, "1 " * 50_000, "x" * 100_000],
                         ids=["spaces", "digits-and-spaces", "letters"])
def test_a_long_run_inside_any_line_of_the_page_never_makes_parsing_hang(run: str) -> None:
    """Regexes over page lines stay linear: a 100 KB run in any line parses in seconds."""
    lines = seed_text().split("\n")
    worst = 0.0
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        page = "\n".join([*lines[:index], _spaced(line, run), *lines[index + 1:]])
        started = time.monotonic()
        with contextlib.suppress(ParseError):
            parse_text_page(page)
        worst = max(worst, time.monotonic() - started)
    assert worst < 2.0, f"slowest line took {worst:.1f}s"


@pytest.mark.parametrize("value", ["9" * 5000, "12345678901234567890123", "1," * 3000])
def test_an_absurd_enrollment_on_a_page_is_not_a_crash(value: str) -> None:
    page = seed_text().replace("20 participants", f"{value} participants", 1)
    try:
        record = parse_text_page(page)
    except ParseError:
        return
    assert len(record.content_hash) == 64


def test_every_real_fixture_still_parses(ctgov_dir: Path, seed_path: Path) -> None:
    for name in JSON_FIXTURES:
        assert read_record_file(ctgov_file(name))
    assert read_record_file(seed_path)


# --------------------------------------------------------------------------- diff


@cache
def base_record(name: str) -> TrialRecord:
    return parse_study(fixture(name))


def mirror(event: ChangeEvent) -> tuple[str, str, str, str]:
    return (event.kind, event.field, _key(event.new), _key(event.old))


def plain(event: ChangeEvent) -> tuple[str, str, str, str]:
    return (event.kind, event.field, _key(event.old), _key(event.new))


def _key(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


STATUSES = ["NOT_YET_RECRUITING", "RECRUITING", "ACTIVE_NOT_RECRUITING", "COMPLETED",
            "TERMINATED", "WITHDRAWN", "SUSPENDED"]
words = st.text(alphabet="abcdefgh XYZ", min_size=1, max_size=24)


def _edit_identity_list(draw: st.DrawFn, section: dict[str, Any], key: str,
                        identity: tuple[str, ...]) -> None:
    items = section.get(key)
    if not isinstance(items, list):
        return
    action = draw(st.sampled_from(["add", "remove", "reword", "change", "duplicate"]))
    if action == "add" or not items:
        item = {part: draw(words) for part in identity}
        item["extra"] = draw(words)
        items.append(item)
    elif action == "remove":
        items.pop(draw(st.integers(0, len(items) - 1)))
    elif action == "duplicate":
        items.append(copy.deepcopy(items[draw(st.integers(0, len(items) - 1))]))
    else:
        item = items[draw(st.integers(0, len(items) - 1))]
        field = identity[0] if action == "reword" else draw(st.sampled_from(
            [k for k in item if k not in identity] or list(identity)))
        current = item.get(field)
        if action == "reword" and isinstance(current, str) and current:
            at = draw(st.integers(0, len(current)))
            item[field] = current[:at] + draw(words) + current[at:]
        else:
            item[field] = draw(st.one_of(words, st.none()))


@st.composite
def record_pairs(draw: st.DrawFn) -> tuple[TrialRecord, TrialRecord]:
    """Two versions of one real trial: ``b`` is ``a`` with a few random meaningful edits."""
    a = base_record(draw(st.sampled_from(DIFF_FIXTURES)))
    sections = copy.deepcopy(a.to_canonical())
    nct_id = sections.pop("nct_id")
    for _ in range(draw(st.integers(min_value=0, max_value=5))):
        name = draw(st.sampled_from(sorted(sections)))
        section = sections[name]
        if not section:
            continue
        key = draw(st.sampled_from(sorted(section)))
        if (name, key) in LIST_IDENTITY:
            _edit_identity_list(draw, section, key, LIST_IDENTITY[(name, key)])
        elif (name, key) == ("status", "overall_status"):
            section[key] = draw(st.sampled_from(STATUSES))
        elif isinstance(section[key], list):
            section[key] = sorted(draw(st.lists(words, max_size=3)))
        elif isinstance(section[key], dict):
            section[key] = {k: draw(st.one_of(words, st.none())) for k in section[key]}
        elif isinstance(section[key], bool):
            section[key] = not section[key]
        else:
            section[key] = draw(st.one_of(words, st.none()))
    return a, TrialRecord.build(nct_id, sections)


def unordered(record: TrialRecord, rng: random.Random) -> TrialRecord:
    """The same record with every identity-keyed list shuffled (not re-sorted by ``build``)."""
    sections = copy.deepcopy({k: dict(v) for k, v in record.sections.items()})
    for (section, key) in LIST_IDENTITY:
        items = sections.get(section, {}).get(key)
        if isinstance(items, list):
            rng.shuffle(items)
    return TrialRecord(nct_id=record.nct_id, sections=sections)


# Results first posted folds its posting date and its new result sections into one event
# (DESIGN.md: one event per meaningful change), so those two have no mirror the other way.
FOLDED = {"dates.results_first_posted", "results.modules", "results.participant_flow",
          "results.baseline", "results.outcome_measures", "results.adverse_events",
          "results.unposted_events"}


@PROFILE
@given(record_pairs())
def test_a_record_never_differs_from_itself(pair: tuple[TrialRecord, TrialRecord]) -> None:
    a, b = pair
    assert diff_records(a, a) == []
    assert diff_records(b, b) == []
    stored = TrialRecord.from_canonical(orjson.loads(b.canonical_json))
    assert diff_records(b, stored) == []


@PROFILE
@given(record_pairs())
def test_every_event_has_its_mirror_in_the_reverse_diff(
        pair: tuple[TrialRecord, TrialRecord]) -> None:
    a, b = pair
    forward, backward = diff_records(a, b), diff_records(b, a)
    assert (forward == []) == (backward == [])
    forward_keys = {plain(e) for e in forward}
    backward_mirrors = {mirror(e) for e in backward}
    folded_backward = any(e.field == "results.has_results" and e.new is True for e in backward)
    folded_forward = any(e.field == "results.has_results" and e.new is True for e in forward)
    for event in forward:
        if not (folded_backward and event.field in FOLDED):
            assert plain(event) in backward_mirrors, event
    for event in backward:
        if not (folded_forward and event.field in FOLDED):
            assert mirror(event) in forward_keys, event


@PROFILE
@given(record_pairs(), st.randoms(use_true_random=False))
def test_reordering_identity_keyed_lists_is_never_a_change(
        pair: tuple[TrialRecord, TrialRecord], rng: random.Random) -> None:
    a, b = pair
    assert diff_records(b, unordered(b, rng)) == []
    assert [plain(e) for e in diff_records(a, unordered(b, rng))] == \
        [plain(e) for e in diff_records(a, b)]


@PROFILE
@given(record_pairs())
def test_events_are_deterministic_in_content_and_order(
        pair: tuple[TrialRecord, TrialRecord]) -> None:
    a, b = pair
    first = diff_records(a, b)
    again = diff_records(TrialRecord.from_canonical(orjson.loads(a.canonical_json)),
                         TrialRecord.from_canonical(orjson.loads(b.canonical_json)))
    assert [e.to_json() for e in first] == [e.to_json() for e in again]


@PROFILE
@given(st.sampled_from(DIFF_FIXTURES), st.data())
def test_forgetting_fields_is_never_a_change(name: str, data: st.DataObject) -> None:
    """Unknown never counts: a record that knows less (a text page, a fields= answer) is quiet."""
    full = base_record(name)
    sections = copy.deepcopy(full.to_canonical())
    nct_id = sections.pop("nct_id")
    for _ in range(data.draw(st.integers(min_value=1, max_value=8))):
        name_ = data.draw(st.sampled_from(sorted(sections)))
        section = sections[name_]
        if not section:
            continue
        key = data.draw(st.sampled_from(sorted(section)))
        value = section[key]
        identity = LIST_IDENTITY.get((name_, key), ())
        if isinstance(value, list) and value and isinstance(value[0], dict) \
                and data.draw(st.booleans()):
            item = value[data.draw(st.integers(0, len(value) - 1))]
            droppable = sorted(k for k in item if k not in identity)
            if droppable:
                del item[data.draw(st.sampled_from(droppable))]
        elif isinstance(value, dict) and value and data.draw(st.booleans()):
            del value[data.draw(st.sampled_from(sorted(value)))]
        else:
            del section[key]
    partial = TrialRecord.build(nct_id, sections)
    assert diff_records(full, partial) == []
    assert diff_records(partial, full) == []


@PROFILE
@given(st.sampled_from(STUDY_FIXTURES), st.randoms(use_true_random=False))
def test_reordering_lists_in_the_raw_document_gives_the_same_record(
        name: str, rng: random.Random) -> None:
    doc = fixture(name)
    protocol = doc["protocolSection"]
    lists: list[Callable[[], Any]] = [
        lambda: protocol.get("contactsLocationsModule", {}).get("locations"),
        lambda: protocol.get("contactsLocationsModule", {}).get("centralContacts"),
        lambda: protocol.get("contactsLocationsModule", {}).get("overallOfficials"),
        lambda: protocol.get("outcomesModule", {}).get("primaryOutcomes"),
        lambda: protocol.get("outcomesModule", {}).get("secondaryOutcomes"),
        lambda: protocol.get("armsInterventionsModule", {}).get("armGroups"),
        lambda: protocol.get("armsInterventionsModule", {}).get("interventions"),
        lambda: protocol.get("referencesModule", {}).get("references"),
        lambda: protocol.get("conditionsModule", {}).get("conditions"),
        lambda: protocol.get("conditionsModule", {}).get("keywords"),
        lambda: protocol.get("sponsorCollaboratorsModule", {}).get("collaborators"),
        lambda: protocol.get("identificationModule", {}).get("secondaryIdInfos"),
    ]
    for get in lists:
        items = get()
        if isinstance(items, list):
            rng.shuffle(items)
    for arm in protocol.get("armsInterventionsModule", {}).get("armGroups", []):
        rng.shuffle(arm.get("interventionNames", []))
    reordered = parse_study(doc)
    assert reordered.content_hash == base_record(name).content_hash
    assert diff_records(base_record(name), reordered) == []


@PROFILE
@given(record_pairs())
def test_bookkeeping_dates_alone_never_make_an_event(
        pair: tuple[TrialRecord, TrialRecord]) -> None:
    a, _ = pair
    sections = copy.deepcopy(a.to_canonical())
    nct_id = sections.pop("nct_id")
    dates = sections.setdefault("dates", {})
    dates["last_update_posted"] = {"date": "2031-01-01", "type": "ACTUAL"}
    dates["last_update_submitted"] = {"date": "2030-12-31"}
    sections.setdefault("status", {})["status_verified_date"] = "2030-12"
    assume(a.content_hash != TrialRecord.build(nct_id, sections).content_hash)
    assert diff_records(a, TrialRecord.build(nct_id, sections)) == []


PLAIN_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(-5, 5),
                         st.text(max_size=8))
ITEM_KEYS = st.sampled_from(["facility", "city", "status", "zip", "time_frame", "count"])
NESTED_VALUES = st.one_of(PLAIN_VALUES, st.lists(PLAIN_VALUES, max_size=3),
                          st.dictionaries(ITEM_KEYS, PLAIN_VALUES, max_size=3))


# Items of plain values are spelled out directly; items with nested values go to deepdiff.
ITEM_PAIRS = st.sampled_from([PLAIN_VALUES, NESTED_VALUES]).flatmap(
    lambda values: st.tuples(st.dictionaries(ITEM_KEYS, values),
                             st.dictionaries(ITEM_KEYS, values)))


@PROFILE
@given(ITEM_PAIRS)
def test_a_changed_list_item_is_spelled_out_as_deepdiff_would(
        pair: tuple[dict[str, Any], dict[str, Any]]) -> None:
    old, new = pair
    assert item_change_parts(old, new) == _deepdiff_change_parts(old, new)
