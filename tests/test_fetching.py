"""The fetch stage (``trialwatch.monitor.cycle.fetching``): pages of documents, parsed and
compressed, in order,
in the calling process or in a forked worker, against the real local registry."""

from __future__ import annotations

import itertools
import os
import pickle
import subprocess

import orjson
import pytest
from daemon_helpers import base_env, trialwatch
from registry_server import Fault, load_fixture, make_study, nct

from trialwatch.monitor.cycle import fetching
from trialwatch.monitor.cycle.fetching import (
    fetch_pages,
    prepare_studies,
    safe_to_fork,
    worker_pays_off,
    worth_a_worker,
)
from trialwatch.monitor.sources.ctgov.client import (
    BadRegistryResponse,
    RegistryBlocked,
    RegistryClient,
    RegistryUnavailable,
    TrialNotFound,
)
from trialwatch.monitor.sources.ctgov.parser import parse_study
from trialwatch.storage.engine import open_database
from trialwatch.storage.models import Version
from trialwatch.storage.raw_codec import decompress_raw

TEMPLATE = load_fixture("NCT03934567.json")


def _populate(registry, count: int) -> list[str]:
    ids = [nct(i) for i in range(1, count + 1)]
    for i, nct_id in enumerate(ids):
        registry.add(make_study(TEMPLATE, nct_id, f"2026-0{1 + i % 9}-1{i % 10}"))
    return ids


def _chunks(ids: list[str], size: int) -> list[list[str]]:
    return [ids[i:i + size] for i in range(0, len(ids), size)]


def _summary(pages) -> list[tuple]:
    """What a page list says, comparable across processes."""
    return [(page.nct_ids, None if page.error is None else str(page.error),
             [(s.record.content_hash if s.record else None, decompress_raw(s.compressed_raw)
               if s.record else None, s.error) for s in page.studies]) for page in pages]


def test_prepared_study_keeps_the_parsed_record_and_the_document_compressed():
    document = make_study(TEMPLATE, nct(7), "2026-03-01")
    [study] = prepare_studies([document])
    assert study.error is None and study.record is not None
    assert study.record.content_hash == parse_study(document).content_hash
    assert orjson.loads(decompress_raw(study.compressed_raw)) == document


def test_a_document_that_does_not_parse_is_prepared_as_its_error():
    broken = make_study(TEMPLATE, nct(7), "2026-03-01")
    broken["protocolSection"]["identificationModule"]["nctId"] = "NCT12"
    [study] = prepare_studies([broken])
    assert study.record is None and study.compressed_raw == b""
    assert "NCT12" in (study.error or "")


def test_pages_come_in_chunk_order_with_every_study(registry):
    ids = _populate(registry, 7)
    with RegistryClient(registry.base_url, requests_per_second=0) as client:
        pages = list(fetch_pages(client, _chunks(ids, 3), page_size=3))
    assert [page.nct_ids for page in pages] == [tuple(ids[0:3]), tuple(ids[3:6]), (ids[6],)]
    assert [s.record.nct_id for page in pages for s in page.studies if s.record] == ids


def test_a_failed_page_is_an_error_page_and_the_next_pages_still_come(registry):
    ids = _populate(registry, 6)
    registry.fail_next(Fault.html())
    with RegistryClient(registry.base_url, requests_per_second=0, max_retries=0) as client:
        pages = list(fetch_pages(client, _chunks(ids, 3), page_size=3))
    assert isinstance(pages[0].error, BadRegistryResponse) and pages[0].studies == ()
    assert pages[1].error is None and len(pages[1].studies) == 3


def test_the_worker_process_delivers_exactly_what_the_calling_process_would(registry):
    ids = _populate(registry, 10)
    registry.fail_next(None, Fault(status=503))
    chunks = _chunks(ids, 3)
    with RegistryClient(registry.base_url, requests_per_second=0, max_retries=0) as client:
        in_worker = list(fetch_pages(client, chunks, page_size=3, worker=True))
    registry.fail_next(None, Fault(status=503))
    with RegistryClient(registry.base_url, requests_per_second=0, max_retries=0) as client:
        inline = list(fetch_pages(client, chunks, page_size=3))
    assert _summary(in_worker) == _summary(inline)
    assert isinstance(in_worker[1].error, RegistryUnavailable)


def test_requests_made_by_the_worker_are_counted_in_the_callers_client(registry):
    ids = _populate(registry, 9)
    with RegistryClient(registry.base_url, requests_per_second=0) as client:
        pages = list(fetch_pages(client, _chunks(ids, 3), page_size=3, worker=True))
        assert client.requests_made == 3
    assert [page.requests for page in pages] == [1, 1, 1]
    assert len(registry.requests_to("/studies")) == 3


def test_a_worker_that_dies_leaves_its_undelivered_pages_failed(registry, monkeypatch):
    ids = _populate(registry, 9)
    parent = os.getpid()

    def dies_on_the_second_page(documents):
        documents = list(documents)
        if os.getpid() != parent and documents[0]["protocolSection"][
                "identificationModule"]["nctId"] == ids[3]:
            os._exit(3)  # the forked worker, killed mid-way
        return prepare_studies(documents)

    monkeypatch.setattr(fetching, "prepare_studies", dies_on_the_second_page)
    with RegistryClient(registry.base_url, requests_per_second=0) as client:
        pages = list(fetch_pages(client, _chunks(ids, 3), page_size=3, worker=True))
    assert pages[0].error is None and len(pages[0].studies) == 3
    assert [page.nct_ids for page in pages[1:]] == [tuple(ids[3:6]), tuple(ids[6:9])]
    assert all(isinstance(page.error, RegistryUnavailable) for page in pages[1:])
    assert "exit code 3" in str(pages[1].error)


def test_the_rate_limit_continues_through_the_worker_and_back(registry):
    ids = _populate(registry, 6)
    rate = 10.0  # one request per 0.1 s
    with RegistryClient(registry.base_url, requests_per_second=rate) as client:
        client.version()
        list(fetch_pages(client, _chunks(ids, 2), page_size=2, worker=True))
        client.version()
    sent = [r.received_at for r in registry.requests]
    gaps = [later - earlier for earlier, later in itertools.pairwise(sent)]
    assert len(sent) == 5
    assert min(gaps) >= 1 / rate - 0.01, gaps


@pytest.mark.parametrize(("pages", "requests_per_second", "worth_it"), [
    (100, 0, True), (3, 0, True), (2, 0, False), (100, 10.0, True), (100, 1.0, False)])
def test_a_worker_is_worth_it_for_many_pages_at_a_fast_enough_rate(
        pages, requests_per_second, worth_it):
    assert worth_a_worker(pages, requests_per_second) is worth_it


def test_no_worker_is_forked_from_a_process_running_other_threads(registry):
    # the local registry's server thread runs in this process
    assert not safe_to_fork()
    with RegistryClient(registry.base_url, requests_per_second=0) as client:
        assert not worker_pays_off(client, 100)


@pytest.mark.parametrize("error", [
    RegistryUnavailable("registry unavailable: HTTP 503 after 5 attempts", url="http://x/y",
                        status_code=503),
    RegistryBlocked("blocked by the registry", url="http://x/y", status_code=403),
    BadRegistryResponse("invalid or truncated JSON", url="http://x/z"),
    TrialNotFound("NCT00000001", "NCT00000001 not found", url="http://x/s"),
])
def test_registry_errors_cross_the_process_boundary_whole(error):
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert (str(copy), copy.url, copy.status_code) == (str(error), error.url, error.status_code)
    assert getattr(copy, "nct_id", None) == getattr(error, "nct_id", None)


def test_check_imports_many_pages_through_the_worker_and_stores_every_record(tmp_path, registry):
    """``trialwatch check`` (one thread: the worker is used) over 350 trials = 4 pages."""
    ids = _populate(registry, 350)
    config = tmp_path / "trialwatch.toml"
    config.write_text(f'[ctgov]\nbase_url = "{registry.base_url}"\nrequests_per_second = 0\n')
    db_url = f"sqlite:///{tmp_path / 'tw.db'}"
    base = [*trialwatch("--config", str(config), "--db", db_url)]
    env = base_env()
    watched = subprocess.run([*base, "watch", "--offline", *ids], env=env,
                             capture_output=True, text=True, timeout=120)
    assert watched.returncode == 0, watched.stderr
    checked = subprocess.run([*base, "check", "--json"], env=env, capture_output=True,
                             text=True, timeout=120)
    assert checked.returncode == 0, checked.stderr
    body = orjson.loads(checked.stdout)
    assert body["failures"] == []
    assert body["requests"] == 1 + 1 + 4  # version, one listing, 4 fetch pages
    assert sorted(r["nct_id"] for r in body["records"]) == ids
    db = open_database(db_url)
    with db.transaction() as session:
        stored = {v.canonical["nct_id"]: v for v in session.query(Version)}
        assert sorted(stored) == ids
        assert orjson.loads(decompress_raw(stored[ids[0]].raw)) == registry.studies[ids[0]]
    db.close()


def test_a_parser_bug_on_one_document_fails_that_document_not_its_page(monkeypatch):
    good = make_study(TEMPLATE, nct(1), "2026-03-01")
    odd = make_study(TEMPLATE, nct(2), "2026-03-01")

    def parse_or_break(document):
        if document is odd:
            raise KeyError("a parser bug")
        return parse_study(document)

    monkeypatch.setattr(fetching, "parse_study", parse_or_break)
    first, second = prepare_studies([good, odd])
    assert first.record is not None and first.record.nct_id == nct(1)
    assert second.record is None and "unexpected parser error" in (second.error or "")


def test_a_clone_keeps_settings_changed_after_construction(registry):
    with RegistryClient(registry.base_url, requests_per_second=12.5, max_retries=1) as client:
        client.max_url_length = 2000
        with client.clone() as twin:
            assert twin.ids_per_listing_request() == client.ids_per_listing_request() < 600
            assert (twin.requests_per_second, twin.max_retries) == (12.5, 1)
            assert twin.listing_requests(1000) == client.listing_requests(1000)
