"""Several workers on one PostgreSQL database: each cycle's trials split by leases, each
fetched once, each alert delivered once, a killed worker's batch taken over.

Workers are ``run_cycle`` calls in threads, each with its own engine and registry client
(as separate ``trialwatch run`` processes would have), against the local FakeRegistry; the
killed worker is a real subprocess ended with SIGKILL while it holds a lease.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from registry_server import FakeRegistry, Fault, LoggedRequest, load_fixture, make_study, nct
from sqlalchemy import func, insert, select
from subscriptions import EveryEvent

from trialwatch.monitor.cycle.run import CycleReport, run_cycle
from trialwatch.monitor.cycle.watchlist import add_query
from trialwatch.monitor.sources.ctgov.client import RegistryClient
from trialwatch.notifiers.outbox import DeliveryPolicy, deliver_due
from trialwatch.notifiers.registry import build_channel
from trialwatch.storage.engine import Database, open_database
from trialwatch.storage.models import CycleRound, Event, OutboxEntry, Trial, Version
from trialwatch.storage.schema import ensure_schema

pytestmark = pytest.mark.postgres

TESTS = Path(__file__).resolve().parent
TEMPLATE = load_fixture("NCT03934567.json")
TRIALS = 1000
BATCH = 100  # small batches so every worker gets a share of 1,000 trials
LEASE = timedelta(seconds=2)
TODAY = datetime.now(UTC).date().isoformat()  # changes posted after the first cycle ran


@pytest.fixture
def db(pg_url: str) -> Iterator[Database]:
    database = open_database(pg_url)
    ensure_schema(database)
    yield database
    database.close()


def populate(registry: FakeRegistry, count: int) -> list[str]:
    ids = [nct(i + 1) for i in range(count)]
    for nct_id in ids:
        registry.add(make_study(TEMPLATE, nct_id, "2026-11-01", overall_status="RECRUITING"))
    return ids


def watch(db: Database, ids: list[str]) -> None:
    """Watch the trials with one multi-row INSERT (``add_trials`` goes one by one)."""
    now = datetime.now(UTC)
    with db.transaction() as session:
        session.execute(insert(Trial), [{"nct_id": i, "first_seen_at": now, "watched": True}
                                        for i in ids])


def full_fetches(registry: FakeRegistry, *, exclude_agent: str | None = None) -> Counter[str]:
    """How many times each NCT id was asked for as a full document (not a stamp listing)."""
    def counted(request: LoggedRequest) -> bool:
        return "fields" not in request.params and (
            exclude_agent is None or request.headers.get("user-agent") != exclude_agent)

    return Counter(i for r in registry.requests_to("/studies") if counted(r) for i in r.ids)


def in_threads(count: int, body: Callable[[int, Database], Any], url: str) -> list[Any]:
    """Run ``body(k, own database)`` in ``count`` threads started together; their results."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count
    errors: list[BaseException] = []

    def work(k: int) -> None:
        database = open_database(url)
        try:
            barrier.wait()
            results[k] = body(k, database)
        except BaseException as exc:
            errors.append(exc)
        finally:
            database.close()

    threads = [threading.Thread(target=work, args=(k,)) for k in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    if errors:
        raise errors[0]
    return results


def cycle_in_workers(count: int, url: str, registry: FakeRegistry,
                     **options: Any) -> list[CycleReport]:
    def body(k: int, database: Database) -> CycleReport:
        with RegistryClient(registry.base_url, requests_per_second=0) as client:
            return run_cycle(database, client, subscriptions=[EveryEvent("hook")],
                             worker=f"worker-{k}", lease=LEASE, lease_batch=BATCH, **options)

    return in_threads(count, body, url)


def scalar(db: Database, stmt: Any) -> Any:
    with db.transaction() as session:
        return session.scalar(stmt)


@pytest.mark.parametrize("workers", [2, 3])
def test_workers_fetch_every_trial_once_per_cycle_and_deliver_every_alert_once(
        db, pg_url, registry, hook, workers):
    ids = populate(registry, TRIALS)
    watch(db, ids)

    first = cycle_in_workers(workers, pg_url, registry)
    fetched = full_fetches(registry)
    assert set(fetched) == set(ids) and set(fetched.values()) == {1}
    assert sum(r.fetched for r in first) == TRIALS
    assert all(r.outcome == "ok" and r.watched > 0 for r in first), "every worker got a share"
    assert len({r.round_id for r in first}) == 1
    assert scalar(db, select(func.count()).select_from(Version)) == TRIALS

    registry.requests.clear()  # same data load again: the round is done, nothing to do
    again = cycle_in_workers(workers, pg_url, registry)
    assert {r.strategy for r in again} == {"unchanged-data"}
    assert [r.path for r in registry.requests] == ["/api/v2/version"] * workers

    changed = ids[5::17]  # 59 trials spread over every batch
    for nct_id in changed:
        registry.studies[nct_id] = make_study(registry.studies[nct_id], nct_id, TODAY,
                                              overall_status="COMPLETED")
    registry.data_timestamp = f"{TODAY}T23:00:00"
    registry.requests.clear()
    # a week of data time later: re-verification off, this pins the listing
    second = cycle_in_workers(workers, pg_url, registry, reverify_every=timedelta(0))
    assert full_fetches(registry) == Counter(dict.fromkeys(changed, 1))
    # one registry-wide "changed since" listing for the round beats ten per-batch listings
    assert {r.strategy for r in second} == {"changed-since"}
    assert len(registry.requests_to("/studies")) <= 2 + TRIALS // BATCH
    assert sorted(e.nct_id for r in second for e in r.events) == sorted(changed)
    assert scalar(db, select(func.count()).select_from(OutboxEntry)) == len(changed)

    hook.delay = 0.005  # let the workers' delivery passes interleave

    def deliver(k: int, database: Database) -> int:
        channel = build_channel("hook", {"type": "webhook", "url": hook.url}, {})
        return deliver_due(database, {"hook": channel}, DeliveryPolicy(batch=5)).delivered

    delivered = in_threads(workers, deliver, pg_url)
    assert sum(delivered) == len(changed)
    webhook_ids = [r.headers["webhook-id"] for r in hook.requests]
    assert len(webhook_ids) == len(set(webhook_ids)) == len(changed)
    assert sorted(r.json()["nct_id"] for r in hook.requests) == sorted(changed)
    with db.transaction() as session:
        rows = session.execute(select(OutboxEntry.status, OutboxEntry.attempts)).all()
    assert set(rows) == {("delivered", 1)}


def test_a_worker_killed_while_holding_a_lease_has_its_batch_finished_by_the_others(
        db, pg_url, registry):
    ids = populate(registry, 400)  # four batches: the victim holds one
    watch(db, ids)
    # The victim's full fetch hangs (a slow registry), so it is killed holding its lease.
    registry.fault_hook = lambda r: Fault(delay=60) if (
        r.headers.get("user-agent") == "victim" and "fields" not in r.params
        and r.path.endswith("/studies")) else None
    script = textwrap.dedent(f"""
        import sys
        from datetime import UTC, datetime, timedelta
        from trialwatch.monitor.cycle.run import run_cycle
        from trialwatch.monitor.sources.ctgov.client import RegistryClient
        from trialwatch.storage.engine import open_database

        db = open_database({pg_url!r})
        with RegistryClient({registry.base_url!r}, requests_per_second=0, user_agent="victim",
                            timeout=120, max_retries=0) as client:
            run_cycle(db, client, worker="victim", lease=timedelta(seconds={LEASE.seconds}),
                      lease_batch={BATCH})
        sys.exit("the victim should never finish")
        """)
    victim = subprocess.Popen([sys.executable, "-c", script], cwd=TESTS.parent,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        held = 0
        while time.monotonic() < deadline and victim.poll() is None:
            hanging = [r for r in registry.requests_to("/studies")
                       if r.headers.get("user-agent") == "victim" and "fields" not in r.params]
            held = scalar(db, select(func.count()).select_from(Trial)
                          .where(Trial.lease_owner.like("victim/%")))
            if hanging and held:
                break
            time.sleep(0.05)
        assert victim.poll() is None, victim.stderr.read().decode() if victim.stderr else ""
        assert held == BATCH
        victim_ids = set(hanging[0].ids)
        os.kill(victim.pid, signal.SIGKILL)
        assert victim.wait(10) == -signal.SIGKILL
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait(10)

    survivors = cycle_in_workers(2, pg_url, registry)
    fetched = full_fetches(registry, exclude_agent="victim")
    assert set(fetched) == set(ids) and set(fetched.values()) == {1}
    assert victim_ids <= set(fetched)
    assert sum(r.watched for r in survivors) == len(ids)
    assert all(r.outcome == "ok" for r in survivors)
    with db.transaction() as session:
        assert session.scalar(select(func.count()).select_from(Version)) == len(ids)
        assert session.scalar(select(func.count()).select_from(Trial)
                              .where(Trial.lease_owner.is_not(None))) == 0
        (round_row,) = session.scalars(select(CycleRound)).all()
        assert round_row.closed_at is not None and round_row.checked == len(ids)
        assert round_row.workers == 3


def test_new_query_matches_give_one_new_trial_event_across_workers(db, pg_url, registry):
    watch(db, populate(registry, 300)[100:])
    registry.add(make_study(TEMPLATE, nct(1001), "2026-11-01", conditions=["Lupus"]))
    add_query(db, "lupus", term=None, condition="lupus")
    first = cycle_in_workers(3, pg_url, registry)
    assert [e for r in first for e in r.events] == []  # the query's baseline: no alerts
    for number in (1002, 1003):
        registry.add(make_study(TEMPLATE, nct(number), TODAY,
                                conditions=["Lupus nephritis"]))
    registry.data_timestamp = f"{TODAY}T23:00:00"
    registry.requests.clear()
    # the first fetch of the new matches fails: their new_trial alerts must survive it
    registry.fault_hook = lambda r: Fault.html() if (
        "fields" not in r.params and nct(1003) in r.ids) else None
    second = cycle_in_workers(3, pg_url, registry)
    assert [e for r in second for e in r.events] == []
    assert any(r.failures for r in second)
    registry.fault_hook = None
    registry.requests.clear()
    third = cycle_in_workers(3, pg_url, registry)  # a new round: the last one had failures
    events = sorted((e.nct_id, e.kind) for r in third for e in r.events)
    assert events == [(nct(1002), "new_trial"), (nct(1003), "new_trial")]
    assert full_fetches(registry) == Counter({nct(1002): 1, nct(1003): 1})
    with db.transaction() as session:
        assert session.scalar(select(func.count()).select_from(Trial)
                              .where(Trial.watched.is_(True))) == 203


def test_a_round_with_failures_is_followed_by_a_new_round_that_retries_them(
        db, pg_url, registry):
    ids = populate(registry, 300)
    watch(db, ids)
    broken = set(ids[100:200])
    registry.fault_hook = lambda r: Fault.html() if (
        "fields" not in r.params and broken & set(r.ids)) else None
    first = cycle_in_workers(2, pg_url, registry)
    assert {r.outcome for r in first} >= {"partial"}
    assert scalar(db, select(func.count()).select_from(Version)) == 200
    registry.fault_hook = None
    registry.requests.clear()
    second = cycle_in_workers(2, pg_url, registry)  # same data load, but the round failed
    assert full_fetches(registry) == Counter(dict.fromkeys(broken, 1))
    assert len({r.round_id for r in second} | {r.round_id for r in first}) == 2
    assert scalar(db, select(func.count()).select_from(Version)) == 300
    assert scalar(db, select(func.count()).select_from(Event)) == 0


def test_a_worker_whose_lease_was_taken_over_writes_nothing(db, pg_url, registry):
    ids = populate(registry, 20)
    watch(db, ids)
    slow = threading.Event()
    registry.fault_hook = lambda r: Fault(delay=1.5) if (
        r.headers.get("user-agent") == "slow" and "fields" not in r.params
        and r.path.endswith("/studies") and not slow.is_set()) else None
    results: dict[str, CycleReport] = {}

    def slow_worker() -> None:
        database = open_database(pg_url)
        with RegistryClient(registry.base_url, requests_per_second=0, user_agent="slow") as c:
            results["slow"] = run_cycle(database, c, worker="slow",
                                        lease=timedelta(seconds=0.5), lease_batch=BATCH)
        database.close()

    thread = threading.Thread(target=slow_worker)
    thread.start()
    while not any(r.headers.get("user-agent") == "slow" and "fields" not in r.params
                  for r in registry.requests_to("/studies")):
        time.sleep(0.02)
    time.sleep(0.6)  # its lease has expired while its fetch hangs: another worker takes over
    (fast,) = cycle_in_workers(1, pg_url, registry)
    slow.set()
    thread.join(30)
    assert fast.fetched == 20
    assert results["slow"].fetched == 0  # its documents arrived after it lost the lease
    assert scalar(db, select(func.count()).select_from(Version)) == 20
    assert scalar(db, select(func.max(Version.version))) == 1


# Batches sized by requests. A client whose URL limit lets one listing request carry 48 ids
# and a lease_batch that is not a multiple of it, as ~600 and 1000 are in production.
SHORT_URLS = 900
UNEVEN_BATCH = 60
SMALL_BATCH = 50  # with the default URL limit: 300 trials in six batches


def one_cycle(db: Database, registry: FakeRegistry, *, max_url_length: int | None = None,
              **options: Any) -> CycleReport:
    client_options = {"max_url_length": max_url_length} if max_url_length else {}
    with RegistryClient(registry.base_url, requests_per_second=0, **client_options) as client:
        return run_cycle(db, client, worker="one", lease=LEASE, **options)


def listing_requests(registry: FakeRegistry) -> list[LoggedRequest]:
    return [r for r in registry.requests_to("/studies") if "filter.ids" in r.params
            and "fields" in r.params]


def full_fetch_requests(registry: FakeRegistry) -> list[LoggedRequest]:
    return [r for r in registry.requests_to("/studies") if "fields" not in r.params]


def test_an_ids_round_lists_in_as_few_requests_as_one_listing_of_every_watched_id(
        db, registry):
    ids = populate(registry, 300)
    watch(db, ids)
    with RegistryClient(registry.base_url, max_url_length=SHORT_URLS) as client:
        one_listing = client.listing_requests(len(ids))
    report = one_cycle(db, registry, max_url_length=SHORT_URLS, lease_batch=UNEVEN_BATCH)
    assert report.strategy == "ids" and one_listing > 2
    assert len(listing_requests(registry)) == one_listing


def test_moved_trials_of_several_batches_are_fetched_a_full_page_at_a_time(db, registry):
    watch(db, populate(registry, 300))  # never fetched: all of them "moved"
    report = one_cycle(db, registry, lease_batch=SMALL_BATCH)
    assert report.fetched == 300
    assert len(listing_requests(registry)) == 300 // SMALL_BATCH
    assert [len(r.ids) for r in full_fetch_requests(registry)] == [100, 100, 100]


def test_a_changed_since_round_fetches_the_moved_trials_and_stamps_the_rest_checked(
        db, registry):
    ids = populate(registry, 300)
    watch(db, ids)
    one_cycle(db, registry, lease_batch=SMALL_BATCH)
    changed = ids[7::50]  # six trials, one in each batch of the first round
    for nct_id in changed:
        registry.studies[nct_id] = make_study(registry.studies[nct_id], nct_id, TODAY,
                                              overall_status="COMPLETED")
    registry.data_timestamp = f"{TODAY}T23:00:00"
    registry.requests.clear()
    report = one_cycle(db, registry, lease_batch=SMALL_BATCH,
                       reverify_every=timedelta(0))  # the listing alone
    assert report.strategy == "changed-since" and report.outcome == "ok"
    assert [sorted(r.ids) for r in full_fetch_requests(registry)] == [sorted(changed)]
    assert report.watched == 300
    with db.transaction() as session:
        round_row = session.scalars(select(CycleRound).order_by(CycleRound.id.desc())).first()
        assert round_row is not None and round_row.closed_at is not None
        assert round_row.checked == 300


def test_moved_trials_waiting_for_a_full_fetch_page_keep_their_leases(db, pg_url, registry):
    ids = populate(registry, 300)
    watch(db, ids)
    # Slow listings: gathering a page (100 moved trials, in batches of 20) outlasts the lease,
    # and the other worker would take the first batches over if they were not renewed.
    registry.fault_hook = lambda r: Fault(delay=0.3) if "fields" in r.params else None

    def body(k: int, database: Database) -> CycleReport:
        with RegistryClient(registry.base_url, requests_per_second=0) as client:
            return run_cycle(database, client, worker=f"worker-{k}",
                             lease=timedelta(seconds=1.2), lease_batch=20)

    reports = in_threads(2, body, pg_url)
    assert all(r.outcome == "ok" for r in reports)
    assert full_fetches(registry) == Counter(dict.fromkeys(ids, 1))


def test_a_round_reverifies_its_budget_once_across_workers_and_sees_silent_statuses(
        db, pg_url, registry):
    ids = populate(registry, 300)
    watch(db, ids)
    cycle_in_workers(2, pg_url, registry)
    status = registry.studies[ids[200]]["protocolSection"]["statusModule"]
    status["overallStatus"] = "UNKNOWN"  # the registry's own switch: the date stays
    registry.data_timestamp = "2026-11-26T09:00:05"  # the next daily load
    registry.requests.clear()
    reports = cycle_in_workers(2, pg_url, registry)
    fetched = full_fetches(registry)
    assert set(fetched.values()) == {1}  # none fetched twice in the round
    assert sum(r.reverified for r in reports) == -(-300 // 7)  # a seventh of them a day
    # the least recently verified (all from the first load: by NCT id), and the switched one
    assert set(fetched) == {*ids[:43], ids[200]}
    assert [(e.nct_id, e.new) for r in reports for e in r.events
            if e.field == "overall_status"] == [(ids[200], "UNKNOWN")]
    with db.transaction() as session:
        verified = session.scalar(select(func.count()).select_from(Trial).where(
            Trial.verified_data_at == "2026-11-26T09:00:05"))
    assert verified == len(fetched)

