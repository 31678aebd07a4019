"""Summaries and alert text as a person writes them: registry free text quoted as written,
only the registry's enumerations put into words, numbers with thousands separators."""

from __future__ import annotations

from docmaker import SEED_JSON, add_site, edit, module, record, set_enrollment, set_status, study

from trialwatch.monitor.diff import diff_records
from trialwatch.monitor.events import ChangeEvent
from trialwatch.notifiers.base import Alert
from trialwatch.notifiers.render import render_text

WITH_SITES = "NCT03934567"  # 26 sites


def only_event(old: dict, new: dict) -> ChangeEvent:
    events = diff_records(record(old), record(new))
    assert len(events) == 1, [e.summary for e in events]
    return events[0]


def test_why_stopped_is_quoted_as_written() -> None:
    old = set_status(study(SEED_JSON), "RECRUITING")
    new = edit(set_status(study(SEED_JSON), "RECRUITING"),
               lambda d: module(d, "statusModule").__setitem__("whyStopped", "FDA"))
    assert only_event(old, new).summary == "Why stopped: (none) → FDA"


def test_acronym_is_quoted_as_written() -> None:
    new = edit(study(SEED_JSON),
               lambda d: module(d, "identificationModule").__setitem__("acronym", "GLIOMAX-101"))
    assert only_event(study(SEED_JSON), new).summary.endswith("→ GLIOMAX-101")


def test_zip_code_of_a_site_is_quoted_as_written() -> None:
    old = add_site(study(WITH_SITES), "Hospital Italiano", "Rosario", "Argentina", zip="S2000")
    new = add_site(study(WITH_SITES), "Hospital Italiano", "Rosario", "Argentina",
                   zip="S2000CVB")
    assert only_event(old, new).summary.endswith("zip S2000 → S2000CVB")


def test_enumerations_are_still_put_into_words() -> None:
    event = only_event(study(SEED_JSON), set_status(study(SEED_JSON), "ACTIVE_NOT_RECRUITING"))
    assert event.summary == "Recruitment status: Not yet recruiting → Active not recruiting"


def test_title_change_says_what_it_changed_to() -> None:
    title = ("A Phase 2 Study of an Autologous CD19-directed CAR-T Cell Therapy in Adults With "
             "Refractory Systemic Lupus Erythematosus and Lupus Nephritis (Extended Follow-up)")
    new = edit(study(SEED_JSON),
               lambda d: module(d, "identificationModule").__setitem__("officialTitle", title))
    summary = only_event(study(SEED_JSON), new).summary
    assert summary.startswith("Official title changed to: A Phase 2 Study of an Autologous")
    assert summary.endswith("…") and len(summary) < 140


def test_enrollment_reads_with_thousands_separators() -> None:
    old = set_enrollment(study(SEED_JSON), 1210, "ESTIMATED")
    new = set_enrollment(study(SEED_JSON), 1300, "ESTIMATED")
    assert only_event(old, new).summary == "Enrollment: 1,210 → 1,300 (estimated)"


def alert_of(events: list[dict]) -> Alert:
    return Alert(id="msg_1", channel="c", nct_id="NCT07328581", title="T", version=2,
                 events=events)


def test_alert_does_not_repeat_raw_values_the_summary_already_says() -> None:
    old = set_enrollment(study(SEED_JSON), 1210, "ESTIMATED")
    new = set_enrollment(study(SEED_JSON), 1300, "ESTIMATED")
    event = only_event(old, new).to_json()
    text = render_text(alert_of([event]))
    assert "Enrollment: 1,210 → 1,300 (estimated)" in text
    assert "count:" not in text and "ESTIMATED" not in text


def test_alert_of_a_new_query_match_names_the_query_in_words() -> None:
    event = {"kind": "new_trial", "field": "query", "old": None, "new": "lymphoma",
             "severity": "medium", "summary": 'New trial matching "lymphoma": T'}
    text = render_text(alert_of([event]))
    assert 'New trial matching "lymphoma"' in text
    assert "(none) → lymphoma" not in text
