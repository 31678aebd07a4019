"""Recording versions into a real SQLite file: snapshot on hash change only, diff, one transaction.

Every test runs ``record_observation`` (the one path ``ingest``, ``check`` and ``backfill``
share) against a fresh database in ``tmp_path`` with real documents from the fixtures.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from docmaker import (
    SEED_JSON,
    SEED_PAGE,
    add_criterion,
    fixture_path,
    new_registry_day,
    seed_page,
    set_date,
    set_status,
    study,
    write,
)
from sqlalchemy import func, select
from subscriptions import EveryEvent

from trialwatch.monitor.sources.files import read_record_file
from trialwatch.monitor.versioning import Observation, RecordOutcome, record_observation
from trialwatch.storage import repository as repo
from trialwatch.storage.engine import Database
from trialwatch.storage.models import Event, OutboxEntry, Trial, Version


def ingest(db: Database, path: Path, subscriptions: Any = ()) -> RecordOutcome:
    (document,) = read_record_file(path)
    observation = Observation(record=document.record, raw=document.raw,
                              raw_format=document.format, source=f"file:{path}")
    with db.transaction() as session:
        return record_observation(session, observation, subscriptions=subscriptions)


def count(db: Database, model: type) -> int:
    with db.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def stored_versions(db: Database, nct_id: str) -> list[Version]:
    with db.transaction() as session:
        trial = repo.trial(session, nct_id)
        return [] if trial is None else list(repo.versions(session, trial))


class BrokenSubscription(EveryEvent):
    """A subscription that fails while alerts are being enqueued (after version + events)."""

    def matches(self, event: Mapping[str, Any], *, nct_id: str, query_names: set[str]) -> bool:
        raise RuntimeError("subscription exploded")


# --------------------------------------------------------------------------- versions


def test_first_ingest_stores_version_1_without_events(db: Database) -> None:
    outcome = ingest(db, SEED_PAGE)
    assert (outcome.nct_id, outcome.version, outcome.changed) == ("NCT07328581", 1, True)
    assert outcome.events == []
    assert [v.version for v in stored_versions(db, "NCT07328581")] == [1]
    assert count(db, Event) == 0


def test_reingesting_the_same_file_stores_nothing(db: Database) -> None:
    ingest(db, SEED_PAGE)
    outcome = ingest(db, SEED_PAGE)
    assert (outcome.version, outcome.changed, outcome.events) == (1, False, [])
    assert len(stored_versions(db, "NCT07328581")) == 1


def test_text_page_then_api_json_of_same_version_is_version_2_without_events(
        db: Database) -> None:
    ingest(db, SEED_PAGE)
    outcome = ingest(db, fixture_path(SEED_JSON))
    assert (outcome.version, outcome.changed) == (2, True)
    assert outcome.events == []
    assert count(db, Event) == 0
    page, full = stored_versions(db, "NCT07328581")
    assert page.raw_format == "text-page" and full.raw_format == "ctgov-json"


def test_fields_restricted_document_then_full_one_is_no_event(db: Database) -> None:
    assert ingest(db, fixture_path("NCT02576665")).version == 1
    outcome = ingest(db, fixture_path("NCT02576665.full"))
    assert (outcome.version, outcome.events) == (2, [])


def test_text_page_after_api_json_adds_nothing(db: Database) -> None:
    ingest(db, SEED_PAGE)
    ingest(db, fixture_path(SEED_JSON))
    outcome = ingest(db, SEED_PAGE)
    assert (outcome.version, outcome.changed, outcome.events) == (2, False, [])
    assert len(stored_versions(db, "NCT07328581")) == 2


def test_modified_json_is_version_3_with_its_events(db: Database, tmp_path: Path) -> None:
    ingest(db, SEED_PAGE)
    ingest(db, fixture_path(SEED_JSON))
    changed = write(add_criterion(set_status(study(SEED_JSON), "RECRUITING"), "exclusion",
                                  "Known hypersensitivity to tocilizumab"), tmp_path / "v3.json")
    outcome = ingest(db, changed)
    assert (outcome.version, outcome.changed) == (3, True)
    assert [e.kind for e in outcome.events] == ["status", "eligibility"]
    assert {(e.from_version, e.to_version) for e in outcome.events} == {(2, 3)}
    assert all(e.detected_at and e.detected_at.endswith("Z") for e in outcome.events)
    with db.transaction() as session:
        rows = session.scalars(select(Event).order_by(Event.id)).all()
        assert [(r.kind, r.from_version, r.to_version) for r in rows] == [
            ("status", 2, 3), ("eligibility", 2, 3)]


def test_partial_version_between_full_ones_does_not_hide_a_change(
        db: Database, tmp_path: Path) -> None:
    # the text page carries no primary completion date: the change from v1 to v3 must show
    ingest(db, fixture_path(SEED_JSON))
    page = tmp_path / "republished.txt"
    page.write_text(seed_page(last_updated="2026-02-01"), encoding="utf-8")
    assert ingest(db, page).version == 2
    moved = set_date(new_registry_day(study(SEED_JSON), "2026-02-01"),
                     "primaryCompletionDateStruct", "2029-01-31")
    outcome = ingest(db, write(moved, tmp_path / "v3.json"))
    assert outcome.version == 3
    assert [(e.field, e.from_version) for e in outcome.events] == [
        ("dates.primary_completion", 2)]


def test_trial_row_follows_latest_version(db: Database, tmp_path: Path) -> None:
    ingest(db, SEED_PAGE)
    ingest(db, write(set_status(study(SEED_JSON), "RECRUITING"), tmp_path / "v2.json"))
    with db.transaction() as session:
        trial = repo.trial(session, "NCT07328581")
        assert trial is not None
        assert (trial.latest_version, trial.overall_status) == (2, "RECRUITING")
        assert trial.title == "BCMA-CD19 cCAR T for the Treatment of Refractory Lupus"


def test_events_are_enqueued_for_matching_subscriptions(db: Database, tmp_path: Path) -> None:
    ingest(db, fixture_path(SEED_JSON))
    outcome = ingest(db, write(set_status(study(SEED_JSON), "RECRUITING"), tmp_path / "v2.json"),
                     subscriptions=[EveryEvent("team")])
    assert outcome.alerts == 1
    with db.transaction() as session:
        (entry,) = session.scalars(select(OutboxEntry)).all()
        assert (entry.channel, entry.version, entry.status) == ("team", 2, "pending")
        assert entry.event_ids == [session.scalar(select(Event.id))]


# --------------------------------------------------------------------------- one transaction


def test_failure_while_enqueueing_leaves_no_version_event_or_outbox_row(
        db: Database, tmp_path: Path) -> None:
    ingest(db, fixture_path(SEED_JSON))
    changed = write(set_status(study(SEED_JSON), "RECRUITING"), tmp_path / "v2.json")
    with pytest.raises(RuntimeError, match="subscription exploded"):
        ingest(db, changed, subscriptions=[EveryEvent("first"), BrokenSubscription("second")])
    assert [v.version for v in stored_versions(db, "NCT07328581")] == [1]
    assert (count(db, Event), count(db, OutboxEntry)) == (0, 0)
    with db.transaction() as session:
        trial = session.scalars(select(Trial)).one()
        assert (trial.latest_version, trial.overall_status) == (1, "NOT_YET_RECRUITING")
    # and the same document goes through once the failure is gone
    assert ingest(db, changed, subscriptions=[EveryEvent("first")]).version == 2


def test_crash_after_recording_a_new_trial_leaves_no_trial_row(db: Database) -> None:
    (document,) = read_record_file(SEED_PAGE)
    observation = Observation(record=document.record, raw=document.raw,
                              raw_format=document.format, source="file:seed")
    with pytest.raises(RuntimeError, match="crash"), db.transaction() as session:
        assert record_observation(session, observation).version == 1
        raise RuntimeError("crash before commit")
    assert (count(db, Trial), count(db, Version), count(db, Event)) == (0, 0, 0)
