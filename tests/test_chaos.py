"""Chaos registry: fetch cycles against a local registry that fails at random, while records
really change. Every real change is reported exactly once, no fault ever becomes an event,
and no version is stored twice.

The fake registry's ``fault_hook`` answers a seeded random share of requests with a fault
(500/503, 429 with ``Retry-After: 0``, an HTML page with status 200, truncated JSON, an empty
body, a valid page without the studies, a study without an NCT id, a response slower than the
client's read timeout, a dropped connection). Between cycles the test changes the recruitment
status of some trials, and adds new trials matching a saved query, keeping the ground truth:
the status transitions each trial really went through and the trials that really appeared.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from registry_server import FakeRegistry, Fault, LoggedRequest, load_fixture, make_study, nct
from sqlalchemy import select
from subscriptions import EveryEvent

from trialwatch.monitor.cycle.run import run_cycle
from trialwatch.monitor.cycle.watchlist import add_query, add_trials
from trialwatch.monitor.sources.ctgov.client import RegistryClient
from trialwatch.storage.engine import Database
from trialwatch.storage.models import Event, OutboxEntry, SavedQuery, Trial, Version

TEMPLATE = load_fixture("NCT03934567.json")
STATUSES = ["NOT_YET_RECRUITING", "RECRUITING", "ACTIVE_NOT_RECRUITING", "SUSPENDED",
            "COMPLETED", "TERMINATED"]
CONDITION = "Chaos syndrome"
QUERY = "chaos"
START = datetime(2026, 1, 5, 12, tzinfo=UTC)
READ_TIMEOUT = 0.2


def faults(rng: random.Random) -> list[Fault]:
    return [
        Fault(status=500), Fault(status=503),
        Fault(status=429, headers={"Retry-After": "0"}),
        Fault.html(), Fault(truncate=True), Fault(body=b""),
        Fault.json({"studies": []}),
        Fault.json({"studies": [{"protocolSection": {"identificationModule": {}}}]}),
        Fault(delay=READ_TIMEOUT * 3), Fault(drop=True),
    ]


@dataclass
class Truth:
    """What really happened in the registry."""

    statuses: dict[str, list[str]] = field(default_factory=dict)  # per trial, in order
    appeared: list[str] = field(default_factory=list)  # new query matches after the baseline
    removed: list[str] = field(default_factory=list)  # no longer served by the registry

    def transitions(self, nct_id: str) -> list[tuple[str, str]]:
        seq = self.statuses[nct_id]
        return list(itertools.pairwise(seq))


@dataclass
class Chaos:
    db: Database
    registry: FakeRegistry
    rng: random.Random
    truth: Truth = field(default_factory=Truth)
    day: int = 0
    fault_rate: float = 0.3
    next_id: int = 1

    def now(self) -> datetime:
        return START + timedelta(days=self.day)

    def date(self) -> str:
        return self.now().date().isoformat()

    def add_trial(self, *, matching: bool) -> str:
        nct_id = nct(self.next_id)
        self.next_id += 1
        status = self.rng.choice(STATUSES)
        self.registry.add(make_study(TEMPLATE, nct_id, self.date(), overall_status=status,
                                     conditions=[CONDITION] if matching else ["Other"]))
        self.truth.statuses[nct_id] = [status]
        return nct_id

    def hook(self, request: LoggedRequest) -> Fault | None:
        if self.rng.random() < self.fault_rate:
            return self.rng.choice(faults(self.rng))
        return None

    def stored_status(self, nct_id: str) -> str | None:
        with self.db.transaction() as session:
            trial = session.scalars(select(Trial).where(Trial.nct_id == nct_id)).one_or_none()
            return trial.overall_status if trial is not None and trial.latest_version else None

    def settled(self, nct_id: str) -> bool:
        """The database has seen the trial's current state (so a change now is one event)."""
        return self.stored_status(nct_id) == self.truth.statuses[nct_id][-1]

    def change_some(self) -> None:
        for nct_id in sorted(self.truth.statuses):
            if nct_id in self.truth.removed:
                continue
            if self.rng.random() < 0.01 and self.settled(nct_id):
                del self.registry.studies[nct_id]
                self.truth.removed.append(nct_id)
            elif self.rng.random() < 0.25 and self.settled(nct_id):
                current = self.truth.statuses[nct_id][-1]
                new = self.rng.choice([s for s in STATUSES if s != current])
                self.registry.studies[nct_id] = make_study(
                    self.registry.studies[nct_id], nct_id, self.date(), overall_status=new)
                self.truth.statuses[nct_id].append(new)
        if self.rng.random() < 0.2:
            nct_id = self.add_trial(matching=True)
            if self.query_has_baseline():  # before it, a new match is part of the baseline
                self.truth.appeared.append(nct_id)

    def query_has_baseline(self) -> bool:
        with self.db.transaction() as session:
            query = session.scalars(select(SavedQuery)).one()
            return query.last_success_at is not None

    def cycle(self, client: RegistryClient) -> Any:
        self.day += 1
        self.registry.data_timestamp = f"{self.date()}T09:00:00"
        self.change_some()
        report = run_cycle(self.db, client, subscriptions=[EveryEvent()], now=self.now)
        self.check_events(report.events)
        return report

    def check_events(self, events: list[Any]) -> None:
        """Every event of a cycle is a real change: never one a fault made up."""
        for event in events:
            assert event.kind in ("status", "new_trial", "removed"), event
            if event.kind == "removed":
                assert event.nct_id in self.truth.removed, event
            elif event.kind == "status":
                assert (event.old, event.new) in self.truth.transitions(event.nct_id), event
            else:
                assert event.nct_id in self.truth.appeared, event


def client_for(registry: FakeRegistry) -> RegistryClient:
    return RegistryClient(registry.base_url, requests_per_second=0, sleep=lambda _s: None,
                          timeout=READ_TIMEOUT, max_retries=2)


def run_chaos(db: Database, *, seed: int, cycles: int, trials: int) -> None:
    with FakeRegistry() as registry:
        chaos = Chaos(db, registry, random.Random(seed))
        watched = [chaos.add_trial(matching=i % 3 == 0) for i in range(trials)]
        add_trials(db, watched)
        add_query(db, QUERY, term=None, condition=CONDITION)
        registry.fault_hook = chaos.hook
        outcomes = []
        with client_for(registry) as client:
            for _ in range(cycles):
                outcomes.append(chaos.cycle(client).outcome)
            registry.fault_hook = None  # the registry recovers: whatever is pending arrives
            for _ in range(3):
                chaos.day += 1
                registry.data_timestamp = f"{chaos.date()}T09:00:00"
                report = run_cycle(db, client, subscriptions=[EveryEvent()], now=chaos.now)
                chaos.check_events(report.events)
                assert report.outcome == "ok", report.failures
        assert "partial" in outcomes or "failed" in outcomes  # the faults did bite
        assert chaos.truth.removed and chaos.truth.appeared  # both really happened
        assert_ground_truth(db, chaos.truth)


def assert_ground_truth(db: Database, truth: Truth) -> None:
    with db.transaction() as session:
        trials = {t.id: t.nct_id for t in session.scalars(select(Trial))}
        events: dict[str, list[tuple[str, Any, Any]]] = {n: [] for n in trials.values()}
        alerted: set[tuple[int, int | None]] = set()
        for e in session.scalars(select(Event).order_by(Event.id)):
            events[trials[e.trial_id]].append((e.kind, e.old, e.new))
            alerted.add((e.trial_id, e.to_version))
        versions: dict[str, list[Version]] = {n: [] for n in trials.values()}
        for v in session.scalars(select(Version).order_by(Version.trial_id, Version.version)):
            versions[trials[v.trial_id]].append(v)
        outbox = {(o.trial_id, o.version) for o in session.scalars(select(OutboxEntry))}
    assert set(trials.values()) == set(truth.statuses)
    for nct_id in truth.statuses:
        status_events = [(old, new) for kind, old, new in events[nct_id] if kind == "status"]
        assert status_events == truth.transitions(nct_id), nct_id  # each change exactly once
        new_trial = [e for e in events[nct_id] if e[0] == "new_trial"]
        assert len(new_trial) == (1 if nct_id in truth.appeared else 0), nct_id
        removed = [e for e in events[nct_id] if e[0] == "removed"]
        assert len(removed) == (1 if nct_id in truth.removed else 0), nct_id
        assert not [e for e in events[nct_id]
                    if e[0] not in ("status", "new_trial", "removed")], nct_id
        numbers = [v.version for v in versions[nct_id]]
        assert numbers == list(range(1, len(numbers) + 1)), nct_id
        hashes = [v.content_hash for v in versions[nct_id]]
        assert all(a != b for a, b in itertools.pairwise(hashes)), nct_id
        assert len(hashes) == 1 + len(truth.transitions(nct_id)), nct_id  # no extra version
    assert outbox == alerted  # one alert per version with events, none without


def test_fifty_cycles_against_a_faulty_registry_report_every_change_exactly_once(db):
    run_chaos(db, seed=20261125, cycles=50, trials=12)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(3))
def test_long_chaos_runs_with_many_seeds(db, seed):
    run_chaos(db, seed=seed, cycles=200, trials=40)
