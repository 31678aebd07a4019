"""``trialwatch backfill``: every past registry version, in order, diffed, never alerted.

Runs against ``FakeHistoryRegistry`` (a real local HTTP server) serving seven versions of
NCT03934567 built from the real API v2 document (see ``tests/history_server.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from history_server import (
    NCT_ID,
    NEW_CRITERION,
    FakeHistoryRegistry,
    abexinostat_history,
    current_api_document,
    render_html,
)
from registry_server import Fault
from sqlalchemy import func, select
from subscriptions import EveryEvent

from trialwatch.monitor.backfill import backfill_trial
from trialwatch.monitor.cli import cli
from trialwatch.monitor.cli.backfill import history_client
from trialwatch.monitor.config.settings import CtgovConfig
from trialwatch.monitor.sources.ctgov.history import (
    BadHistoryResponse,
    HistoryClient,
    html_to_text,
    normalize_study,
)
from trialwatch.monitor.sources.ctgov.parser import parse_study
from trialwatch.monitor.sources.ctgov.ratelimit import RateLimiter
from trialwatch.monitor.versioning import Observation, record_observation
from trialwatch.storage import repository as repo
from trialwatch.storage.engine import Database, open_database
from trialwatch.storage.models import Event, OutboxEntry, Version
from trialwatch.storage.schema import ensure_schema

VERSIONS = 7  # registry versions 0..6
KINDS_BY_REGISTRY_VERSION = {  # the changes each registry version brings (none for 0)
    1: {"status", "dates"},
    2: {"enrollment"},
    3: {"outcomes"},
    4: {"eligibility"},
    5: {"status", "enrollment"},
    6: {"dates"},
}


# ----------------------------------------------------------------- fixtures and helpers


@pytest.fixture
def fake() -> Iterator[FakeHistoryRegistry]:
    with FakeHistoryRegistry() as registry:
        registry.add_history(abexinostat_history())
        yield registry


@pytest.fixture
def client(fake: FakeHistoryRegistry) -> Iterator[HistoryClient]:
    with HistoryClient(fake.history_url, requests_per_second=0, max_retries=1,
                       sleep=lambda _s: None) as history:
        yield history


def stored_versions(db: Database) -> list[Version]:
    with db.transaction() as session:
        trial = repo.trial(session, NCT_ID)
        return list(repo.versions(session, trial)) if trial is not None else []


def stored_events(db: Database) -> list[Event]:
    with db.transaction() as session:
        return list(session.scalars(select(Event).order_by(Event.to_version, Event.id)))


def kinds_by_version(db: Database) -> dict[int, set[str]]:
    kinds: dict[int, set[str]] = {}
    for event in stored_events(db):
        assert event.to_version is not None
        kinds.setdefault(event.to_version, set()).add(event.kind)
    return kinds


def outbox_rows(db: Database) -> int:
    with db.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(OutboxEntry)) or 0)


def watch_current_version(db: Database, document: dict[str, Any], *, source: str = "ctgov",
                          fetched_at: datetime | None = None) -> int | None:
    """Record a document as ``check`` would (not historical); return its version number."""
    observation = Observation(record=parse_study(document), raw=orjson.dumps(document),
                              raw_format="ctgov-json", source=source,
                              fetched_at=fetched_at or datetime(2025, 11, 20, 12, tzinfo=UTC))
    with db.transaction() as session:
        return record_observation(session, observation, subscriptions=[EveryEvent("ops")]).version


# ----------------------------------------------------------------- HTML → API v2 text


def test_html_paragraphs_lists_and_entities_become_api_v2_text() -> None:
    rendered = ("<p>Inclusion Criteria:</p><ul><li>Age &gt;= 18</li>"
                "<li>Contact pi@hospital.org for details.\nWalk daily.</li></ul>"
                "<p>Sponsor&#39;s note: A &amp; B<br/>second line</p>"
                "<ol><li>first<ul><li>nested</li></ul></li><li><p>second</p></li></ol>")
    assert html_to_text(rendered) == (
        "Inclusion Criteria:\n\n* Age \\>= 18\n* Contact pi@hospital.org for details. "
        "Walk daily.\n\nSponsor's note: A & B\nsecond line\n\n1. first\n    * nested\n"
        "2. second")


def test_plain_api_v2_text_is_left_alone() -> None:
    plain = "Inclusion Criteria:\n\n* Age \\>= 18\n* a<b and c>d, x < 5"
    assert html_to_text(plain) == plain
    assert html_to_text("Smith &amp; Jones\n\n* x") == "Smith & Jones\n\n* x"


def test_html_rendered_version_parses_like_the_api_v2_document() -> None:
    api = current_api_document()
    history_study = render_html(api)
    history_study.pop("derivedSection")
    history_study.pop("hasResults")
    assert "<ol><li>Age &gt;= 18 years &amp; life expectancy &ge; 3 months" in orjson.dumps(
        history_study).decode()
    assert parse_study(normalize_study(history_study)).content_hash == \
        parse_study(api).content_hash


# ----------------------------------------------------------------- a fresh trial


def test_every_registry_version_is_stored_in_order_with_its_number_and_date(
        db: Database, client: HistoryClient) -> None:
    result = backfill_trial(db, client, NCT_ID)

    assert result.error is None
    assert (result.versions_total, result.imported, result.skipped) == (VERSIONS, VERSIONS, 0)
    assert result.requests == 1 + VERSIONS  # the list, then one request per version
    versions = stored_versions(db)
    assert [v.version for v in versions] == [1, 2, 3, 4, 5, 6, 7]
    assert [v.registry_version for v in versions] == [0, 1, 2, 3, 4, 5, 6]
    assert {v.source for v in versions} == {"backfill"}
    assert all(v.historical for v in versions)
    dates = [entry.date for entry in abexinostat_history()]
    assert [v.fetched_at for v in versions] == [
        datetime.fromisoformat(f"{d}T00:00:00+00:00") for d in dates]
    assert [v.last_update_posted for v in versions] == dates
    with db.transaction() as session:
        trial = repo.trial(session, NCT_ID)
        assert trial is not None
        assert (trial.latest_version, trial.overall_status) == (7, "ACTIVE_NOT_RECRUITING")
        assert not trial.watched


def test_events_between_versions_are_classified_historical_and_never_alerted(
        db: Database, client: HistoryClient) -> None:
    result = backfill_trial(db, client, NCT_ID)

    assert kinds_by_version(db) == {n + 1: kinds for n, kinds in
                                    KINDS_BY_REGISTRY_VERSION.items()}
    events = stored_events(db)
    assert result.events == len(events)
    assert all(e.historical for e in events)
    assert all(e.from_version == e.to_version - 1 for e in events)  # type: ignore[operator]
    status = [(e.old, e.new) for e in events if e.kind == "status"]
    assert status == [("NOT_YET_RECRUITING", "RECRUITING"),
                      ("RECRUITING", "ACTIVE_NOT_RECRUITING")]
    enrollment = [(e.old, e.new) for e in events if e.kind == "enrollment"]
    assert [(o["count"], n["count"]) for o, n in enrollment] == [(110, 120), (120, 87)]
    added = [e for e in events if e.kind == "eligibility"]
    assert len(added) == 1 and NEW_CRITERION in added[0].summary + str(added[0].new)
    assert outbox_rows(db) == 0


def test_the_html_rendered_versions_bring_no_text_changes(
        db: Database, client: HistoryClient) -> None:
    backfill_trial(db, client, NCT_ID)

    # Version 3 (registry 2) is HTML-rendered between two plain ones: only enrollment moved.
    assert kinds_by_version(db)[3] == {"enrollment"}
    # The latest (HTML-rendered) equals the same version from API v2, hash for hash.
    assert stored_versions(db)[-1].content_hash == \
        parse_study(current_api_document()).content_hash


def test_backfilling_twice_stores_nothing_new(db: Database, client: HistoryClient) -> None:
    backfill_trial(db, client, NCT_ID)
    before = [(v.version, v.content_hash) for v in stored_versions(db)]
    events_before = len(stored_events(db))

    again = backfill_trial(db, client, NCT_ID)

    assert again.error is None
    assert (again.imported, again.skipped, again.events, again.requests) == (0, VERSIONS, 0, 1)
    assert [(v.version, v.content_hash) for v in stored_versions(db)] == before
    assert len(stored_events(db)) == events_before


def test_a_later_check_of_the_same_record_finds_nothing_new(
        db: Database, client: HistoryClient) -> None:
    backfill_trial(db, client, NCT_ID)

    assert watch_current_version(db, current_api_document()) == VERSIONS
    assert len(stored_versions(db)) == VERSIONS
    assert outbox_rows(db) == 0


# ----------------------------------------------------------------- merging with watched versions


def registry_document(number: int) -> dict[str, Any]:
    """Registry version ``number`` as API v2 would have served it back then."""
    return normalize_study(abexinostat_history()[number].study)


def posted(number: int) -> datetime:
    """A fetch a few days after registry version ``number`` was posted (as ``check`` sees it)."""
    day = datetime.fromisoformat(abexinostat_history()[number].date).replace(tzinfo=UTC)
    return day + timedelta(days=3)


def watch_registry_versions(db: Database, *numbers: int) -> None:
    """The trial as ``check`` stored it while being watched: one version per number given."""
    for number in numbers:
        document = current_api_document() if number == VERSIONS - 1 else \
            registry_document(number)
        watch_current_version(db, document, fetched_at=posted(number))


def cli_json(db_url: str, *args: str) -> tuple[int, Any]:
    result = CliRunner().invoke(cli, ["--db", db_url, *args, "--json"],
                                env={"TRIALWATCH_CONFIG_FILE": None})
    assert result.exit_code in (0, 1), result.stderr
    return result.exit_code, orjson.loads(result.stdout)


def without_numbers(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in e.items() if k not in ("from_version", "to_version")}
            for e in events]


def outbox(db: Database) -> list[tuple[str, int, list[int]]]:
    with db.transaction() as session:
        rows = session.scalars(select(OutboxEntry).order_by(OutboxEntry.id))
        return [(r.id, r.version, list(r.event_ids)) for r in rows]


@pytest.fixture
def any_db(backend_url: str) -> Iterator[Database]:
    """An empty database on SQLite, then on PostgreSQL (the renumbering runs on both)."""
    database = open_database(backend_url)
    ensure_schema(database)
    yield database
    database.close()


def test_a_watched_trial_gets_its_past_numbered_before_its_versions(
        any_db: Database, backend_url: str, client: HistoryClient) -> None:
    db = any_db
    # Watched since registry version 3: check stored it, then 5 and 6 (4 came and went
    # between two checks). Versions 2 and 3 brought events, and alerts for them.
    watch_registry_versions(db, 3, 5, 6)
    assert [v.version for v in stored_versions(db)] == [1, 2, 3]
    events_before = [(e.id, e.from_version, e.to_version, e.kind) for e in stored_events(db)]
    assert {to for _id, _from, to, _kind in events_before} == {2, 3}
    alerts_before = outbox(db)
    assert sorted(version for _id, version, _ids in alerts_before) == [2, 3]
    _, diff_before = cli_json(backend_url, "diff", NCT_ID, "--from", "1", "--to", "3")

    result = backfill_trial(db, client, NCT_ID)

    assert result.error is None and result.mode == "merge"
    assert (result.imported, result.renumbered) == (3, 3)  # registry versions 0, 1 and 2
    assert result.requests == 1 + VERSIONS
    versions = stored_versions(db)
    assert [(v.version, v.registry_version, v.source, v.historical) for v in versions] == [
        (1, 0, "backfill", True), (2, 1, "backfill", True), (3, 2, "backfill", True),
        (4, 3, "ctgov", False), (5, 5, "ctgov", False), (6, 6, "ctgov", False)]
    dates = [entry.date for entry in abexinostat_history()]
    assert [v.fetched_at for v in versions[:3]] == [
        datetime.fromisoformat(f"{d}T00:00:00+00:00") for d in dates[:3]]

    # The timeline reads forward: history lists the past first, events go old → new.
    _, history = cli_json(backend_url, "history", NCT_ID)
    posted_dates = [v["last_update_posted"] for v in history["versions"]]
    assert posted_dates == sorted(posted_dates) and len(posted_dates) == 6
    status = [(e["old"], e["new"], e["from_version"], e["to_version"])
              for e in history["events"] if e["kind"] == "status"]
    assert status == [("NOT_YET_RECRUITING", "RECRUITING", 1, 2),
                      ("RECRUITING", "ACTIVE_NOT_RECRUITING", 4, 5)]
    # Between the registry's version 2 and the first watched version (registry 3): the
    # primary outcome was reworded. Historical, like every event into versions 2..4.
    assert kinds_by_version(db) == {2: {"status", "dates"}, 3: {"enrollment"},
                                    4: {"outcomes"}, 5: {"eligibility", "status", "enrollment"},
                                    6: {"dates"}}
    assert all(e.historical == (e.to_version <= 4) for e in stored_events(db))  # type: ignore[operator]

    # What was stored before moved up by 3, ids and all; alerts keep their ids.
    after = {e.id: (e.from_version, e.to_version, e.kind) for e in stored_events(db)}
    assert {i: after[i] for i, *_ in events_before} == {
        i: (f + 3, t + 3, kind) for i, f, t, kind in events_before}  # type: ignore[operator]
    assert outbox(db) == [(i, version + 3, ids) for i, version, ids in alerts_before]
    _, diff_after = cli_json(backend_url, "diff", NCT_ID, "--from", "4", "--to", "6")
    assert (diff_after["from_version"], diff_after["to_version"]) == (4, 6)
    assert without_numbers(diff_after["events"]) == without_numbers(diff_before["events"])
    with db.transaction() as session:
        trial = repo.trial(session, NCT_ID)
        assert trial is not None
        assert (trial.latest_version, trial.overall_status) == (6, "ACTIVE_NOT_RECRUITING")

    # The next check of the same record stays quiet; a second backfill changes nothing.
    assert watch_current_version(db, current_api_document()) == 6
    again = backfill_trial(db, client, NCT_ID)
    assert again.error is None and again.mode == "caught up"
    assert (again.imported, again.renumbered, again.events, again.requests) == (0, 0, 0, 1)
    assert [(v.version, v.content_hash) for v in stored_versions(db)] == \
        [(v.version, v.content_hash) for v in versions]
    assert {e.id: (e.from_version, e.to_version) for e in stored_events(db)} == {
        i: (f, t) for i, (f, t, _k) in after.items()}
    assert outbox(db) == [(i, version + 3, ids) for i, version, ids in alerts_before]


def test_a_watched_trial_whose_current_version_is_the_registrys_gets_its_whole_past(
        db: Database, client: HistoryClient) -> None:
    watched = watch_current_version(db, current_api_document())
    assert watched == 1

    result = backfill_trial(db, client, NCT_ID)

    assert result.error is None and result.mode == "merge"
    assert (result.imported, result.renumbered) == (VERSIONS - 1, VERSIONS - 1)
    versions = stored_versions(db)
    assert [(v.version, v.registry_version, v.source) for v in versions] == [
        *((n + 1, n, "backfill") for n in range(VERSIONS - 1)), (VERSIONS, 6, "ctgov")]
    # Exactly the events of a fresh backfill, with the watched version as the last one.
    assert kinds_by_version(db) == {n + 1: kinds for n, kinds in
                                    KINDS_BY_REGISTRY_VERSION.items()}
    assert all(e.historical for e in stored_events(db))
    assert outbox_rows(db) == 0
    assert watch_current_version(db, current_api_document()) == VERSIONS


def test_registry_versions_newer_than_the_watched_one_are_left_to_check(
        db: Database, client: HistoryClient) -> None:
    watch_registry_versions(db, 4)  # watched back when registry version 4 was new

    result = backfill_trial(db, client, NCT_ID)

    assert result.error is None
    assert result.requests == 1 + 5  # versions posted after the watched one are not fetched
    versions = stored_versions(db)
    assert [(v.registry_version, v.source) for v in versions] == [
        (0, "backfill"), (1, "backfill"), (2, "backfill"), (3, "backfill"), (4, "ctgov")]
    # The next check alerts on what changed since, diffed against the watched version.
    with db.transaction() as session:
        observation = Observation(record=parse_study(current_api_document()), raw=b"{}",
                                  raw_format="ctgov-json", source="ctgov")
        outcome = record_observation(session, observation, subscriptions=[EveryEvent("ops")])
    assert {e.kind for e in outcome.events} == {"status", "enrollment", "dates"}
    assert all((e.from_version, e.to_version) == (5, 6) for e in outcome.events)
    assert outbox_rows(db) == 1


def test_a_watched_version_the_registry_does_not_match_is_placed_by_its_posting_date(
        db: Database, client: HistoryClient) -> None:
    document = registry_document(3)  # registry version 3, plus a local oddity
    document["protocolSection"]["descriptionModule"]["briefSummary"] += " (as fetched)"
    watch_current_version(db, document, fetched_at=posted(3))

    result = backfill_trial(db, client, NCT_ID)

    assert result.error is None and result.renumbered == 3  # posted before it: 0, 1, 2
    versions = stored_versions(db)
    assert [(v.version, v.registry_version) for v in versions] == [
        (1, 0), (2, 1), (3, 2), (4, None)]
    assert kinds_by_version(db)[4] == {"outcomes", "description"}


def test_a_watched_trial_that_never_changed_only_learns_its_registry_number(
        db: Database, client: HistoryClient, fake: FakeHistoryRegistry) -> None:
    only = abexinostat_history()[-1:]
    fake.add_history(only)
    watch_current_version(db, current_api_document())

    result = backfill_trial(db, client, NCT_ID)

    assert (result.imported, result.skipped, result.renumbered) == (0, 1, 0)
    assert [(v.version, v.registry_version) for v in stored_versions(db)] == [(1, 0)]


def last_change_kept_and_recomputed(db: Database) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """The trial's last change as storing kept it, and as its stored events say it is."""
    with db.transaction() as session:
        trial = repo.trial(session, NCT_ID)
        assert trial is not None
        kept = (trial.last_change_version, trial.last_change_kind,
                trial.last_change_severity, trial.last_change_date)
        repo.refresh_last_change(session, trial)
        recomputed = (trial.last_change_version, trial.last_change_kind,
                      trial.last_change_severity, trial.last_change_date)
        session.rollback()
    return kept, recomputed


def test_a_merge_renumbers_the_last_change_with_the_versions(
        db: Database, client: HistoryClient) -> None:
    watch_registry_versions(db, 3, 5, 6)
    before, _ = last_change_kept_and_recomputed(db)
    backfill_trial(db, client, NCT_ID)
    kept, recomputed = last_change_kept_and_recomputed(db)
    assert kept == recomputed
    assert kept[0] == before[0] + 3  # three registry versions went before the watched ones
    assert kept[1:] == before[1:]


def test_an_undone_backfill_puts_the_last_change_back(
        db: Database, client: HistoryClient, fake: FakeHistoryRegistry) -> None:
    fake.fault_hook = lambda r: Fault(status=503) if r.path.endswith("/history/5") else None
    backfill_trial(db, client, NCT_ID)  # interrupted: registry versions 0..4 stored
    before, _ = last_change_kept_and_recomputed(db)
    fake.fault_hook = lambda r: Fault.html() if r.path.endswith("/history/6") else None
    backfill_trial(db, client, NCT_ID)  # imports 5, then undoes it
    kept, recomputed = last_change_kept_and_recomputed(db)
    assert kept == recomputed == before


def test_a_failed_merge_leaves_the_watched_trial_as_it_was(
        db: Database, client: HistoryClient, fake: FakeHistoryRegistry) -> None:
    watch_registry_versions(db, 3, 6)
    before = ([(v.version, v.registry_version, v.content_hash) for v in stored_versions(db)],
              [(e.id, e.from_version, e.to_version) for e in stored_events(db)], outbox(db))
    fake.fault_hook = lambda r: Fault.html() if r.path.endswith("/history/5") else None

    result = backfill_trial(db, client, NCT_ID)

    assert result.error is not None and "expected JSON, got HTML" in result.error
    assert (result.imported, result.renumbered) == (0, 0)
    assert before == ([(v.version, v.registry_version, v.content_hash)
                       for v in stored_versions(db)],
                      [(e.id, e.from_version, e.to_version) for e in stored_events(db)],
                      outbox(db))


def test_shift_versions_moves_versions_events_and_alerts_together(
        any_db: Database) -> None:
    watch_registry_versions(any_db, 1, 3, 6)
    with any_db.transaction() as session:
        trial = repo.trial(session, NCT_ID)
        assert trial is not None
        repo.shift_versions(session, trial, 2)
        assert trial.latest_version == 5
    assert [v.version for v in stored_versions(any_db)] == [3, 4, 5]
    assert {(e.from_version, e.to_version) for e in stored_events(any_db)} == {(3, 4), (4, 5)}
    assert sorted(version for _id, version, _ids in outbox(any_db)) == [4, 5]


# ----------------------------------------------------------------- untrustworthy answers


@pytest.mark.parametrize(("answer", "problem"), [
    ({"versions": []}, "'changes' is missing or null, not a list"),
    ({"changes": []}, "'changes' is empty"),
    ({"changes": [{"version": "0", "date": "2019-05-02"}]}, "'version' is '0'"),
    ({"changes": [{"version": 0, "date": "May 2, 2019"}]}, "not YYYY-MM-DD"),
    ({"changes": [{"version": 0, "date": "2019-05-02"}, {"version": 1, "date": "2018-01-01"}]},
     "version 1 is dated 2018-01-01, before version 0"),
])
def test_a_history_list_of_the_wrong_shape_is_a_one_line_error_and_stores_nothing(
        db: Database, client: HistoryClient, fake: FakeHistoryRegistry,
        answer: dict[str, Any], problem: str) -> None:
    fake.list_override = answer

    result = backfill_trial(db, client, NCT_ID)

    assert result.error is not None and "\n" not in result.error
    assert result.error.startswith(f"{NCT_ID}: history")
    assert problem in result.error
    assert f"{fake.history_url}/studies/{NCT_ID}/history" in result.error
    with db.transaction() as session:
        assert repo.trial(session, NCT_ID) is None


@pytest.mark.parametrize(("fault", "problem"), [
    (Fault.json({"studyVersion": 2, "study": {}}), "'studyVersion' is 2, expected 3"),
    (Fault.json({"studyVersion": 3}), "'study' is missing or null, not an object"),
    (Fault.json({"studyVersion": 3, "study": {"protocolSection": {"identificationModule": {
        "nctId": "NCT00000001"}}}}), "the study is NCT00000001, not NCT03934567"),
    (Fault.html(), "expected JSON, got HTML"),
    (Fault(truncate=True), "invalid or truncated JSON"),
])
def test_a_bad_version_document_undoes_the_whole_trial(
        db: Database, client: HistoryClient, fake: FakeHistoryRegistry,
        fault: Fault, problem: str) -> None:
    fake.fault_hook = lambda request: fault if request.path.endswith("/history/3") else None

    result = backfill_trial(db, client, NCT_ID)

    assert result.error is not None and problem in result.error
    assert result.error.startswith(f"{NCT_ID}: history version 3: ")
    assert f"/studies/{NCT_ID}/history/3]" in result.error
    assert result.imported == 0
    with db.transaction() as session:  # versions 0..2 were stored, then taken back
        assert repo.trial(session, NCT_ID) is None
        assert session.scalar(select(func.count()).select_from(Event)) == 0


def test_a_bad_document_leaves_an_existing_trial_as_it_was(
        db: Database, client: HistoryClient, fake: FakeHistoryRegistry) -> None:
    fake.fault_hook = lambda r: Fault(status=503) if r.path.endswith("/history/5") else None
    backfill_trial(db, client, NCT_ID)  # interrupted: registry versions 0..4 stored
    before = [(v.version, v.content_hash) for v in stored_versions(db)]
    fake.fault_hook = lambda r: Fault.html() if r.path.endswith("/history/6") else None

    result = backfill_trial(db, client, NCT_ID)

    assert result.error is not None and "expected JSON, got HTML" in result.error
    assert [(v.version, v.content_hash) for v in stored_versions(db)] == before
    with db.transaction() as session:
        trial = repo.trial(session, NCT_ID)
        assert trial is not None and trial.latest_version == 5
        assert trial.overall_status == "RECRUITING"
    assert max(kinds_by_version(db)) == 5


def test_the_client_raises_bad_history_response_naming_trial_problem_and_url(
        client: HistoryClient, fake: FakeHistoryRegistry) -> None:
    fake.fail_next(Fault.json({"studyVersion": 0, "study": []}))
    with pytest.raises(BadHistoryResponse) as caught:
        client.study_version(NCT_ID, 0)
    assert str(caught.value) == (f"{NCT_ID}: history version 0: 'study' is a list, not an "
                                 f"object [{fake.history_url}/studies/{NCT_ID}/history/0]")


def test_an_unknown_trial_is_reported(db: Database, client: HistoryClient) -> None:
    result = backfill_trial(db, client, "NCT09999999")
    assert result.error == (f"NCT09999999: history: not found (HTTP 404) "
                            f"[{client.base_url}/studies/NCT09999999/history]")


# ----------------------------------------------------------------- politeness and resumption


def test_requests_are_spaced_by_the_rate_limiter(
        db: Database, fake: FakeHistoryRegistry) -> None:
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    with HistoryClient(fake.history_url, requests_per_second=4.0, clock=lambda: now[0],
                       sleep=sleep) as history:
        result = backfill_trial(db, history, NCT_ID)

    assert result.requests == 1 + VERSIONS
    assert sleeps == pytest.approx([0.25] * VERSIONS)  # every request after the first waits


def test_the_cli_client_uses_the_configured_rate_limit_and_history_url() -> None:
    config = CtgovConfig(history_url="http://127.0.0.1:9/api/int/", requests_per_second=2.5,
                         max_retries=2)
    with history_client(config) as history:
        assert history.base_url == "http://127.0.0.1:9/api/int"
        assert history._limiter.rate == 2.5
        assert history.max_retries == 2


def test_the_history_client_can_share_the_api_clients_rate_limiter() -> None:
    limiter = RateLimiter(1.0)
    with HistoryClient("http://127.0.0.1:9/api/int", limiter=limiter) as history:
        assert history._limiter is limiter


def test_an_interrupted_backfill_resumes_where_it_stopped(
        db: Database, client: HistoryClient, fake: FakeHistoryRegistry) -> None:
    fake.fault_hook = lambda r: Fault(status=503) if r.path.endswith("/history/4") else None

    first = backfill_trial(db, client, NCT_ID)

    assert first.error is not None and "HTTP 503 after 2 attempts" in first.error
    assert first.error.startswith(f"{NCT_ID}: history version 4: registry unavailable")
    assert [v.registry_version for v in stored_versions(db)] == [0, 1, 2, 3]
    fake.fault_hook = None

    second = backfill_trial(db, client, NCT_ID)

    assert second.error is None and second.mode == "continue"
    assert second.requests == 1 + 3 < 1 + VERSIONS  # only registry versions 4, 5 and 6
    assert (second.imported, second.skipped) == (3, 4)
    assert [v.registry_version for v in stored_versions(db)] == list(range(VERSIONS))
    assert kinds_by_version(db) == {n + 1: kinds for n, kinds in
                                    KINDS_BY_REGISTRY_VERSION.items()}


# ----------------------------------------------------------------- the command


@pytest.fixture
def cli_env(tmp_path: Path, fake: FakeHistoryRegistry) -> dict[str, str]:
    config = tmp_path / "trialwatch.toml"
    config.write_text("[ctgov]\nrequests_per_second = 0.0\nmax_retries = 0\n")
    return {"TRIALWATCH_DB": f"sqlite:///{tmp_path / 'cli.db'}",
            "TRIALWATCH_CTGOV_HISTORY_URL": fake.history_url,
            "TRIALWATCH_CONFIG_FILE": str(config)}


def run(env: dict[str, str], *args: str) -> Any:
    runner = CliRunner()
    return runner.invoke(cli, ["--config", env["TRIALWATCH_CONFIG_FILE"], *args], env=env)


def test_backfill_command_json_then_history_and_diff(cli_env: dict[str, str]) -> None:
    result = run(cli_env, "backfill", NCT_ID, "--json")
    assert result.exit_code == 0, result.stderr
    summary = orjson.loads(result.stdout)
    assert summary["trials"] == [{"nct_id": NCT_ID, "versions_total": VERSIONS,
                                  "imported": VERSIONS, "skipped": 0, "renumbered": 0,
                                  "events": summary["trials"][0]["events"]}]
    assert summary["trials"][0]["events"] >= len(KINDS_BY_REGISTRY_VERSION)

    outcomes = orjson.loads(run(cli_env, "history", NCT_ID, "--kind", "outcomes",
                                "--json").stdout)
    assert len(outcomes["versions"]) == VERSIONS
    assert {e["kind"] for e in outcomes["events"]} == {"outcomes"}
    assert {(e["from_version"], e["to_version"]) for e in outcomes["events"]} == {(3, 4)}

    diff = run(cli_env, "diff", NCT_ID, "--from", "1", "--to", "7", "--json")
    assert diff.exit_code == 1  # different, like diff(1)
    kinds = {e["kind"] for e in orjson.loads(diff.stdout)["events"]}
    assert {"status", "enrollment", "outcomes", "eligibility", "dates"} <= kinds

    again = orjson.loads(run(cli_env, "backfill", NCT_ID, "--json").stdout)
    assert again["trials"][0] | {"events": 0} == {
        "nct_id": NCT_ID, "versions_total": VERSIONS, "imported": 0, "skipped": VERSIONS,
        "events": 0, "renumbered": 0}
    assert again["requests"] == 1


def test_backfill_command_reports_each_failure_on_one_line(cli_env: dict[str, str]) -> None:
    result = run(cli_env, "backfill", "NCT09999999", NCT_ID)
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("trialwatch:")]
    assert errors == [f"trialwatch: error: NCT09999999: history: not found (HTTP 404) "
                      f"[{cli_env['TRIALWATCH_CTGOV_HISTORY_URL']}/studies/NCT09999999/history]"]
    assert f"{NCT_ID}  {VERSIONS} registry versions: {VERSIONS} imported" in result.stdout

    bad = run(cli_env, "backfill", "NCT123")
    assert bad.exit_code == 2
    assert bad.stderr.strip() == "trialwatch: error: NCT123: not an NCT ID (NCT + 8 digits)"


def test_trials_are_not_watched_by_a_backfill(cli_env: dict[str, str]) -> None:
    run(cli_env, "backfill", NCT_ID)
    listed = orjson.loads(run(cli_env, "list", "--json").stdout)
    assert [{key: row[key] for key in ("nct_id", "status", "latest_version", "watched")}
            for row in listed] == [{"nct_id": NCT_ID, "status": "ACTIVE_NOT_RECRUITING",
                                    "latest_version": VERSIONS, "watched": False}]


def test_watch_with_backfill_watches_and_imports_the_history(cli_env: dict[str, str]) -> None:
    result = run(cli_env, "watch", "--offline", "--backfill", NCT_ID)
    assert result.exit_code == 0, result.stderr
    assert f"watching {NCT_ID}" in result.stdout
    listed = orjson.loads(run(cli_env, "list", "--json").stdout)
    assert [(t["nct_id"], t["watched"], t["latest_version"]) for t in listed] == [
        (NCT_ID, True, VERSIONS)]
