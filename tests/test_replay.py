"""Real daily captures replayed: what ``check`` reports live equals what ingesting them says.

The registry changes some records without moving ``lastUpdatePostDate`` (in these captures:
NCT05294952 and NCT06302556 switched NOT_YET_RECRUITING → UNKNOWN on 2026-03-03, and three
trials got automatically linked DERIVED references). ``check`` must report every change
that ingesting the same captures file by file reports, nothing extra: a status change in the
cycle of the data load that has it, any other within ``ctgov.reverify_every`` (7 days) of
data time. A fast slice runs by default; the whole 36 days are ``slow``.
"""

from __future__ import annotations

import os
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from replay import ARCHIVE, Day, DayResult, extract, load_days, replay, restrict

REVERIFY = timedelta(days=7)
SILENT_STATUS = {"NCT05294952", "NCT06302556"}  # → UNKNOWN, date unchanged, 2026-03-03
SILENT_OTHER = {"NCT05009069"}  # a DERIVED reference linked, date unchanged, 2026-02-28


@pytest.fixture(scope="module")
def days() -> list[Day]:
    if not ARCHIVE.exists():
        reason = f"the replay captures are not here: {ARCHIVE}"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI is set: the replay must run)")
        pytest.skip(reason)
    return load_days()


def key(event: dict[str, Any]) -> tuple[Any, ...]:
    return (event["nct_id"], event["kind"], event["field"], repr(event["old"]),
            repr(event["new"]), event["severity"], event["summary"],
            event["from_version"], event["to_version"])


def reported_on(results: list[DayResult], attr: str) -> dict[tuple[Any, ...], int]:
    """Each event's key and the position of the day it was reported on."""
    seen: dict[tuple[Any, ...], int] = {}
    for position, result in enumerate(results):
        for event in getattr(result, attr):
            seen.setdefault(key(event), position)
    return seen


def assert_live_equals_files(results: list[DayResult]) -> None:
    live = Counter(key(e) for r in results for e in r.check_events)
    files = Counter(key(e) for r in results for e in r.ingest_events)
    assert live - files == Counter(), "check reported changes the captures do not have"
    assert files - live == Counter(), "check missed changes the captures have"
    moments = [r.day.moment for r in results]
    checked, ingested = reported_on(results, "check_events"), reported_on(results, "ingest_events")
    for event, position in ingested.items():
        delay = moments[checked[event]] - moments[position]
        if event[1] == "status":
            assert delay == timedelta(0), f"status change reported late: {event}"
        else:
            assert delay <= REVERIFY, f"change reported after {delay}: {event}"


def run_slice(days: list[Day], tmp_path: Path, trials: set[str] | None, first: int,
              last: int | None) -> list[DayResult]:
    chosen = restrict(days, trials, first=first, last=last)
    extract(chosen, tmp_path / "captures")
    return replay(chosen, tmp_path / "captures", tmp_path / "work",
                  settle_days=REVERIFY.days + 1)


def test_a_week_of_real_captures_reports_live_what_the_files_report(days, tmp_path):
    # 2026-02-26 .. 03-05 (the two silent switches to UNKNOWN, one silent reference), for
    # the silently changed trials and the first 40 others captured every day
    others = sorted(set(days[16].trials) - SILENT_STATUS - SILENT_OTHER)[:40]
    results = run_slice(days, tmp_path, SILENT_STATUS | SILENT_OTHER | set(others), 16, 24)
    assert_live_equals_files(results)
    unknown = {(e["nct_id"], e["new"]) for r in results for e in r.check_events
               if e["field"] == "overall_status"}
    assert {(n, "UNKNOWN") for n in SILENT_STATUS} <= unknown
    references = {e["nct_id"] for r in results for e in r.check_events
                  if e["field"] == "references.references"}
    assert references >= SILENT_OTHER


@pytest.mark.slow
def test_all_36_days_of_real_captures_report_live_what_the_files_report(days, tmp_path):
    results = run_slice(days, tmp_path, None, 0, None)
    assert_live_equals_files(results)
