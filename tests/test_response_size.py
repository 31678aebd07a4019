"""Registry answers are read streamed under ``ctgov.max_response_size``: past it, a bad answer.

A real local server streams a body far larger than the cap (without a Content-Length, so
only reading tells); the client stops reading at the cap, holds no more than that, and the
cycle treats the request like any bad answer: logged with the URL, counted as a failure, no
version, tried again next cycle.
"""

from __future__ import annotations

import threading
import tracemalloc
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from registry_server import FakeRegistry, Fault, load_fixture, make_study, nct
from sqlalchemy import func, select

from trialwatch.monitor.cycle.run import run_cycle
from trialwatch.monitor.cycle.watchlist import add_trials
from trialwatch.monitor.sources.ctgov.client import BadRegistryResponse, RegistryClient
from trialwatch.storage.engine import Database
from trialwatch.storage.models import Version

MB = 1024 * 1024
CHUNK = b" " * (64 * 1024)


class EndlessServer:
    """Answers every GET with 200, JSON, and up to ``total`` bytes of spaces, chunk by chunk
    (no Content-Length unless ``declare``); counts what it managed to send."""

    def __init__(self, total: int, *, declare: bool = False) -> None:
        self.total, self.declare, self.sent = total, declare, 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                if server.declare:
                    self.send_header("Content-Length", str(server.total))
                self.end_headers()
                try:
                    while server.sent < server.total:
                        self.wfile.write(CHUNK)
                        server.sent += len(CHUNK)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}/api/v2"

    def __enter__(self) -> EndlessServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def endless() -> Iterator[EndlessServer]:
    with EndlessServer(2048 * MB) as server:  # 2 GB on offer
        yield server


def test_an_answer_past_the_cap_is_a_bad_answer_naming_the_limit_and_url(endless):
    with (RegistryClient(endless.url, requests_per_second=0, max_response_size=MB) as client,
          pytest.raises(BadRegistryResponse) as caught):
        client.version()
    assert "larger than the 1 MB limit (ctgov.max_response_size)" in str(caught.value)
    assert caught.value.url is not None and caught.value.url.endswith("/api/v2/version")


def test_reading_stops_at_the_cap_so_memory_stays_bounded(endless):
    tracemalloc.start()
    try:
        with RegistryClient(endless.url, requests_per_second=0,
                            max_response_size=4 * MB) as client, pytest.raises(BadRegistryResponse):
            client.version()
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * MB  # the cap and a few chunks, not the 2 GB on offer
    assert endless.sent < 64 * MB  # the client hung up instead of reading on


def test_a_declared_length_past_the_cap_is_refused_before_reading():
    with EndlessServer(200 * MB, declare=True) as server:
        with (RegistryClient(server.url, requests_per_second=0, max_response_size=MB) as client,
              pytest.raises(BadRegistryResponse, match="larger than the 1 MB limit")):
            client.version()
        assert server.sent < 64 * MB


def test_an_answer_within_the_cap_is_read_whole(registry):
    registry.add(make_study(load_fixture("NCT03934567.json"), nct(1), "2026-11-01"))
    with RegistryClient(registry.base_url, requests_per_second=0,
                        max_response_size=MB) as client:
        assert client.get_study(nct(1)).nct_id == nct(1)


def versions(db: Database) -> int:
    with db.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(Version)) or 0)


def test_an_oversized_page_fails_its_trials_and_they_are_fetched_next_cycle(
        db: Database, registry: FakeRegistry) -> None:
    registry.add(make_study(load_fixture("NCT03934567.json"), nct(1), "2026-11-01"))
    add_trials(db, [nct(1)])
    oversized = Fault(body=b'{"studies": [' + b" " * (2 * MB) + b"]}")
    registry.fault_hook = lambda r: oversized if "fields" not in r.params and \
        r.path.endswith("/studies") else None
    with RegistryClient(registry.base_url, requests_per_second=0, max_retries=0,
                        max_response_size=MB) as client:
        report = run_cycle(db, client)
        assert report.outcome == "partial"
        assert any("larger than the 1 MB limit" in f and "/studies" in f
                   for f in report.failures)
        assert versions(db) == 0
        registry.fault_hook = None
        registry.data_timestamp = "2026-11-26T09:00:00"
        again = run_cycle(db, client)
    assert again.outcome == "ok" and again.fetched == 1
    assert versions(db) == 1
