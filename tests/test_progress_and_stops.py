"""Long work on a pipe logs a progress line at most every few seconds; a cycle stopped by
SIGTERM is recorded as ``stopped`` (not ``partial`` with "trialwatch is stopping"); a failed
cycle's log line says why and how many trials it covered.

Cycles run against the real local registry (``tests/registry_server.py``) with the daemon's
own stop-aware transport; the daemon's SIGTERM end to end is in ``tests/test_daemon.py``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from registry_server import FakeRegistry, Fault, LoggedRequest, load_fixture, make_study, nct
from sqlalchemy import func, select
from structlog.testing import capture_logs

from trialwatch.monitor.cycle.run import run_cycle
from trialwatch.monitor.cycle.watchlist import add_trials
from trialwatch.monitor.progress import ProgressLog
from trialwatch.monitor.service.daemon import StopAwareTransport
from trialwatch.monitor.sources.ctgov.client import RegistryClient
from trialwatch.storage.engine import Database
from trialwatch.storage.models import Cycle, Version

TEMPLATE = load_fixture("NCT03934567.json")


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def default_structlog() -> Iterator[None]:
    """What an earlier in-process command configured (a warning-level filter) would hide the
    info lines these tests read: start from structlog's defaults, and leave them after."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


def populate(registry: FakeRegistry, count: int) -> list[str]:
    ids = [nct(i + 1) for i in range(count)]
    for nct_id in ids:
        registry.add(make_study(TEMPLATE, nct_id, "2026-11-01", overall_status="RECRUITING"))
    return ids


def is_full_fetch(request: LoggedRequest) -> bool:
    return request.path.endswith("/studies") and "fields" not in request.params


def stored(db: Database, model: Any) -> int:
    with db.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_progress_logs_nothing_for_work_shorter_than_the_interval() -> None:
    clock = FakeClock()
    progress = ProgressLog("ingest", total=50, every=5.0, clock=clock)
    with capture_logs() as logs:
        for _ in progress.over(range(50)):
            clock.now += 0.09  # 4.5 s in all
    assert logs == []


def test_progress_logs_at_most_one_line_per_interval() -> None:
    clock = FakeClock()
    progress = ProgressLog("ingest", total=1000, every=5.0, clock=clock)
    with capture_logs() as logs:
        for _ in progress.over(range(1000)):
            clock.now += 0.125  # 125 s in all: one line per 5 s, not one per item
    assert len(logs) == 25
    assert logs[0] == {"event": "progress", "log_level": "info", "task": "ingest",
                       "done": 40, "total": 1000, "elapsed_s": 5}
    assert [line["done"] for line in logs] == list(range(40, 1001, 40))


def test_a_cycle_stopped_midway_is_recorded_as_stopped_not_partial(
        db: Database, registry: FakeRegistry) -> None:
    add_trials(db, populate(registry, 200))  # two fetch pages of 100
    stop = threading.Event()

    def sigterm_during_the_first_page(request: LoggedRequest) -> Fault | None:
        if is_full_fetch(request):
            stop.set()  # the page in flight is answered; the next request is refused
        return None

    registry.fault_hook = sigterm_during_the_first_page
    client = RegistryClient(registry.base_url, requests_per_second=0, max_retries=0,
                            transport=StopAwareTransport(stop), sleep=stop.wait)
    with client, capture_logs() as logs:
        report = run_cycle(db, client, should_stop=stop.is_set)
    assert report.outcome == "stopped" and report.failures == []
    assert report.skipped == 100 and report.fetched == 100
    assert stored(db, Version) == 100  # what was fetched before the stop is kept
    with db.transaction() as session:
        row = session.scalars(select(Cycle)).one()
        assert (row.outcome, row.failures, row.error) == ("stopped", 0, None)
    (finished,) = [line for line in logs if line["event"] == "cycle.finished"]
    assert finished["outcome"] == "stopped" and finished["log_level"] == "info"
    assert finished["covered"] == 100 and finished["skipped"] == 100
    assert not any("stopping" in str(line.get("reason", "")) and line["log_level"] == "warning"
                   for line in logs)


def test_a_stop_before_the_first_request_is_stopped_too(
        db: Database, registry: FakeRegistry) -> None:
    add_trials(db, populate(registry, 2))
    stop = threading.Event()
    stop.set()
    client = RegistryClient(registry.base_url, requests_per_second=0, max_retries=0,
                            transport=StopAwareTransport(stop))
    with client:
        report = run_cycle(db, client, should_stop=stop.is_set)
    assert report.outcome == "stopped" and report.failures == []
    assert registry.requests == []


def test_a_failed_cycles_log_line_says_why_and_how_many_trials_it_covered(
        db: Database, registry: FakeRegistry) -> None:
    ids = populate(registry, 150)
    add_trials(db, ids)
    registry.fault_hook = lambda r: (Fault(status=500) if is_full_fetch(r) and ids[0] in r.ids
                                     else None)
    with RegistryClient(registry.base_url, requests_per_second=0, max_retries=0,
                        sleep=lambda _s: None) as client, capture_logs() as logs:
        report = run_cycle(db, client)
    assert report.outcome == "partial"
    (finished,) = [line for line in logs if line["event"] == "cycle.finished"]
    assert finished["log_level"] == "warning"
    assert finished["watched"] == 150 and finished["covered"] == 50
    assert finished["error"].startswith(f"fetch {ids[0]}..{ids[99]} (100 trials): ")
    assert "500" in finished["error"]


def test_a_cycle_with_the_registry_down_covers_no_trial(
        db: Database, registry: FakeRegistry) -> None:
    add_trials(db, populate(registry, 3))
    registry.fault_hook = lambda _r: Fault(status=503)
    with RegistryClient(registry.base_url, requests_per_second=0, max_retries=0,
                        sleep=lambda _s: None) as client, capture_logs() as logs:
        report = run_cycle(db, client)
    assert report.outcome == "failed"
    (finished,) = [line for line in logs if line["event"] == "cycle.finished"]
    assert finished["covered"] == 0 and finished["error"].startswith("registry: ")


def test_progress_goes_to_the_configured_logger() -> None:
    """The helper logs through structlog (JSON lines on a pipe), named ``progress``."""
    clock = FakeClock()
    progress = ProgressLog("backfill NCT03934567", every=1.0, clock=clock,
                           logger=structlog.get_logger("trialwatch"))
    with capture_logs() as logs:
        clock.now = 1.5
        progress.advance(3)
    assert logs == [{"event": "progress", "log_level": "info",
                     "task": "backfill NCT03934567", "done": 3, "total": None,
                     "elapsed_s": 2}]
