"""A filled SQLite database for the command-line benchmarks (``bench.oneshot``,
``bench.export_memory``), built through trialwatch's own recording path.

Every trial is the seed trial's real API document (``tests/fixtures/ctgov/constructed``)
under its own NCT ID, stored twice: as registered, then recruiting with a new enrollment
and one more exclusion criterion, so each trial has two versions and the events between
them, exactly as ``check`` or ``ingest`` would have stored them.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import cycle, islice
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import insert, select

from trialwatch.monitor.sources.ctgov.parser import parse_study
from trialwatch.monitor.versioning import Observation, record_observation
from trialwatch.storage.engine import Database, open_database
from trialwatch.storage.models import Event
from trialwatch.storage.schema import ensure_schema

ROOT = Path(__file__).resolve().parents[1]
SEED_JSON = ROOT / "tests" / "fixtures" / "ctgov" / "constructed" / "NCT07328581.json"
PER_TRANSACTION = 500


def nct(number: int) -> str:
    return f"NCT{90_000_000 + number:08d}"


def _documents(number: int, base: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    first = copy.deepcopy(base)
    protocol = first["protocolSection"]
    protocol["identificationModule"]["nctId"] = nct(number)
    protocol["identificationModule"]["briefTitle"] += f" (bench {number})"
    second = copy.deepcopy(first)
    status = second["protocolSection"]["statusModule"]
    status["overallStatus"] = "RECRUITING"
    status["lastUpdatePostDateStruct"] = {"date": "2026-02-01", "type": "ACTUAL"}
    second["protocolSection"]["designModule"]["enrollmentInfo"] = {"count": 24 + number % 7,
                                                                   "type": "ACTUAL"}
    eligibility = second["protocolSection"]["eligibilityModule"]
    eligibility["eligibilityCriteria"] += f"\n* Prior therapy number {number} within 4 weeks"
    return first, second


def build(path: Path, trials: int) -> str:
    """``trials`` trials of two versions each in a new SQLite file at ``path``; its URL."""
    url = f"sqlite:///{path}"
    db = open_database(url)
    ensure_schema(db)
    base = orjson.loads(SEED_JSON.read_bytes())
    start = datetime(2026, 1, 1, tzinfo=UTC)
    try:
        for step, moment in enumerate((start, start + timedelta(days=31))):
            for first in range(0, trials, PER_TRANSACTION):
                with db.transaction() as session:
                    for number in range(first, min(first + PER_TRANSACTION, trials)):
                        document = _documents(number, base)[step]
                        raw = orjson.dumps(document)
                        record_observation(session, Observation(
                            record=parse_study(document), raw=raw, raw_format="ctgov-json",
                            source="bench", fetched_at=moment))
    finally:
        db.close()
    return url


def add_events(db: Database, total: int) -> int:
    """Copies of the stored events (values, summaries, trials) until there are ``total``."""
    with db.transaction() as session:
        stored = [dict(row._mapping) for row in session.execute(
            select(Event.trial_id, Event.from_version, Event.to_version, Event.kind,
                   Event.field, Event.old, Event.new, Event.severity, Event.summary,
                   Event.detected_at, Event.historical))]
    missing = total - len(stored)
    rows: Iterator[dict[str, Any]] = islice(cycle(stored), max(missing, 0))
    while batch := list(islice(rows, 5000)):
        with db.transaction() as session:
            session.execute(insert(Event), batch)
    return max(missing, 0)


def main() -> None:
    """``python -m bench.cli_db PATH --trials N [--events M]``: build (if missing), then grow
    the events to M; run as its own process so a measuring parent stays small."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("path", type=Path)
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--events", type=int, default=0)
    args = parser.parse_args()
    url = f"sqlite:///{args.path}" if args.path.exists() else build(args.path, args.trials)
    if args.events:
        db = open_database(url)
        try:
            add_events(db, args.events)
        finally:
            db.close()  # checkpointed: readers find the rows in the database, not a long WAL


if __name__ == "__main__":
    main()
