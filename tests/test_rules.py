"""Threshold rules: events carry ``days`` / ``percent``; subscriptions filter alerts on them.

Rules filter alerts only: the events below the threshold are still stored and shown.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from docmaker import (
    SEED_JSON,
    module,
    new_registry_day,
    record,
    set_date,
    set_enrollment,
    set_status,
    study,
    write,
)
from receivers import WebhookReceiver

from trialwatch.monitor.cli import cli
from trialwatch.monitor.config.settings import ConfigError, parse_config
from trialwatch.monitor.config.subscriptions import Subscription
from trialwatch.monitor.diff import diff_records
from trialwatch.monitor.events import measures


def test_a_dates_event_carries_the_shift_in_days():
    old = set_date(study(SEED_JSON), "primaryCompletionDateStruct", "2028-06-30")
    new = set_date(study(SEED_JSON), "primaryCompletionDateStruct", "2028-12-31")
    (event,) = [e.to_json() for e in diff_records(record(old), record(new))
                if e.field == "dates.primary_completion"]
    assert event["days"] == 184


def test_days_is_null_when_either_side_has_no_date_and_months_count_from_the_first():
    assert measures("dates", None, {"date": "2028-06-30"}) == {"days": None}
    assert measures("dates", {"date": "2028-06"}, {"date": "2028-07-01"}) == {"days": 30}


def test_an_enrollment_event_carries_the_change_in_percent():
    old = set_enrollment(study(SEED_JSON), 40, "ESTIMATED")
    new = set_enrollment(study(SEED_JSON), 50, "ESTIMATED")
    (event,) = [e.to_json() for e in diff_records(record(old), record(new))
                if e.kind == "enrollment"]
    assert event["percent"] == 25.0


def test_percent_is_null_when_the_old_enrollment_is_zero_or_missing():
    assert measures("enrollment", {"count": 0}, {"count": 5}) == {"percent": None}
    assert measures("enrollment", None, {"count": 5}) == {"percent": None}
    assert measures("status", "A", "B") == {}


def _dates_event(days_old: str, days_new: str) -> dict:
    return {"kind": "dates", "field": "dates.completion", "severity": "medium",
            "old": {"date": days_old}, "new": {"date": days_new}}


def test_min_date_shift_drops_small_slips_and_keeps_large_ones_either_way():
    rule = Subscription(channel="c", kinds=("dates",), min_date_shift="90d")
    small = _dates_event("2028-01-01", "2028-02-01")
    large_later = _dates_event("2028-01-01", "2028-06-01")
    large_earlier = _dates_event("2028-06-01", "2028-01-01")
    added = {"kind": "dates", "field": "dates.completion", "severity": "medium", "old": None,
             "new": {"date": "2028-01-01"}}
    verdicts = [rule.matches(e, nct_id="NCT00000001", query_names=set())
                for e in (small, large_later, large_earlier, added)]
    assert verdicts == [False, True, True, True]


def test_min_enrollment_change_compares_the_absolute_percentage():
    rule = Subscription(channel="c", kinds=("enrollment",), min_enrollment_change="20%")
    def event(old: int, new: int) -> dict:
        return {"kind": "enrollment", "field": "design.enrollment", "severity": "medium",
                "old": {"count": old}, "new": {"count": new}}
    assert [rule.matches(event(100, n), nct_id="N", query_names=set())
            for n in (110, 120, 75, 100)] == [False, True, True, False]


def test_statuses_keeps_only_status_events_whose_new_value_is_listed():
    rule = Subscription(channel="c", statuses=["terminated", "SUSPENDED"])
    def event(new: str) -> dict:
        return {"kind": "status", "field": "overall_status", "severity": "high",
                "old": "RECRUITING", "new": new}
    assert [rule.matches(event(s), nct_id="N", query_names=set())
            for s in ("TERMINATED", "COMPLETED", "SUSPENDED")] == [True, False, True]


@pytest.mark.parametrize(("key", "value", "message"), [
    ("min_date_shift", '"ninety days"', "invalid duration"),
    ("min_enrollment_change", '"a lot"', "invalid percentage"),
    ("digest", '"monthly-ish"', "invalid duration"),
    ("digest_at", '"8am"', "invalid time of day"),
])
def test_a_bad_rule_is_one_error_naming_the_key(key, value, message):
    import tomllib
    data = tomllib.loads(f'[channels.c]\ntype = "console"\n[[subscriptions]]\nchannel = "c"\n'
                         f"{key} = {value}\n")
    with pytest.raises(ConfigError) as err:
        parse_config(data, env={})
    assert f"subscriptions[0].{key}" in str(err.value) and message in str(err.value)


def test_events_below_the_threshold_are_stored_but_not_sent(tmp_path: Path,
                                                             hook: WebhookReceiver):
    config = tmp_path / "trialwatch.toml"
    config.write_text(textwrap.dedent(f"""
        [database]
        url = "sqlite:///{tmp_path / 'tw.db'}"
        [channels.hook]
        type = "webhook"
        url = "{hook.url}"
        [[subscriptions]]
        channel = "hook"
        kinds = ["status", "dates"]
        min_date_shift = "90d"
        statuses = ["TERMINATED"]
        """))
    base = study(SEED_JSON)
    small = new_registry_day(set_status(set_date(study(SEED_JSON), "completionDateStruct",
                                                 "2029-01-15"), "RECRUITING"), "2026-02-01")
    paths = [write(base, tmp_path / "v1.json"), write(small, tmp_path / "v2.json")]
    shift = set_date(study(SEED_JSON), "completionDateStruct", "2029-01-15")
    module(shift, "statusModule")["completionDateStruct"]["date"] = "2031-01-15"
    big = new_registry_day(set_status(shift, "TERMINATED"), "2026-03-01")
    paths.append(write(big, tmp_path / "v3.json"))
    runner = CliRunner()
    for path in paths:
        result = runner.invoke(cli, ["--config", str(config), "ingest", str(path)])
        assert result.exit_code == 0, result.output
    history = runner.invoke(cli, ["--config", str(config), "history", "NCT07328581", "--json"])
    stored = {(e["to_version"], e["kind"]) for e in json.loads(history.output)["events"]}
    assert {(2, "status"), (2, "dates"), (3, "status"), (3, "dates")} <= stored
    sent = [r.json() for r in hook.requests]
    assert [p["version"] for p in sent] == [3]
    assert sorted(e["kind"] for e in sent[0]["events"]) == ["dates", "status"]
    # 2029-01-15 → 2031-01-15
    assert [e["days"] for e in sent[0]["events"] if e["kind"] == "dates"] == [730]
