"""Changes the registry makes without moving ``lastUpdatePostDate``, and removed trials.

A status change is seen by the listing (it lists ``OverallStatus``) in the cycle of the data
load that has it; any other change within ``ctgov.reverify_every`` by rolling
re-verification, its age counted on the registry's data timeline (``dataTimestamp``); a
trial marked removed is not listed or confirmed every cycle, only asked for again at the
re-verification pace, and being served again is a change.
"""

from __future__ import annotations

import math
import tomllib
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from registry_server import FakeRegistry, load_fixture, make_study, nct
from subscriptions import EveryEvent

from trialwatch.monitor.cli import cli
from trialwatch.monitor.config.settings import ConfigError, parse_config
from trialwatch.monitor.cycle.listing import unknown_verified_since
from trialwatch.monitor.cycle.reverify import budget, data_stamp
from trialwatch.monitor.cycle.run import run_cycle
from trialwatch.monitor.cycle.watchlist import add_trials
from trialwatch.monitor.sources.ctgov.client import RegistryClient
from trialwatch.storage import repository as repo
from trialwatch.storage.engine import Database

TEMPLATE = load_fixture("NCT03934567.json")
WEEK = timedelta(days=7)
DAY0 = datetime(2026, 11, 25, 9, 0, 5)


def load(day: int) -> str:
    """The ``dataTimestamp`` of the registry's data load ``day`` days after the first."""
    return (DAY0 + timedelta(days=day)).isoformat()


def populate(registry: FakeRegistry, count: int) -> list[str]:
    ids = [nct(i + 1) for i in range(count)]
    for nct_id in ids:
        registry.add(make_study(TEMPLATE, nct_id, "2026-11-01", overall_status="RECRUITING"))
    return ids


def cycle(db: Database, registry: FakeRegistry, **kwargs: Any) -> Any:
    with RegistryClient(registry.base_url, requests_per_second=0, max_retries=0) as client:
        return run_cycle(db, client, subscriptions=[EveryEvent()], **kwargs)


def full_fetches(registry: FakeRegistry) -> list[str]:
    """IDs asked for in full (filter.ids without fields) since the log was cleared."""
    return [i for r in registry.requests_to("/studies") if "fields" not in r.params
            for i in r.ids]


def silently(registry: FakeRegistry, nct_id: str, **changes: Any) -> None:
    """Change a served record without moving its lastUpdatePostDate."""
    document = registry.studies[nct_id]
    status = document["protocolSection"]["statusModule"]
    if "overall_status" in changes:
        status["overallStatus"] = changes["overall_status"]
    if "reference" in changes:
        module = document["protocolSection"].setdefault("referencesModule", {})
        module.setdefault("references", []).append(
            {"pmid": changes["reference"], "type": "DERIVED", "citation": "Linked by PubMed."})


def test_a_status_change_without_a_new_date_is_reported_in_the_same_cycle(db, registry):
    ids = populate(registry, 5)
    add_trials(db, ids)
    cycle(db, registry)
    silently(registry, ids[3], overall_status="UNKNOWN")
    registry.data_timestamp = load(1)
    registry.requests.clear()
    report = cycle(db, registry, reverify_every=timedelta(0))  # the listing alone finds it
    assert [(e.nct_id, e.field, e.old, e.new) for e in report.events
            if e.field == "overall_status"] == [(ids[3], "overall_status", "RECRUITING",
                                                 "UNKNOWN")]
    assert full_fetches(registry) == [ids[3]]


def test_a_changed_since_cycle_reports_the_registrys_own_switch_to_unknown(db, registry):
    ids = populate(registry, 200)
    add_trials(db, ids)
    t0 = datetime(2026, 11, 20, 12, tzinfo=UTC)
    options = {"requests_per_second": 0, "max_retries": 0, "max_url_length": 1000}
    with RegistryClient(registry.base_url, **options) as client:  # ids listing: 4 requests
        run_cycle(db, client, now=lambda: t0)
        registry.studies[ids[9]]["protocolSection"]["statusModule"]["statusVerifiedDate"] = \
            "2024-10"
        silently(registry, ids[9], overall_status="UNKNOWN")
        registry.data_timestamp = load(1)
        report = run_cycle(db, client, subscriptions=[EveryEvent()], reverify_every=WEEK * 0,
                           now=lambda: t0 + timedelta(days=1))
    assert report.strategy == "changed-since"
    assert [(e.nct_id, e.new) for e in report.events if e.field == "overall_status"] == [
        (ids[9], "UNKNOWN")]


def test_the_switch_listing_reaches_back_two_years_and_a_month():
    assert unknown_verified_since(date(2026, 3, 1)) == date(2024, 2, 1)
    assert unknown_verified_since(date(2026, 1, 15)) == date(2023, 12, 1)


def test_budget_spreads_the_watch_list_over_the_period():
    assert budget(1150, timedelta(days=1), WEEK) == math.ceil(1150 / 7)
    assert budget(1150, timedelta(hours=6), WEEK) == math.ceil(1150 / 28)
    assert budget(1150, timedelta(days=30), WEEK) == 1150
    assert budget(1150, timedelta(0), WEEK) == 0
    assert budget(1150, timedelta(days=1), timedelta(0)) == 0


def test_data_timestamps_are_compared_in_one_form():
    assert data_stamp("2026-03-03T01:01:15") == "2026-03-03T01:01:15"
    assert data_stamp("2026-03-03T10:01:15+09:00") == "2026-03-03T01:01:15"
    assert data_stamp("not a time") is None


def test_every_watched_trial_is_fully_refetched_within_the_period_of_data_time(db, registry):
    ids = populate(registry, 20)
    add_trials(db, ids)
    cycle(db, registry)
    last_fetch = dict.fromkeys(ids, 0)
    per_cycle = []
    for day in range(1, 22):
        registry.data_timestamp = load(day)
        registry.requests.clear()
        cycle(db, registry)
        fetched = full_fetches(registry)
        per_cycle.append(len(fetched))
        for nct_id in fetched:
            assert day - last_fetch[nct_id] <= WEEK.days, nct_id
            last_fetch[nct_id] = day
    assert all(day - last <= WEEK.days for last in last_fetch.values())
    assert max(per_cycle) == math.ceil(20 / 7)  # spread evenly, not all at once


def test_a_silent_change_is_found_within_the_period(db, registry):
    ids = populate(registry, 20)
    add_trials(db, ids)
    cycle(db, registry)
    silently(registry, ids[7], reference="41698381")
    found = []
    for day in range(1, WEEK.days + 1):
        registry.data_timestamp = load(day)
        found += [(day, e.nct_id, e.field) for e in cycle(db, registry).events]
    assert [(n, f) for _day, n, f in found] == [(ids[7], "references.references")]


def test_no_new_data_load_means_no_reverification_however_long_the_wall_clock_runs(
        db, registry):
    ids = populate(registry, 10)
    add_trials(db, ids)
    cycle(db, registry)
    registry.requests.clear()
    for days_later in (3, 8, 30):
        report = cycle(db, registry, now=lambda d=days_later: datetime.now().astimezone()
                       + timedelta(days=d))
        assert report.strategy == "unchanged-data"
    assert full_fetches(registry) == []


def test_reverify_every_0_turns_it_off(db, registry):
    ids = populate(registry, 10)
    add_trials(db, ids)
    cycle(db, registry)
    registry.requests.clear()
    for day in range(1, 15):
        registry.data_timestamp = load(day)
        cycle(db, registry, reverify_every=timedelta(0))
    assert full_fetches(registry) == []


def removed_flags(db: Database) -> dict[str, bool]:
    result = CliRunner().invoke(cli, ["--db", db.url, "list", "--json"],
                                env={"TRIALWATCH_CONFIG_FILE": None})
    assert result.exit_code == 0, result.output
    return {row["nct_id"]: row["removed"] for row in orjson.loads(result.stdout)}


def test_a_removed_trial_is_marked_and_not_asked_for_every_cycle(db, registry):
    ids = populate(registry, 30)
    add_trials(db, ids)
    cycle(db, registry)
    gone = registry.studies.pop(ids[4])
    registry.data_timestamp = load(1)
    report = cycle(db, registry, reverify_every=timedelta(0))
    assert [(e.nct_id, e.kind) for e in report.events] == [(ids[4], "removed")]
    assert removed_flags(db)[ids[4]] is True
    registry.requests.clear()
    for day in range(2, 6):
        registry.data_timestamp = load(day)
        report = cycle(db, registry, reverify_every=timedelta(0))
        assert report.outcome == "ok" and report.events == []
    assert registry.requests_to(f"/studies/{ids[4]}") == []  # no one-by-one confirmation
    assert all(ids[4] not in r.ids for r in registry.requests_to("/studies"))
    assert gone  # (kept to serve it again in the next test's way)


def test_a_removed_trial_served_again_is_a_change_found_at_the_reverification_pace(
        db, registry):
    ids = populate(registry, 14)
    add_trials(db, ids)
    cycle(db, registry)
    document = registry.studies.pop(ids[2])
    registry.data_timestamp = load(1)
    cycle(db, registry)
    registry.add(document)  # back, its date unchanged
    back = []
    for day in range(2, 2 + WEEK.days):
        registry.data_timestamp = load(day)
        back += [(day, e.kind, e.summary) for e in cycle(db, registry).events]
    assert [(kind, summary) for _day, kind, summary in back] == [
        ("removed", "Record served by the registry again")]
    assert removed_flags(db)[ids[2]] is False
    with db.transaction() as session:
        trial = repo.trial(session, ids[2])
        assert trial is not None and trial.removed_at is None


def config(text: str) -> Any:
    return parse_config(tomllib.loads(text), env={}).ctgov


def test_reverify_every_is_a_duration_or_0():
    assert config("").reverify_every == WEEK
    assert config('[ctgov]\nreverify_every = "3d"').reverify_every == timedelta(days=3)
    assert config("[ctgov]\nreverify_every = 0").reverify_every == timedelta(0)
    with pytest.raises(ConfigError, match=r"ctgov\.reverify_every"):
        config('[ctgov]\nreverify_every = "soon"')


def test_max_response_size_takes_a_size_with_its_unit():
    assert config("").max_response_size == 50 * 1024 * 1024
    assert config('[ctgov]\nmax_response_size = "512KB"').max_response_size == 512 * 1024
    with pytest.raises(ConfigError, match=r"ctgov\.max_response_size"):
        config('[ctgov]\nmax_response_size = "huge"')


def test_the_dashboard_marks_a_removed_trial(db, registry):
    from starlette.testclient import TestClient

    from trialwatch.monitor.web.app import create_app

    ids = populate(registry, 3)
    add_trials(db, ids)
    cycle(db, registry)
    registry.studies.pop(ids[1])
    registry.data_timestamp = load(1)
    cycle(db, registry)
    page = TestClient(create_app(db)).get("/").text
    assert page.count("removed from the registry") == 1
