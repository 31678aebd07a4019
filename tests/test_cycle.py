"""The fetch cycle against a real local registry server: what it asks, stores and reports."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from registry_server import FakeRegistry, Fault, load_fixture, make_study, nct
from sqlalchemy import func, select
from subscriptions import EveryEvent

from trialwatch.monitor.cycle.run import run_cycle
from trialwatch.monitor.cycle.watchlist import add_query, add_trials
from trialwatch.monitor.sources.ctgov.client import RegistryClient
from trialwatch.storage import repository as repo
from trialwatch.storage.engine import Database
from trialwatch.storage.models import Event, OutboxEntry, Version

TEMPLATE = load_fixture("NCT03934567.json")


def client_for(registry: FakeRegistry, **kwargs: Any) -> RegistryClient:
    options: dict[str, Any] = {"requests_per_second": 0, "sleep": lambda _s: None,
                               "max_retries": 2}
    options.update(kwargs)
    return RegistryClient(registry.base_url, **options)


def populate(registry: FakeRegistry, count: int, *, day: str = "2026-11-01") -> list[str]:
    ids = [nct(i + 1) for i in range(count)]
    for nct_id in ids:
        registry.add(make_study(TEMPLATE, nct_id, day, overall_status="RECRUITING"))
    return ids


def change_status(registry: FakeRegistry, nct_id: str, status: str, day: str) -> None:
    registry.studies[nct_id] = make_study(registry.studies[nct_id], nct_id, day,
                                          overall_status=status)


def count(db: Database, model: Any) -> int:
    with db.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def cycle(db: Database, registry: FakeRegistry, **kwargs: Any) -> Any:
    with client_for(registry) as client:
        return run_cycle(db, client, subscriptions=[EveryEvent()], **kwargs)


def test_first_cycle_stores_one_version_per_watched_trial_and_no_events(db, registry):
    add_trials(db, populate(registry, 3))
    report = cycle(db, registry)
    assert report.outcome == "ok"
    assert [r.changed for r in report.records] == [True, True, True]
    assert report.events == []
    assert count(db, Version) == 3


def test_second_cycle_with_nothing_changed_only_lists_and_stores_nothing(db, registry):
    add_trials(db, populate(registry, 3))
    cycle(db, registry)
    registry.data_timestamp = "2026-11-26T09:00:00"  # new data load, but not for our trials
    registry.requests.clear()
    report = cycle(db, registry, reverify_every=timedelta(0))  # the listing alone
    paths = [(r.path, r.params.get("fields")) for r in registry.requests]
    assert report.fetched == 0
    assert count(db, Version) == 3
    assert all(path.endswith(("/version", "/studies")) for path, _ in paths)
    assert all(fields is not None for path, fields in paths if path.endswith("/studies"))


def test_unchanged_data_timestamp_skips_the_listing_entirely(db, registry):
    add_trials(db, populate(registry, 3))
    cycle(db, registry)
    registry.requests.clear()
    report = cycle(db, registry)
    assert report.strategy == "unchanged-data"
    assert [r.path for r in registry.requests] == ["/api/v2/version"]


def test_one_changed_record_is_fetched_once_and_gives_its_status_event(db, registry):
    ids = populate(registry, 5)
    add_trials(db, ids)
    cycle(db, registry)
    change_status(registry, ids[2], "COMPLETED", "2026-11-20")
    registry.data_timestamp = "2026-11-26T09:00:00"
    registry.requests.clear()
    report = cycle(db, registry, reverify_every=timedelta(0))  # the listing alone
    full_fetches = [r for r in registry.requests_to("/studies") if "fields" not in r.params]
    assert [r.ids for r in full_fetches] == [[ids[2]]]
    assert [(e.nct_id, e.kind, e.old, e.new) for e in report.events] == [
        (ids[2], "status", "RECRUITING", "COMPLETED")]
    assert count(db, OutboxEntry) == 1


def test_requests_for_2500_watched_trials_are_batched_never_one_per_trial(db, registry):
    ids = populate(registry, 2500)
    add_trials(db, ids)
    with client_for(registry) as client:
        report = run_cycle(db, client)
        listing = client.listing_requests(2500)
    fetch_pages = -(-2500 // 100)
    assert report.fetched == 2500
    assert report.requests == 1 + listing + fetch_pages
    assert report.requests < 2500 / 50


def test_steady_state_cycle_for_many_trials_uses_the_cheaper_changed_since_listing(db, registry):
    ids = populate(registry, 2500, day="2026-10-01")
    add_trials(db, ids)
    t0 = datetime(2026, 11, 20, 12, tzinfo=UTC)
    with client_for(registry) as client:
        run_cycle(db, client, now=lambda: t0)
    change_status(registry, ids[7], "COMPLETED", "2026-11-21")
    registry.data_timestamp = "2026-11-21T09:00:00"
    with client_for(registry) as client:
        report = run_cycle(db, client, subscriptions=[EveryEvent()],
                           now=lambda: t0 + timedelta(days=1))
    assert report.strategy == "changed-since"
    assert [e.nct_id for e in report.events] == [ids[7]]
    # version, the changed-since listing (its first page carries the count), the listing of
    # the registry's own switches to UNKNOWN, one fetch page
    assert report.requests == 4


def test_a_changed_since_cycle_still_fetches_a_newly_watched_trial_the_listing_omits(
        db, registry):
    ids = populate(registry, 2500, day="2026-10-01")
    add_trials(db, ids[:-1])
    t0 = datetime(2026, 11, 20, 12, tzinfo=UTC)
    with client_for(registry) as client:
        run_cycle(db, client, now=lambda: t0)
    add_trials(db, ids[-1:])  # watched now; last updated long before the listing's window
    registry.data_timestamp = "2026-11-21T09:00:00"
    with client_for(registry) as client:
        report = run_cycle(db, client, now=lambda: t0 + timedelta(days=1))
    assert report.strategy == "changed-since"
    assert report.watched == 2500
    assert [(r.nct_id, r.version) for r in report.records] == [(ids[-1], 1)]


@pytest.mark.parametrize("fault", [
    Fault.html(), Fault(truncate=True), Fault(body=b""), Fault.json({"nope": []}),
    Fault.json({"studies": [{"protocolSection": {}}]}),
], ids=["html-200", "truncated-json", "empty-body", "json-without-studies", "study-without-id"])
def test_a_bad_answer_to_the_full_fetch_produces_no_version_and_no_event(db, registry, fault):
    ids = populate(registry, 2)
    add_trials(db, ids)
    cycle(db, registry)
    change_status(registry, ids[0], "COMPLETED", "2026-11-20")
    registry.data_timestamp = "2026-11-26T09:00:00"

    def hook(request: Any) -> Fault | None:
        return fault if "fields" not in request.params and request.path.endswith("/studies") \
            else None

    registry.fault_hook = hook
    report = cycle(db, registry)
    assert report.events == []
    assert report.outcome == "partial"
    assert count(db, Version) == 2
    assert count(db, Event) == 0
    registry.fault_hook = None
    report = cycle(db, registry)  # the next good cycle picks the change up, exactly once
    assert [(e.nct_id, e.kind) for e in report.events] == [(ids[0], "status")]


def test_a_bad_listing_answer_is_a_failure_not_a_removal(db, registry):
    ids = populate(registry, 2)
    add_trials(db, ids)
    cycle(db, registry)
    registry.data_timestamp = "2026-11-26T09:00:00"
    registry.fail_next(None, Fault.json({"studies": []}, status=200), Fault.html())
    registry.fault_hook = lambda r: Fault.html() if r.path.endswith(f"/{ids[0]}") else None
    report = cycle(db, registry)
    assert not any(e.kind == "removed" for e in report.events)


def test_a_study_the_registry_returns_but_was_not_asked_for_is_not_trusted(db, registry):
    ids = populate(registry, 1)
    add_trials(db, ids)
    stranger = make_study(TEMPLATE, nct(999), "2026-11-01")
    registry.fault_hook = lambda r: Fault.json({"studies": [stranger]}) \
        if "fields" not in r.params and r.path.endswith("/studies") else None
    report = cycle(db, registry)
    with db.transaction() as session:
        assert repo.trial(session, nct(999)) is None
    assert report.fetched == 0


def test_429_with_retry_after_is_honoured_and_the_cycle_recovers(db, registry):
    add_trials(db, populate(registry, 1))
    waits: list[float] = []
    registry.fail_next(Fault(status=429, headers={"Retry-After": "3"}))
    with client_for(registry, sleep=waits.append) as client:
        report = run_cycle(db, client)
    assert 3.0 in waits
    assert report.outcome == "ok" and report.fetched == 1


def test_500_then_200_is_recovered_within_the_same_cycle(db, registry):
    add_trials(db, populate(registry, 1))
    registry.fail_next(None, Fault(status=500))
    report = cycle(db, registry)
    assert report.outcome == "ok" and report.fetched == 1


def test_registry_down_for_good_fails_the_cycle_without_touching_the_data(db, registry):
    add_trials(db, populate(registry, 2))
    registry.fault_hook = lambda r: Fault(status=503)
    report = cycle(db, registry)
    assert report.outcome == "failed"
    assert count(db, Version) == 0


def test_read_timeout_is_retried_then_reported_as_a_failure(db, registry):
    add_trials(db, populate(registry, 1))
    registry.fault_hook = lambda r: Fault(delay=1.0) if r.path.endswith("/studies") else None
    with client_for(registry, timeout=0.2, max_retries=1) as client:
        report = run_cycle(db, client)
    assert report.outcome == "partial"
    assert count(db, Version) == 0


def test_403_is_reported_as_blocked_never_as_removed(db, registry):
    ids = populate(registry, 1)
    add_trials(db, ids)
    cycle(db, registry)
    registry.data_timestamp = "2026-11-26T09:00:00"
    registry.fault_hook = lambda r: Fault(status=403) if r.path.endswith("/studies") else None
    report = cycle(db, registry)
    assert any("blocked by the registry" in f for f in report.failures)
    assert report.events == []


def test_a_watched_record_that_disappears_gives_exactly_one_removed_event(db, registry):
    ids = populate(registry, 2)
    add_trials(db, ids)
    cycle(db, registry)
    del registry.studies[ids[1]]
    for day in ("2026-11-26T09:00:00", "2026-11-27T09:00:00"):
        registry.data_timestamp = day
        cycle(db, registry)
    with db.transaction() as session:
        kinds = list(session.scalars(select(Event.kind)))
    assert kinds == ["removed"]


def test_an_unknown_watched_id_is_reported_without_a_removed_event(db, registry):
    populate(registry, 1)
    add_trials(db, [nct(1), nct(4242)])
    report = cycle(db, registry)
    assert report.events == []
    with db.transaction() as session:
        unknown = repo.trial(session, nct(4242))
        assert unknown is not None and "404" in (unknown.last_error or "")


def test_new_match_of_a_saved_query_after_its_baseline_gives_new_trial(db, registry):
    registry.add(make_study(TEMPLATE, nct(1), "2026-11-01", conditions=["Lupus"]))
    add_query(db, "lupus", term=None, condition="lupus")
    t0 = datetime(2026, 11, 20, 12, tzinfo=UTC)
    first = cycle(db, registry, now=lambda: t0)
    assert first.events == []  # the first run is the baseline: no alert flood
    registry.add(make_study(TEMPLATE, nct(2), "2026-11-21", conditions=["Lupus nephritis"]))
    registry.data_timestamp = "2026-11-21T09:00:00"
    second = cycle(db, registry, now=lambda: t0 + timedelta(days=1))
    assert [(e.nct_id, e.kind) for e in second.events] == [(nct(2), "new_trial")]
    with db.transaction() as session:
        assert set(repo.watched_ids(session)) == {nct(1), nct(2)}


def test_check_json_reports_records_events_and_requests(tmp_path, registry):
    import json

    from click.testing import CliRunner

    from trialwatch.monitor.cli import cli

    ids = populate(registry, 2)
    env = {"TRIALWATCH_CTGOV_URL": registry.base_url}
    config = tmp_path / "trialwatch.toml"
    config.write_text("[ctgov]\nrequests_per_second = 0\n")
    base = ["--config", str(config), "--db", f"sqlite:///{tmp_path / 'tw.db'}"]
    runner = CliRunner()
    watched = runner.invoke(cli, [*base, "watch", *ids], env=env)
    assert watched.exit_code == 0, watched.output
    result = runner.invoke(cli, [*base, "check", "--json"], env=env)
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["records"] == [{"nct_id": i, "version": 1, "changed": True} for i in ids]
    assert body["events"] == []
    assert body["requests"] == 3  # version, one listing, one fetch page


def test_watch_rejects_a_malformed_id_and_reports_one_unknown_to_the_registry(tmp_path, registry):
    from click.testing import CliRunner

    from trialwatch.monitor.cli import cli

    populate(registry, 1)
    env = {"TRIALWATCH_CTGOV_URL": registry.base_url}
    base = ["--db", f"sqlite:///{tmp_path / 'tw.db'}"]
    runner = CliRunner()
    bad = runner.invoke(cli, [*base, "watch", "NCT123"], env=env)
    assert bad.exit_code == 2 and "NCT123: not an NCT ID" in bad.stderr
    unknown = runner.invoke(cli, [*base, "watch", nct(1), nct(77)], env=env)
    assert unknown.exit_code == 1
    assert f"{nct(77)}: not known to the registry" in unknown.stderr
