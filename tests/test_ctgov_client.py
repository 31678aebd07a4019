"""RegistryClient against FakeRegistry: batching, paging, retries, politeness, bad answers.

Every test talks HTTP to a real local server (``registry_server.FakeRegistry``); time is a
fake clock, so retries and rate limiting are checked without waiting.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
import structlog
from registry_server import FakeRegistry, Fault, load_fixture, make_study, nct

import trialwatch.monitor
from trialwatch.monitor.sources.ctgov.client import (
    MAX_URL_LENGTH,
    BadRegistryResponse,
    FetchedStudy,
    RegistryBlocked,
    RegistryClient,
    RegistryUnavailable,
    RegistryVersion,
    StudyStamp,
    TrialNotFound,
)

REAL = load_fixture("NCT03934567.json")
# A small real-shaped document, cheap to clone by the thousand.
TINY = {
    "protocolSection": {
        k: REAL["protocolSection"][k]
        for k in ("identificationModule", "statusModule", "conditionsModule")
    }
}


class FakeTime:
    """A monotonic clock that only moves when something sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def client(registry: FakeRegistry, fake_time: FakeTime) -> Iterator[RegistryClient]:
    with RegistryClient(
        registry.base_url,
        requests_per_second=0,
        max_retries=3,
        sleep=fake_time.sleep,
        clock=fake_time.clock,
    ) as c:
        yield c


def add(registry: FakeRegistry, n: int, last_update: str = "2026-11-01", **kw: Any) -> str:
    return registry.add(make_study(TINY, nct(n), last_update, **kw))


def stamp_doc(nct_id: str, posted: str = "2026-11-01") -> dict[str, Any]:
    return {
        "protocolSection": {
            "identificationModule": {"nctId": nct_id},
            "statusModule": {"lastUpdatePostDateStruct": {"date": posted}},
        }
    }


# ------------------------------------------------------------------ batching and paging


def test_2500_ids_take_the_fewest_requests_within_id_and_url_limits(registry, client):
    ids = [nct(i) for i in range(1, 2501)]
    for i in range(1, 2501, 2):
        add(registry, i)

    stamps = list(client.iter_stamps(ids, page_size=1000))

    listing = registry.requests_to("/studies")
    origin = registry.base_url.removesuffix("/api/v2")
    # ~600 ids fit in a 7,500-character URL, so 5 requests, not ceil(2500/1000) = 3.
    assert len(listing) == client.listing_requests(2500) == 5
    assert all(len(r.ids) <= 1000 for r in listing)
    assert all(len(origin + r.target) <= MAX_URL_LENGTH for r in listing)
    assert sorted(i for r in listing for i in r.ids) == ids
    assert {s.nct_id for s in stamps} == {nct(i) for i in range(1, 2501, 2)}


def test_2500_ids_take_3_requests_of_at_most_1000_when_urls_may_be_long(registry, fake_time):
    ids = [nct(i) for i in range(1, 2501)]
    with RegistryClient(
        registry.base_url, requests_per_second=0, max_url_length=20_000, sleep=fake_time.sleep
    ) as client:
        assert list(client.iter_stamps(ids, page_size=1000)) == []
    assert [len(r.ids) for r in registry.requests_to("/studies")] == [1000, 1000, 500]


def test_ids_per_request_never_exceed_page_size(registry, client):
    ids = [nct(i) for i in range(1, 251)]
    list(client.iter_stamps(ids + ids[:10], page_size=100))  # duplicates asked once
    assert [len(r.ids) for r in registry.requests_to("/studies")] == [100, 100, 50]


def test_stamps_carry_id_last_update_date_and_status(registry, client):
    add(registry, 1, "2026-11-20")
    status = registry.studies[nct(1)]["protocolSection"]["statusModule"]["overallStatus"]
    assert list(client.iter_stamps([nct(1), nct(2)])) == [
        StudyStamp(nct(1), "2026-11-20", overall_status=status)]
    assert registry.requests[0].params["fields"] == \
        "NCTId,NCTIdAlias,LastUpdatePostDate,OverallStatus"


def test_paging_follows_next_page_token_with_the_same_params(registry, client):
    for i in range(1, 6):
        add(registry, i, conditions=["Lymphoma"])

    stamps = list(client.search_stamps(condition="lymphoma", page_size=2))

    assert [s.nct_id for s in stamps] == [nct(i) for i in range(1, 6)]
    pages = registry.requests_to("/studies")
    assert len(pages) == 3
    assert "pageToken" not in pages[0].params and pages[0].params["countTotal"] == "true"
    assert all("pageToken" in p.params for p in pages[1:])
    first = {k: v for k, v in pages[0].params.items() if k != "countTotal"}
    without_token = [{k: v for k, v in p.params.items() if k != "pageToken"} for p in pages[1:]]
    assert without_token == [first] * 2


def test_a_search_page_without_its_studies_is_a_bad_answer_not_no_matches(registry, client):
    """A valid page with no studies and no count must not pass for "no new matches": the
    query's run would count as good and the matches it hid would never be asked for again."""
    add(registry, 1, conditions=["Lymphoma"])
    registry.fault_hook = lambda _request: Fault.json({"studies": []})
    with pytest.raises(BadRegistryResponse, match="totalCount"):
        list(client.search_stamps(condition="lymphoma"))


def test_a_search_that_delivers_fewer_studies_than_it_counted_is_a_bad_answer(
        registry, client):
    for i in range(1, 4):
        add(registry, i, conditions=["Lymphoma"])
    registry.fault_hook = lambda _request: Fault.json({"studies": [], "totalCount": 3})
    with pytest.raises(BadRegistryResponse, match="0 of the 3 studies"):
        list(client.search_stamps(condition="lymphoma"))


def test_paging_stops_on_an_empty_page_despite_a_token(fake_time):
    with FakeRegistry(token_on_last_page=True) as registry:
        for i in range(1, 5):
            add(registry, i, conditions=["Asthma"])
        with RegistryClient(registry.base_url, requests_per_second=0) as client:
            stamps = list(client.search_stamps(condition="asthma", page_size=2))
        assert len(stamps) == 4
        assert len(registry.requests_to("/studies")) == 3  # 2 + 2 + empty page


def test_a_first_page_that_is_empty_ends_the_listing_even_with_a_token(registry, client):
    registry.fail_next(Fault.json({"studies": [], "nextPageToken": "more?"}))
    assert list(client.iter_stamps([nct(1)])) == []
    assert client.requests_made == 1


def test_page_size_is_sent_on_every_listing_request(registry, client):
    add(registry, 1, "2026-11-21", keywords=["CAR-T"])
    list(client.iter_stamps([nct(1)]))
    list(client.iter_studies([nct(1)]))
    list(client.search_stamps("car-t"))
    list(client.changed_since(date(2026, 11, 20)))
    listing = registry.requests_to("/studies")
    assert len(listing) == 4
    assert all("pageSize" in r.params and r.params["format"] == "json" for r in listing)


def test_iter_studies_returns_full_documents_100_ids_per_request(registry, client):
    for i in range(1, 151):
        registry.add(make_study(REAL, nct(i), "2026-11-01"))
    documents = list(client.iter_studies([nct(i) for i in range(1, 151)]))
    assert documents == [registry.studies[nct(i)] for i in range(1, 151)]
    listing = registry.requests_to("/studies")
    assert [len(r.ids) for r in listing] == [100, 50]
    assert all("fields" not in r.params for r in listing)


def test_an_alias_in_filter_ids_maps_to_the_current_record(registry, client):
    add(registry, 2)
    registry.add_alias(nct(1), nct(2))
    assert [(s.nct_id, s.last_update_posted, s.aliases) for s in client.iter_stamps([nct(1)])
            ] == [(nct(2), "2026-11-01", (nct(1),))]


def test_a_study_that_was_not_asked_for_is_skipped_and_logged(registry, client):
    registry.fail_next(Fault.json({"studies": [stamp_doc(nct(1)), stamp_doc(nct(9))]}))
    with structlog.testing.capture_logs() as logs:
        stamps = list(client.iter_stamps([nct(1), nct(2)]))
    assert [s.nct_id for s in stamps] == [nct(1)]
    assert any(e["event"] == "ctgov.unasked_study" and e["nct_id"] == nct(9) for e in logs)


def test_malformed_ids_are_refused_before_any_request(client):
    with pytest.raises(ValueError, match="not NCT ids"):
        client.iter_stamps(["NCT1", "NCT00000001&x=1"])  # refused at call time
    assert client.requests_made == 0


# ------------------------------------------------------------------ saved queries, changes


def test_search_sends_term_condition_and_updated_since(registry, client):
    add(registry, 1, "2026-11-21", brief_title="CAR-T for B-cell lymphoma", conditions=["DLBCL"])
    add(registry, 2, "2026-11-01", brief_title="CAR-T again", conditions=["DLBCL"])
    add(registry, 3, "2026-11-22", brief_title="Aspirin", conditions=["DLBCL"])

    stamps = list(client.search_stamps("car-t", "dlbcl", updated_since=date(2026, 11, 20)))

    assert [s.nct_id for s in stamps] == [nct(1)]
    params = registry.requests[0].params
    assert params["query.term"] == "car-t"
    assert params["query.cond"] == "dlbcl"
    assert params["filter.advanced"] == "AREA[LastUpdatePostDate]RANGE[2026-11-20,MAX]"


def test_changed_since_counts_on_its_first_page_and_lists_registry_wide_changes(
        registry, client):
    for n, posted in ((1, "2026-11-19"), (2, "2026-11-20"), (3, "2026-11-25")):
        add(registry, n, posted)

    changes = client.changed_since(date(2026, 11, 20))

    assert (changes.total, changes.requests) == (2, 1)
    first = registry.requests[0].params
    assert first["countTotal"] == "true" and first["pageSize"] == "1000"
    assert first["filter.advanced"] == "AREA[LastUpdatePostDate]RANGE[2026-11-20,MAX]"
    assert [s.nct_id for s in changes] == [nct(2), nct(3)]
    assert client.requests_made == 1  # the first page served the count and the stamps


def test_changed_since_asks_later_pages_without_counting_again(registry, client):
    for n in range(1, 6):
        add(registry, n, "2026-11-21")

    changes = client.changed_since(date(2026, 11, 20), page_size=2)

    assert (changes.total, changes.requests) == (5, 3)
    assert changes.cheaper_than(2) and not changes.cheaper_than(1)  # 2 pages still to come
    assert client.requests_made == 1
    assert [s.nct_id for s in changes] == [nct(n) for n in range(1, 6)]
    later = registry.requests_to("/studies")[1:]
    assert len(later) == 2
    assert all("countTotal" not in r.params and "pageToken" in r.params for r in later)


def test_changed_since_without_a_valid_total_is_a_bad_answer(registry, client):
    registry.fail_next(Fault.json({"studies": []}))
    with pytest.raises(BadRegistryResponse, match="totalCount"):
        client.changed_since(date(2026, 11, 20))


def test_version_reports_api_version_and_data_timestamp(client):
    assert client.version() == RegistryVersion("2.0.5", "2026-11-25T09:00:05")


# ------------------------------------------------------------------ single study


def test_get_study_returns_the_document(registry, client):
    registry.add(make_study(REAL, nct(1), "2026-11-01"))
    assert client.get_study(nct(1)) == FetchedStudy(nct(1), nct(1), registry.studies[nct(1)])


def test_unknown_id_raises_trial_not_found(client):
    with pytest.raises(TrialNotFound) as caught:
        client.get_study(nct(404))
    assert caught.value.nct_id == nct(404)
    assert caught.value.url.endswith(f"/studies/{nct(404)}?format=json")


def test_alias_is_followed_once_and_reported(registry, client):
    registry.add(make_study(REAL, nct(2), "2026-11-01"))
    registry.add_alias(nct(1), nct(2))

    fetched = client.get_study(nct(1))

    assert (fetched.requested_id, fetched.nct_id, fetched.alias_of) == (nct(1), nct(2), nct(2))
    assert [r.path.rsplit("/", 1)[1] for r in registry.requests] == [nct(1), nct(2)]


def test_a_document_for_another_id_is_a_bad_response(registry, client):
    registry.add(make_study(REAL, nct(1), "2026-11-01"))
    registry.fail_next(Fault.json(make_study(REAL, nct(7), "2026-11-01")))
    with pytest.raises(BadRegistryResponse, match="asked for NCT00000001, got NCT00000007"):
        client.get_study(nct(1))


# ------------------------------------------------------------------ retries


def test_429_waits_as_long_as_retry_after_says(registry, client, fake_time):
    add(registry, 1)
    registry.fail_next(Fault(status=429, headers={"Retry-After": "7"}))
    assert len(list(client.iter_stamps([nct(1)]))) == 1
    assert fake_time.sleeps == [7.0]
    assert client.requests_made == 2


def test_retry_after_as_http_date_is_honoured(registry, client, fake_time):
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    registry.fail_next(Fault(status=503, headers={"Retry-After": when}))
    client.version()
    assert 28 <= fake_time.sleeps[0] <= 30


def test_retry_after_is_capped_at_60_seconds(registry, client, fake_time):
    registry.fail_next(Fault(status=429, headers={"Retry-After": "3600"}))
    client.version()
    assert fake_time.sleeps == [60.0]


def test_500_then_200_recovers_after_a_jittered_backoff(registry, client, fake_time):
    add(registry, 1)
    registry.fail_next(Fault(status=500))
    assert [s.nct_id for s in client.iter_stamps([nct(1)])] == [nct(1)]
    assert client.requests_made == 2
    assert 0.5 <= fake_time.sleeps[0] <= 1.0


def test_503_forever_raises_unavailable_after_max_retries(registry, client, fake_time):
    registry.fault_hook = lambda request: Fault(status=503)
    with pytest.raises(RegistryUnavailable) as caught:
        list(client.iter_stamps([nct(1)]))
    assert not isinstance(caught.value, RegistryBlocked)
    assert caught.value.status_code == 503
    assert client.requests_made == 4  # 1 + max_retries
    # exponential: attempt k waits between backoff * 2**k / 2 and backoff * 2**k
    assert [2**k / 2 <= s <= 2**k for k, s in enumerate(fake_time.sleeps)] == [True] * 3


def test_403_after_retries_is_blocked_not_removed(registry, client):
    registry.fault_hook = lambda request: Fault.text(403, "Forbidden")
    with pytest.raises(RegistryBlocked, match="blocked by the registry") as caught:
        list(client.iter_stamps([nct(1)]))
    assert isinstance(caught.value, RegistryUnavailable)
    assert client.requests_made == 4


def test_read_timeout_is_retried_then_unavailable(registry, fake_time):
    registry.fault_hook = lambda request: Fault(delay=2.0)
    with (
        RegistryClient(
            registry.base_url,
            requests_per_second=0,
            timeout=0.2,
            max_retries=1,
            sleep=fake_time.sleep,
        ) as client,
        pytest.raises(RegistryUnavailable, match="timed out"),
    ):
        client.version()
    assert client.requests_made == 2
    assert len(registry.requests) == 2


def test_dropped_connection_is_retried(registry, client):
    registry.fail_next(Fault(drop=True))
    with structlog.testing.capture_logs() as logs:
        assert client.version().api_version == "2.0.5"
    assert client.requests_made == 2
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["ctgov.retry"]


def test_connection_refused_is_unavailable(fake_time):
    with FakeRegistry() as gone:
        url = gone.base_url
    with (
        RegistryClient(url, requests_per_second=0, max_retries=2, sleep=fake_time.sleep) as client,
        pytest.raises(RegistryUnavailable),
    ):
        client.version()
    assert client.requests_made == 3


# ------------------------------------------------------------------ bad answers


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        (Fault.html(), "expected JSON, got HTML"),
        (Fault(truncate=True), "invalid or truncated JSON"),
        (Fault(body=b""), "empty response body"),
        (Fault.json({"items": []}), "JSON without a 'studies' list"),
        (
            Fault.json({"studies": [{"protocolSection": {"statusModule": {}}}]}),
            "a study without a valid NCT id",
        ),
        (Fault.json({"studies": [stamp_doc("NCT1234")]}), "a study without a valid NCT id"),
        (Fault.json({"studies": [], "nextPageToken": 42}), "nextPageToken is not a string"),
    ],
    ids=["html", "truncated", "empty", "no-studies", "no-nct-id", "bad-nct-id", "bad-token"],
)
def test_a_bad_listing_page_raises_instead_of_looking_empty(registry, client, fault, reason):
    add(registry, 1)
    registry.fail_next(fault)
    with pytest.raises(BadRegistryResponse, match=reason):
        list(client.iter_stamps([nct(1)]))
    assert client.requests_made == 1  # bad answers are not retried


def test_a_bad_page_after_good_ones_raises_after_the_good_stamps(registry, client):
    for i in range(1, 6):
        add(registry, i, conditions=["Asthma"])
    registry.fail_next(None, Fault.html())
    seen: list[str] = []
    with pytest.raises(BadRegistryResponse):
        seen.extend(s.nct_id for s in client.search_stamps(condition="asthma", page_size=2))
    assert seen == [nct(1), nct(2)]


def test_html_error_page_for_one_study_is_a_bad_response(registry, client):
    registry.add(make_study(REAL, nct(1), "2026-11-01"))
    registry.fail_next(Fault.html())
    with pytest.raises(BadRegistryResponse, match="expected JSON, got HTML"):
        client.get_study(nct(1))


def test_400_carries_the_registry_text_on_one_line(registry, client):
    registry.fail_next(Fault.text(400, "Invalid value for pageSize:\n  5000 is above 1000"))
    with pytest.raises(BadRegistryResponse) as caught:
        list(client.iter_stamps([nct(1)]))
    message = str(caught.value)
    assert "Invalid value for pageSize: 5000 is above 1000" in message
    assert "\n" not in message and caught.value.url in message
    assert caught.value.status_code == 400


# ------------------------------------------------------------------ politeness


def test_rate_limit_spaces_requests(registry, fake_time):
    with RegistryClient(
        registry.base_url, requests_per_second=2, sleep=fake_time.sleep, clock=fake_time.clock
    ) as client:
        for _ in range(3):
            client.version()
    assert fake_time.sleeps == [0.5, 0.5]


def test_zero_requests_per_second_means_unlimited(registry, client, fake_time):
    for _ in range(3):
        client.version()
    assert fake_time.sleeps == []


def test_user_agent_names_trialwatch_and_its_version(registry, client):
    client.version()
    assert registry.requests[0].headers["user-agent"] == (
        f"trialwatch/{trialwatch.monitor.__version__} (+https://github.com/trialwatch/trialwatch)"
    )


def test_transport_is_swappable():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"apiVersion": "9", "dataTimestamp": "t"})

    with RegistryClient(transport=httpx.MockTransport(handler), requests_per_second=0) as c:
        assert c.version() == RegistryVersion("9", "t")


# ------------------------------------------------------------------ the fake itself


def test_fake_registry_serves_changes_made_between_cycles(registry, client):
    add(registry, 1, "2026-11-01")
    first = list(client.iter_stamps([nct(1)]))
    add(registry, 1, "2026-11-24", overall_status="COMPLETED")
    del registry.studies[nct(1)]
    assert list(client.iter_stamps([nct(1)])) == []
    add(registry, 1, "2026-11-24")
    assert first != list(client.iter_stamps([nct(1)]))
